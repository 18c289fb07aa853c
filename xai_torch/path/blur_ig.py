"""Blur IG (Xu et al. 2020): integrated gradients along a path of ever stronger blurs."""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, check_positive_int, describe
from ..explainer import Explainer
from ..imageops import gaussian_blur
from ..runner import ModelRunner
from .base import PathExplainer, Paths
from .engine import PathSamples, integrate
from .layer import Layer

_F64 = torch.float64


def blur_sigmas(steps: int, max_sigma: float, sqrt: Union[bool, str] = False) -> torch.Tensor:
    """The ``steps + 1`` blur levels of the path, from 0 to the strongest blur.

    ``sqrt=False``: ``max_sigma * i / steps``; ``sqrt=True``: ``max_sigma * sqrt(i / steps)``
    (more levels at weak blur, ending at ``max_sigma``); ``sqrt="pair"``: PAIR's
    ``sqrt(i * max_sigma / steps)``, which ends at ``sqrt(max_sigma)``.
    """
    i = torch.arange(steps + 1, dtype=_F64)
    if sqrt == "pair":
        return torch.sqrt(i * max_sigma / steps)
    if sqrt:
        return max_sigma * torch.sqrt(i / steps)
    return i * max_sigma / steps


class BlurIG(PathExplainer):
    """Blur Integrated Gradients (Xu et al. 2020), PAIR's algorithm batched on the model's device.

    The path goes from ``x`` blurred with ``max_sigma`` to ``x`` itself; no baseline is
    needed. With ``L(x, s)`` the Gaussian blur of the spatial axes (zero padding, truncated
    at 4 s, as ``scipy.ndimage.gaussian_filter(mode="constant")``)::

        A = -sum_i (s_{i+1} - s_i) * (L(x, s_i + grad_step) - L(x, s_i)) / grad_step * dF/dx(L(x, s_i))

    so that ``sum(A) ~ F(x) - F(L(x, max_sigma))``. Blurs and the finite difference are
    computed in float64 (the float32 difference loses about four digits to cancellation).

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        steps: blur levels (model evaluations per image).
        max_sigma: the strongest blur, in pixels.
        grad_step: the sigma step of the finite difference ``dL/dsigma``.
        sqrt: space the levels by a square root (``True``: ending at ``max_sigma``;
            ``"pair"``: PAIR's spacing, ending at ``sqrt(max_sigma)``).

    Returns:
        ``(B, C, H, W)`` signed attributions; ``explain`` gives a
        :class:`~xai_torch.path.PathExplanation` whose ``alphas`` are the blur sigmas and
        whose ``baseline_scores`` are ``F(L(x, max_sigma))``.

    Cost:
        ``steps`` forward + backward passes per image (batched), ``2 * steps`` blurs, plus
        two forwards.

    Example:
        >>> attr = xt.BlurIG(model, steps=100, max_sigma=50)(x)
    """

    call_keywords: tuple[str, ...] = ()

    def __init__(self, model: Any, *, steps: int = 100, max_sigma: float = 50.0, grad_step: float = 0.01,
                 sqrt: Union[bool, str] = False, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.steps = check_positive_int(steps, "steps")
        for name, value in (("max_sigma", max_sigma), ("grad_step", grad_step)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise XaiError(f"{name} must be a positive number; got {describe(value)}.")
        if sqrt not in (False, True, "pair"):
            raise XaiError(f"sqrt must be False, True or 'pair'; got {sqrt!r}.")
        self.max_sigma, self.grad_step, self.sqrt = float(max_sigma), float(grad_step), sqrt

    def _config(self) -> dict[str, Any]:
        cfg = {"steps": self.steps, "max_sigma": self.max_sigma, "grad_step": self.grad_step, "sqrt": self.sqrt}
        return {**cfg, **Explainer._config(self)}

    def _prepare(self, x: torch.Tensor, baseline: Any, generator: Optional[torch.Generator]) -> None:
        return None  # the path starts at the blurred image: no baseline

    def _paths(self, runner: ModelRunner, x: torch.Tensor, k: int, prepared: Any,
               generator: Optional[torch.Generator], details: bool, layer: Optional[Layer] = None) -> Paths:
        steps, dev = self.steps, x.device
        r_count = x.shape[0] * k
        sigmas = blur_sigmas(steps, self.max_sigma, self.sqrt).to(dev)
        dsig = sigmas[1:] - sigmas[:-1]

        def points(start: int, stop: int) -> PathSamples:
            n = torch.arange(start, stop, device=dev)
            r, s = n // steps, n % steps
            x64 = x[r // k].to(_F64)
            z = gaussian_blur(x64, sigmas[s])
            d = (gaussian_blur(x64, sigmas[s] + self.grad_step) - z) / self.grad_step
            return PathSamples(z.to(x.dtype), r, r, -dsig[s], d)

        run = integrate(runner, points, r_count * steps, r_count, tuple(x.shape[1:]))

        def ends(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            r = torch.arange(start, stop, device=dev)
            return gaussian_blur(x[r // k].to(_F64), self.max_sigma).to(x.dtype), r

        fb = runner.scores(ends, r_count).scores.view(r_count, 1) if details else None
        view = (r_count, 1, steps)
        probs = None if run.probs is None else run.probs.view(view)
        return Paths(run.acc, fb, sigmas[:-1], run.scores.view(view), probs, run.grad_abs.view(view))
