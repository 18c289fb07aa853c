"""Metrics: is an explanation faithful, robust, sane, well localised?

See :mod:`xai_torch.metrics._common` for the arguments every metric shares.
"""
from ._common import REDUCTIONS, SCORES, Scorer, coerce_attribution, descending_order, reduce_channels
from .faithfulness import CausalCurve, Completeness, causal_auc, completeness, deletion, insertion, rise_blur
from .localisation import Localisation, PointingGame, pointing_game, relevance_mass, relevance_rank
from .pic import PicAggregate, PicResult, aggregate, generate_random_mask, pic
from .road import RoadResult, noisy_linear_impute, road
from .robustness import (
    InfidelityResult,
    SensitivityNResult,
    SensitivityResult,
    infidelity,
    max_sensitivity,
    sensitivity_n,
)
from .sanity import SIMILARITIES, RandomizationResult, hog_similarity, model_randomization, pearson, spearman, ssim

__all__ = [
    "REDUCTIONS", "SCORES", "Scorer", "coerce_attribution", "descending_order", "reduce_channels",
    "CausalCurve", "Completeness", "causal_auc", "completeness", "deletion", "insertion", "rise_blur",
    "Localisation", "PointingGame", "pointing_game", "relevance_mass", "relevance_rank",
    "SIMILARITIES", "RandomizationResult", "hog_similarity", "model_randomization", "pearson", "spearman", "ssim",
    "PicAggregate", "PicResult", "aggregate", "generate_random_mask", "pic",
    "RoadResult", "noisy_linear_impute", "road",
    "InfidelityResult", "SensitivityNResult", "SensitivityResult", "infidelity", "max_sensitivity", "sensitivity_n",
]
