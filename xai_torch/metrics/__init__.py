"""Metrics: is an explanation faithful, robust, sane, well localised?

See :mod:`xai_torch.metrics._common` for the arguments every metric shares.
"""
from ..imageops import rise_blur
from ._common import REDUCTIONS, SCORES, Scorer, coerce_attribution, descending_order, reduce_channels
from .cam_metrics import ArccResult, ConfidenceChange, arcc, average_drop, confidence_change, increase_in_confidence
from .complexity import complexity, effective_complexity, sparseness
from .data_randomization import DataRandomizationResult, data_randomization
from .faithfulness import CausalCurve, Completeness, causal_auc, completeness, deletion, insertion
from .faithfulness_correlation import (
    FaithfulnessCorrelationResult,
    MonotonicityCorrelationResult,
    faithfulness_correlation,
    monotonicity_nguyen,
)
from .faithfulness_irof import IrofResult, irof
from .faithfulness_sufficiency import SufficiencyResult, sufficiency
from .flipping import (
    FlippingResult,
    MonotonicityResult,
    RegionPerturbationResult,
    monotonicity_arya,
    pixel_flipping,
    region_perturbation,
)
from .fragility import FragilityResult, fragility
from .infidelity import InfidelityResult, infidelity
from .invariance import InvarianceResult, input_invariance
from .localisation import Localisation, PointingGame, pointing_game, relevance_mass, relevance_rank
from .localisation_scores import Mosaics, auc, focus, make_mosaics, top_k_intersection
from .pic import pic
from .pic_curve import PicAggregate, PicResult, aggregate
from .pic_images import generate_random_mask
from .random_logit import RandomLogitResult, random_logit
from .reliability import Estimate, ReliabilityResult, cronbach_alpha, krippendorff_alpha, reliability
from .road import RoadResult, noisy_linear_impute, road
from .robustness import (
    RelativeStability,
    local_lipschitz_estimate,
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
)
from .sanity import RandomizationResult, model_randomization
from .sensitivity import SensitivityResult, max_sensitivity
from .sensitivity_n import SensitivityNResult, sensitivity_n
from .similarity import SIMILARITIES, hog_similarity, pearson, spearman, ssim
from .stability import SamplesNeeded, StabilityResult, StabilityScores, samples_needed, stability

__all__ = [
    "REDUCTIONS", "SCORES", "Scorer", "coerce_attribution", "descending_order", "reduce_channels",
    "CausalCurve", "Completeness", "causal_auc", "completeness", "deletion", "insertion", "rise_blur",
    "FaithfulnessCorrelationResult", "FlippingResult", "IrofResult", "MonotonicityCorrelationResult",
    "MonotonicityResult", "RegionPerturbationResult", "SufficiencyResult", "faithfulness_correlation", "irof",
    "monotonicity_arya", "monotonicity_nguyen", "pixel_flipping", "region_perturbation", "sufficiency",
    "Localisation", "PointingGame", "pointing_game", "relevance_mass", "relevance_rank",
    "SIMILARITIES", "RandomizationResult", "hog_similarity", "model_randomization", "pearson", "spearman", "ssim",
    "PicAggregate", "PicResult", "aggregate", "generate_random_mask", "pic",
    "RoadResult", "noisy_linear_impute", "road",
    "ArccResult", "ConfidenceChange", "arcc", "average_drop", "confidence_change", "increase_in_confidence",
    "complexity", "effective_complexity", "sparseness",
    "Mosaics", "auc", "focus", "make_mosaics", "top_k_intersection",
    "RandomLogitResult", "RelativeStability", "local_lipschitz_estimate", "random_logit",
    "relative_input_stability", "relative_output_stability", "relative_representation_stability",
    "InfidelityResult", "SensitivityNResult", "SensitivityResult", "infidelity", "max_sensitivity", "sensitivity_n",
    "DataRandomizationResult", "FragilityResult", "InvarianceResult", "data_randomization", "fragility",
    "input_invariance",
    "SamplesNeeded", "StabilityResult", "StabilityScores", "samples_needed", "stability",
    "Estimate", "ReliabilityResult", "cronbach_alpha", "krippendorff_alpha", "reliability",
]
