"""The IG family on one batched path-integration engine.

* :mod:`~xai_torch.path.quadrature`: ``(alphas, weights)`` rules on ``[0, 1]``.
* :mod:`~xai_torch.space`: where paths start (black, white, noise, blur, ...).
* :mod:`~xai_torch.path.engine`: float64 accumulation of chunked gradients on the model runner.
* :mod:`~xai_torch.path.line`: straight-line paths (IG's fixed and adaptive rules).
* explainers: :class:`IntegratedGradients` (with an adaptive rule), :class:`BlurIG`,
  :class:`GuidedIG`, :class:`ExpectedGradients`, :class:`LayerConductance`.
* :mod:`~xai_torch.path.layer`: IG and Expected Gradients in a layer's space (``layer=``).
"""
from ..imageops import gaussian_blur
from ..space import Baseline, make_baselines, value_range
from .base import PathExplainer, PathExplanation
from .blur_ig import BlurIG, blur_sigmas
from .conductance import LayerConductance
from .expected import ExpectedGradients
from .guided_ig import GuidedIG, guided_ig_path
from .ig import IntegratedGradients
from .quadrature import (
    captum_trapezoid,
    gauss_legendre,
    get_rule,
    riemann_left,
    riemann_middle,
    riemann_right,
    riemann_trapezoid,
)

__all__ = [
    "Baseline",
    "BlurIG",
    "ExpectedGradients",
    "GuidedIG",
    "IntegratedGradients",
    "LayerConductance",
    "PathExplainer",
    "PathExplanation",
    "captum_trapezoid",
    "gauss_legendre",
    "blur_sigmas",
    "gaussian_blur",
    "guided_ig_path",
    "make_baselines",
    "get_rule",
    "riemann_left",
    "riemann_middle",
    "riemann_right",
    "riemann_trapezoid",
    "value_range",
]
