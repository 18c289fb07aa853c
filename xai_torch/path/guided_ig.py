"""Guided IG (Kapishnikov et al. 2021): a path that moves the least important features first."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional

import torch

from ..errors import XaiError, check_positive_int, describe
from ..explainer import Explainer
from ..runner import ModelRunner
from .base import PathExplainer, Paths
from .layer import Layer

_F64 = torch.float64

#: inner iterations allowed per step (the reference loops until an exact float test passes,
#: which can fail forever in float32; in float64 a step needs a handful).
MAX_INNER = 100
#: a step ends when the L1 distance to x is within this fraction of the total L1 distance.
TOLERANCE = 1e-9


class GuidedIG(PathExplainer):
    """Guided Integrated Gradients (Kapishnikov et al. 2021), batched across images.

    At every step the features with the smallest ``|dF/dx|`` (a ``fraction`` of them) move
    towards ``x`` until the path has covered ``1/steps`` more of the L1 distance from the
    baseline; no feature may stray more than ``max_dist`` (as a fraction of the path) from
    the straight line. ``max_dist=0`` is straight-line IG, ``max_dist=1`` unbounded Guided
    IG. The path bookkeeping is float64 with a tolerance relative to the total L1 distance
    and a cap of ``MAX_INNER`` inner iterations per step (PAIR's float test can loop forever).

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        steps: steps along the path (sequential model evaluations).
        fraction: share of the features selected per inner iteration.
        max_dist: how far, as a fraction of the path, a feature may deviate from the straight
            line.
        normalize, input_range: see :mod:`xai_torch.path.base` (for ``"black"``...).

    Call arguments:
        baseline: as for :class:`~xai_torch.path.IntegratedGradients` (default ``"black"``;
            PAIR's default is a zero tensor).

    Returns:
        ``(B, C, H, W)`` signed attributions whose sum approximates ``F(x) - F(baseline)``.

    Cost:
        ``steps`` forward + backward passes per image and baseline; the steps are sequential
        (the path depends on the gradients), the images and baselines are batched.

    Example:
        >>> attr = xt.GuidedIG(model, steps=200, normalize=xt.zoo.NORMALIZE)(x, baseline="black")
    """

    def __init__(self, model: Any, *, steps: int = 200, fraction: float = 0.25, max_dist: float = 0.02,
                 normalize: Any = None, input_range: Any = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, normalize=normalize, input_range=input_range, batch_size=batch_size,
                         progress=progress)
        self.steps = check_positive_int(steps, "steps")
        for name, value in (("fraction", fraction), ("max_dist", max_dist)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1 \
                    or math.isnan(value):
                raise XaiError(f"{name} must be a number in [0, 1]; got {describe(value)}.")
        self.fraction, self.max_dist = float(fraction), float(max_dist)

    def _config(self) -> dict[str, Any]:
        cfg = {"steps": self.steps, "fraction": self.fraction, "max_dist": self.max_dist}
        base = Explainer._config(self)  # batch_size, progress, select_output / precision when set (no seed)
        return {**cfg, "normalize": self.normalize, "input_range": self.input_range, **base}

    def _paths(self, runner: ModelRunner, x: torch.Tensor, k: int, prepared: Any,
               generator: Optional[torch.Generator], details: bool, layer: Optional[Layer] = None) -> Paths:
        base = prepared
        j_count, b_count = base.shape[:2]
        r_count, dev = b_count * k, x.device
        n_paths, shape = r_count * j_count, x.shape[1:]
        path = torch.arange(n_paths, device=dev)
        rows, img, bsel = path // j_count, (path // j_count) // k, path % j_count
        target = x[img].flatten(1).to(_F64)
        start = base[bsel, img].flatten(1).to(_F64)
        steps = self.steps
        scores: list[torch.Tensor] = []
        grad_abs: list[torch.Tensor] = []

        def grad(z: torch.Tensor) -> torch.Tensor:
            g, s = runner.gradients(z.view(-1, *shape).to(x.dtype), rows)
            scores.append(s)
            grad_abs.append(g.abs().flatten(1).mean(1))
            return g.flatten(1)

        attr = guided_ig_path(target, start, grad, steps=steps, fraction=self.fraction, max_dist=self.max_dist)
        attr = attr.view(r_count, j_count, *shape).mean(1)
        curve = torch.stack(scores, -1).view(r_count, j_count, steps)
        grads = torch.stack(grad_abs, -1).view(r_count, j_count, steps)
        alphas = torch.arange(steps, dtype=_F64, device=dev) / steps
        return Paths(attr, curve[..., 0], alphas, curve, None, grads)


def guided_ig_path(x_in: torch.Tensor, x_base: torch.Tensor, grad_fn: Callable[[torch.Tensor], torch.Tensor], *,
                   steps: int = 200, fraction: float = 0.25, max_dist: float = 0.02) -> torch.Tensor:
    """The Guided IG path integral for ``P`` paths at once (pure tensor code).

    Args:
        x_in, x_base: ``(P, D)`` float64 path ends (the inputs and their baselines).
        grad_fn: ``(P, D) float64 points -> (P, D)`` gradients of each path's target.

    Returns:
        ``(P, D)`` float64 attributions.
    """
    x = x_base.clone()
    diff = x_in - x_base
    l1_total = diff.abs().sum(1)
    attr = torch.zeros_like(x_in)
    tol = TOLERANCE * l1_total.clamp_min(1.0)
    moving = diff != 0
    safe_diff = torch.where(moving, diff, torch.ones_like(diff))
    k = int(math.floor(fraction * (x.shape[1] - 1))) + 1  # numpy's quantile(method="lower")
    inf = torch.tensor(math.inf, dtype=_F64, device=x.device)
    for step in range(steps):
        g = grad_fn(x).to(_F64)
        alpha = (step + 1) / steps
        a_min, a_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min, x_max = x_base + a_min * diff, x_base + a_max * diff
        l1_target = l1_total * (1 - (step + 1) / steps)
        active = l1_total > 0
        for _ in range(MAX_INNER):
            if not bool(active.any()):
                break
            act = active[:, None]
            x_old = x
            x_alpha = torch.where(moving, (x - x_base) / safe_diff, torch.full_like(x, a_max))
            x = torch.where(act & (x_alpha < a_min), x_min, x)  # pull laggards into the corridor
            l1_cur = (x - x_in).abs().sum(1)
            done = (l1_cur - l1_target).abs() <= tol
            sel_g = torch.where(x == x_max, inf, g)
            mag = sel_g.abs()
            threshold = mag.kthvalue(k, dim=1, keepdim=True).values
            selected = (mag <= threshold) & (sel_g != inf)
            l1_sel = ((x - x_max).abs() * selected).sum(1)
            gamma = torch.where(l1_sel > 0, (l1_cur - l1_target) / l1_sel.clamp_min(1e-300), inf)
            move = act & ~done[:, None] & selected
            stepped = torch.where(gamma[:, None] > 1, x_max, x + gamma[:, None] * (x_max - x))
            x = torch.where(move, stepped, x)
            attr += (x - x_old) * g
            active = active & ~done & (gamma > 1)
    return attr
