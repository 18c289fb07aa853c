"""What the Quantus-catalogue faithfulness metrics share (faithfulness correlation, monotonicity,
pixel flipping, region perturbation, IROF): features, fills, orders and one batched curve engine.

Features. Quantus flattens ``x`` ``(B, C, H, W)`` and treats every value as one feature, the
attribution being broadcast over the channels when it is a ``(B, 1, H, W)`` map. Here
``features="element"`` is that convention (the Quantus default) and ``features="pixel"`` makes
each pixel (all its channels together) one feature, its relevance the channel reduction
``reduce`` of the attribution (Bach's pixel flipping, Samek's regions).

Fills (Quantus ``perturb_baseline``): ``"black"`` = the per-image minimum of ``x`` (Quantus's
definition, not zero), ``"white"`` = the per-image maximum, ``"mean"`` = the per-image mean, a
number, or a tensor broadcastable to ``x``.

Orders are stable sorts: ties keep raster order (channel, row, column), so a map always gives the
same curve (numpy's default ``argsort`` in Quantus is not stable beyond 16 values).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch

from ..errors import XaiError, check_fill, describe
from ..space import broadcast_to_images
from ._common import Scorer, reduce_channels

FILLS = ("black", "white", "mean")
FEATURES = ("element", "pixel")


def fill_images(fill: Union[str, float, torch.Tensor], x: torch.Tensor, name: str = "baseline") -> torch.Tensor:
    """The ``(B, C, H, W)`` images a removed feature takes its value from (see the module doc).

    Raises:
        XaiError: an unknown name, a non-finite value or a tensor that does not broadcast.
    """
    if isinstance(fill, str):
        if fill not in FILLS:
            raise XaiError(f"{name} must be one of {list(FILLS)}, a number or a tensor in model space; got {fill!r}.")
        flat = x.flatten(1)
        v = flat.amin(1) if fill == "black" else flat.amax(1) if fill == "white" else flat.mean(1)
        return v.view(-1, 1, 1, 1).expand_as(x)
    value = check_fill(fill, f"{name} (a model-space value)")
    t = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=x.dtype, device=x.device)
    return broadcast_to_images(t.to(x.device, x.dtype), x, name).expand_as(x)


def feature_relevance(attr: torch.Tensor, x: torch.Tensor, features: str, reduce: str,
                      absolute: bool) -> torch.Tensor:
    """Relevance of each feature: ``(B, C, H, W)`` for ``"element"`` (a ``(B, 1, H, W)`` map is
    broadcast over the channels, as Quantus), ``(B, 1, H, W)`` for ``"pixel"`` (channels reduced
    with ``reduce``). ``absolute`` takes ``|.|`` of the attribution first (Quantus ``abs=True``)."""
    if features not in FEATURES:
        raise XaiError(f"features must be one of {list(FEATURES)}; got {describe(features)}.")
    a = attr.abs() if absolute else attr
    if features == "element":
        return a.expand(-1, x.shape[1], -1, -1)
    return reduce_channels(a, reduce)[:, None]


def order_ranks(relevance: torch.Tensor, descending: bool) -> torch.Tensor:
    """The position of every feature of ``relevance`` ``(B, ...)`` in its image's order (0 =
    first), stable, same shape, long."""
    flat = relevance.flatten(1)
    order = torch.sort(flat, dim=1, descending=descending, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return rank.view(relevance.shape)


def grouped_sums(values: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, G)`` sums of ``values`` ``(B, ...)`` over the features of each group ``group``
    (same shape, long in ``[0, G)``)."""
    out = torch.zeros(values.shape[0], groups, dtype=torch.float64, device=values.device)
    return out.scatter_add_(1, group.flatten(1), values.flatten(1).double())


def curve_scores(scorer: Scorer, start: torch.Tensor, finish: torch.Tensor, rank: torch.Tensor,
                 image: torch.Tensor, changed: torch.Tensor, desc: str,
                 select: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.lt) -> torch.Tensor:
    """Scores of ``n`` perturbed images in one batched evaluation: image ``k`` is
    ``start[image[k]]`` with the features ``f`` where ``select(rank[image[k]], changed[k])``
    (default: rank < changed, the first ``changed[k]`` features of the order) taken from
    ``finish[image[k]]``.

    Args:
        start, finish: ``(B, C, H, W)``.
        rank: ``(B, C', H, W)`` long, ``C'`` = 1 or C.
        image, changed: ``(n,)`` long.

    Returns:
        ``(n,)`` float64 scores.
    """
    def make(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = image[lo:hi]
        take = select(rank[img], changed[lo:hi].view(-1, 1, 1, 1))
        return torch.where(take, finish[img], start[img]), img

    return scorer.evaluate(int(image.shape[0]), make, desc=desc)


def trapezoid(curve: torch.Tensor) -> torch.Tensor:
    """``np.trapz(curve, dx=1)`` along the last dim (0 for one point)."""
    if curve.shape[-1] < 2:
        return torch.zeros(curve.shape[:-1], dtype=curve.dtype, device=curve.device)
    return curve.sum(-1) - (curve[..., 0] + curve[..., -1]) / 2


__all__ = ["FILLS", "FEATURES", "fill_images", "feature_relevance", "order_ranks", "grouped_sums", "curve_scores",
           "trapezoid"]
