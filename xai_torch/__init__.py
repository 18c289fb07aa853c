"""xai_torch: explain PyTorch image classifiers, batched, on the model's device, without a trace.

Example:
    >>> import xai_torch as xt
    >>> with xt.GuidedBackprop(model) as gbp:
    ...     attr = gbp(x, target=[3, 7])          # (B, C, H, W), signed
    >>> res = xt.Gradient(model).explain(x)       # res.attributions, res.targets, res.scores
"""
from . import dataset, metrics, path, perturbation, region, segmentation, threads, viz, zoo
from .adapters import ModelAdapter, adapt
from .attention import (
    AttentionExplanation,
    AttentionGradRollout,
    AttentionRollout,
    LeGrad,
    TransformerAttribution,
    capture_attention,
)
from .backprop import BackpropExplanation, Deconvnet, GuidedBackprop
from .cam import (
    CAM,
    AblationCAM,
    CAMExplanation,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
    swin_reshape,
    tokens_to_grid,
    vit_reshape,
)
from .errors import XaiError, XaiWarning
from .explainer import Explainer, Explanation
from .gradient import Gradient, InputXGradient
from .hooks import HookSession, capture
from .layers import find_layer, find_layers
from .neuron import NeuronTarget
from .path import (
    Baseline,
    BlurIG,
    ExpectedGradients,
    GuidedIG,
    IntegratedGradients,
    LayerConductance,
    PathExplanation,
)
from .perturbation import RISE, Occlusion, OcclusionExplanation, PerturbationExplanation
from .region import (
    LIME,
    XRAI,
    KernelSHAP,
    KernelSHAPExplanation,
    LIMEExplanation,
    PartitionSHAP,
    PartitionSHAPExplanation,
    XRAIExplanation,
)
from .relevance import LRP, DeepLift, DeepLiftExplanation, DeepLiftShap, LRPExplanation
from .smoothgrad import SmoothGrad, SmoothGradExplanation
from .targets import ClassTarget, Target, TopK, as_target
from .task_targets import BoxTarget, SegmentationTarget

__version__ = "0.1.0"

__all__ = [
    "AttentionExplanation",
    "AttentionGradRollout",
    "AttentionRollout",
    "LeGrad",
    "TransformerAttribution",
    "capture_attention",
    "CAM",
    "AblationCAM",
    "CAMExplanation",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "swin_reshape",
    "tokens_to_grid",
    "vit_reshape",
    "BoxTarget",
    "SegmentationTarget",
    "BackpropExplanation",
    "ClassTarget",
    "Deconvnet",
    "Explainer",
    "Explanation",
    "Gradient",
    "GuidedBackprop",
    "HookSession",
    "capture",
    "InputXGradient",
    "Target",
    "TopK",
    "XaiError",
    "XaiWarning",
    "as_target",
    "find_layer",
    "find_layers",
    "ModelAdapter",
    "adapt",
    "NeuronTarget",
    "dataset",
    "metrics",
    "path",
    "Baseline",
    "BlurIG",
    "ExpectedGradients",
    "GuidedIG",
    "IntegratedGradients",
    "LayerConductance",
    "PathExplanation",
    "KernelSHAP",
    "KernelSHAPExplanation",
    "LIME",
    "LIMEExplanation",
    "PartitionSHAP",
    "PartitionSHAPExplanation",
    "Occlusion",
    "OcclusionExplanation",
    "PerturbationExplanation",
    "perturbation",
    "RISE",
    "XRAI",
    "XRAIExplanation",
    "region",
    "DeepLift",
    "DeepLiftExplanation",
    "DeepLiftShap",
    "LRP",
    "LRPExplanation",
    "segmentation",
    "SmoothGrad",
    "SmoothGradExplanation",
    "threads",
    "viz",
    "zoo",
]
