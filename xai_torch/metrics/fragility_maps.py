"""Differentiable stand-ins of the gradient-family explainers for the fragility attack
(:func:`~xai_torch.metrics.fragility.fragility`), and the attack's objectives.

xai_torch's explainers return detached maps, so the attack rebuilds the map of the explainers
it knows from the model with ``torch.autograd.grad(..., create_graph=True)`` (a double
backward): :class:`~xai_torch.Gradient` (``abs`` too), :class:`~xai_torch.InputXGradient`,
:class:`~xai_torch.IntegratedGradients` (straight line, on the input; a zero baseline, and the
explainer's rule up to 16 nodes, else 16 midpoints, in the stand-in) and
:class:`~xai_torch.SmoothGrad` around the first two (``variant="mean"``, at most 8 seeded draws
in the stand-in). The stand-in runs on a copy of the
model whose ``nn.ReLU`` modules are replaced by ``nn.Softplus(beta)`` (a ReLU network has zero
second derivatives: Ghorbani et al. 2019, section 3), and it only steers the attack: every
explanation the result reports comes from the real explainer on the real model.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..gradient import Gradient, InputXGradient
from ..path.ig import IntegratedGradients
from ..path.quadrature import get_rule
from ..seeding import derive_seed, make_generator
from ..smoothgrad import SmoothGrad
from ..targets import class_output
from ._common import correlation

#: the most quadrature steps / noise draws one stand-in map costs
IG_STEPS, SG_SAMPLES = 16, 8
_SG_STREAM = 7

MapFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _plain(e: Any) -> bool:
    return type(e) in (Gradient, InputXGradient) and e.layers is None and e.select_output is None


def differentiable(explainer: Any) -> bool:
    """Whether :func:`stand_in` knows ``explainer``'s map (module doc)."""
    if _plain(explainer):
        return True
    if type(explainer) is IntegratedGradients:
        return (explainer.layers is None and explainer.path == "line" and explainer.method != "adaptive"
                and explainer.select_output is None)
    if type(explainer) is SmoothGrad:
        return _plain(explainer.explainer) and explainer.variant == "mean"
    return False


def softplus_copy(model: nn.Module, beta: float) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)``
    and its parameters frozen (only input gradients are taken)."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def stand_in(explainer: Any, model: nn.Module, seed: int) -> MapFn:
    """``fn(z, classes, first) -> (n, C, H, W)`` the explainer's map of ``z`` on ``model`` with
    a graph back to ``z`` (``first``: the index of ``z[0]`` in the batch, for per-image draws)."""

    def grad(z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        out = class_output(model(z))
        score = out.gather(1, classes[:, None]).sum()
        (g,) = torch.autograd.grad(score, z, create_graph=True)
        return g

    def plain(e: Any) -> MapFn:
        def fn(z: torch.Tensor, classes: torch.Tensor, first: int) -> torch.Tensor:
            g = grad(z, classes)
            if isinstance(e, InputXGradient):
                return z * g
            return g.abs() if e.abs else g
        return fn

    if type(explainer) is IntegratedGradients:
        # the explainer's own rule when it has at most IG_STEPS nodes, else the midpoint rule
        nodes, weights = (get_rule(explainer.method, explainer.steps) if explainer.steps <= IG_STEPS
                          else get_rule("riemann_middle", IG_STEPS))

        def ig(z: torch.Tensor, classes: torch.Tensor, first: int) -> torch.Tensor:
            total = sum(float(w) * grad(float(a) * z, classes) for a, w in zip(nodes, weights))
            assert isinstance(total, torch.Tensor)
            return z * total
        return ig
    if type(explainer) is SmoothGrad:
        inner, samples, noise = plain(explainer.explainer), min(explainer.samples, SG_SAMPLES), explainer.noise

        def smooth(z: torch.Tensor, classes: torch.Tensor, first: int) -> torch.Tensor:
            flat = z.detach().flatten(1)
            std = (noise * (flat.amax(1) - flat.amin(1))).view(-1, *([1] * (z.ndim - 1)))
            draws = []
            for i in range(z.shape[0]):
                gen = make_generator(derive_seed(seed, _SG_STREAM, first + i), z.device)
                draws.append(torch.randn((samples, *z.shape[1:]), generator=gen, device=z.device, dtype=z.dtype))
            eps = torch.stack(draws, 1)                       # (samples, n, C, H, W)
            total = sum(inner(z + e * std, classes, first) for e in eps)
            assert isinstance(total, torch.Tensor)
            return total / samples
        return smooth
    return plain(explainer)


def centers(m: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` the centre of mass (row, column) of ``|m|`` ``(B, H, W)``; NaN for a zero map."""
    w = m.abs()
    h, wd = m.shape[-2:]
    rows = torch.arange(h, device=m.device, dtype=m.dtype)
    cols = torch.arange(wd, device=m.device, dtype=m.dtype)
    total = w.sum((1, 2))
    r = (w.sum(2) * rows).sum(1) / total
    c = (w.sum(1) * cols).sum(1) / total
    return torch.stack([r, c], 1)


def top_mask(m: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, H*W)`` bool: the ``k`` largest pixels of each map (ties in raster order)."""
    order = torch.sort(m.flatten(1), dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros(m.shape[0], m[0].numel(), dtype=torch.bool, device=m.device).scatter_(1, order, True)


def surrogate(objective: str, m: torch.Tensor, ref: torch.Tensor, ref_top: torch.Tensor,
              ref_center: torch.Tensor) -> torch.Tensor:
    """``(B,)`` the differentiable objective the attack lowers: the share of ``|m|`` on the
    original top-k pixels (``"topk"``), the Pearson correlation with the original map
    (``"spearman"``'s stand-in) or minus the centre-of-mass distance (``"mass_center"``)."""
    if objective == "topk":
        w = m.abs().flatten(1)
        return (w * ref_top).sum(1) / w.sum(1).clamp_min(1e-30)
    if objective == "spearman":
        return correlation(m.flatten(1), ref.flatten(1).to(m.dtype), dim=1).nan_to_num(0.0)
    dist: torch.Tensor = torch.linalg.vector_norm(centers(m) - ref_center.to(m.dtype), dim=1)
    return -dist.nan_to_num(0.0)


def measured(m: torch.Tensor, ref: torch.Tensor, ref_top: torch.Tensor, ref_center: torch.Tensor,
             k: int) -> dict[str, torch.Tensor]:
    """The reported dissimilarities of real maps ``m`` to the original ``ref`` (float64 ``(B,)``)."""
    from .similarity import spearman

    inter = (top_mask(m, k) & ref_top).sum(1).double() / k
    return {"topk": inter, "spearman": spearman(m, ref),
            "mass_center": torch.linalg.vector_norm(centers(m) - ref_center, dim=1)}


def score(objective: str, found: dict[str, torch.Tensor], share: torch.Tensor, k: int) -> torch.Tensor:
    """The attack's figure of merit on real maps, lower is better: the top-k intersection (ties
    broken by ``share``, the share of mass on the original top-k: ``share / (k + 1)`` is below
    one step ``1 / k`` of the intersection), the Spearman correlation, or minus the
    centre-of-mass shift."""
    if objective == "topk":
        return found["topk"] + share / (k + 1)
    if objective == "spearman":
        return found["spearman"].nan_to_num(1.0)
    return -found["mass_center"].nan_to_num(0.0)


__all__ = ["differentiable", "softplus_copy", "stand_in", "centers", "top_mask", "surrogate", "measured", "score"]
