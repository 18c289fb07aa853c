"""Region methods: :class:`XRAI`, :class:`LIME` and :class:`KernelSHAP`.

Shared pieces (hidden values, batched perturbations, painting weights) live in
:mod:`xai_torch.region.superpixel`.
"""
from ..imageops import top_fraction
from .kernel_shap import KernelSHAP, KernelSHAPExplanation, constrained_wls, shapley_coalitions, shapley_kernel
from .lime import LIME, LIMEExplanation, exp_kernel_similarity, weighted_lasso, weighted_ridge
from .partition import PartitionSHAP, PartitionSHAPExplanation
from .superpixel import SuperpixelExplainer, SuperpixelExplanation
from .xrai import XRAI, XRAIExplanation, rank_fast, rank_full

__all__ = [
    "KernelSHAP",
    "KernelSHAPExplanation",
    "LIME",
    "LIMEExplanation",
    "PartitionSHAP",
    "PartitionSHAPExplanation",
    "SuperpixelExplainer",
    "SuperpixelExplanation",
    "XRAI",
    "XRAIExplanation",
    "constrained_wls",
    "exp_kernel_similarity",
    "rank_fast",
    "rank_full",
    "shapley_coalitions",
    "shapley_kernel",
    "top_fraction",
    "weighted_lasso",
    "weighted_ridge",
]
