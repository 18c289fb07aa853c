"""The IG family on one batched path-integration engine.

* :mod:`~xai_torch.path.quadrature`: ``(alphas, weights)`` rules on ``[0, 1]``.
* :mod:`~xai_torch.path.baselines`: where paths start (black, white, noise, blur, ...).
* :mod:`~xai_torch.path.engine`: chunked evaluation and float64 accumulation.
* explainers: :class:`IntegratedGradients` (with an adaptive rule), :class:`BlurIG`,
  :class:`GuidedIG`, :class:`ExpectedGradients`.
"""
from .base import PathExplainer, PathExplanation
from ..space import Baseline, make_baselines, value_range
from .blur import gaussian_blur
from .blur_ig import BlurIG, blur_sigmas
from .guided_ig import GuidedIG, guided_ig_path
from .ig import ExpectedGradients, IntegratedGradients
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
