"""Localisation against ground-truth masks: pointing game, relevance mass, relevance rank.

No model calls: each metric compares a relevance map with a ground-truth region per image
(an object mask, a box drawn as a mask). All are batched tensor functions that take the
attributions (a tensor or array as described in :mod:`xai_torch.metrics._common`) and masks
``(B, H, W)`` or ``(B, 1, H, W)`` (bool or 0/1), and return per-image float64 values where an
empty mask gives NaN (Quantus counts an empty mask as a hit: NaN written into a bool array is
True, ALGORITHMS.md §9.12).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError, check_choice, describe
from ._common import coerce_attribution, descending_order

TIES = ("fraction", "any", "all", "first")


def _masks(masks: Any, b: int, h: int, w: int) -> torch.Tensor:
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor):
        raise XaiError(f"masks must be a tensor or array of shape ({b}, {h}, {w}); got {describe(masks)}.")
    m = masks.detach()
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim == 2 and b == 1:
        m = m[None]
    if m.ndim != 3 or tuple(m.shape) != (b, h, w):
        raise XaiError(f"masks must have shape ({b}, {h}, {w}) (or ({b}, 1, {h}, {w})) to match the "
                       f"attributions; got {describe(masks)}.")
    if m.dtype != torch.bool:
        if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise XaiError("masks must be boolean or hold only 0 and 1 (a ground-truth region per image).")
        m = m != 0
    return m


def _relevance(attribution: Any, masks: Any, reduce: str,
               positive_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, H, W)`` float64 relevance (clipped at 0 with ``positive_only``) and bool masks."""
    a = attribution
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise XaiError(f"attribution must be a tensor or an array; got {describe(attribution)}.")
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise XaiError(f"attribution must be (B, C, H, W), (B, 1, H, W) or (B, H, W); got {describe(attribution)}.")
    b, c, h, w = a.shape
    shape_like = torch.empty((), device=a.device).expand(b, c, h, w)
    rel = coerce_attribution(a, shape_like, reduce=reduce)
    if positive_only:
        rel = rel.clamp(min=0)
    return rel, _masks(masks, b, h, w).to(rel.device)


def _disk(radius: float, device: torch.device) -> torch.Tensor:
    r = int(math.floor(radius))
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    return ((t[:, None] ** 2 + t[None, :] ** 2) <= radius * radius).double()


def dilate_masks(masks: torch.Tensor, radius: float) -> torch.Tensor:
    """Masks grown by a disk of ``radius`` pixels (Euclidean): a pixel is in the result when a
    mask pixel lies within ``radius`` of it.

    Shape:
        ``(B, H, W) -> (B, H, W)`` bool.
    """
    if radius <= 0:
        return masks.clone()
    k = _disk(radius, masks.device)
    r = k.shape[-1] // 2
    hits = torch.nn.functional.conv2d(masks[:, None].double(), k[None, None], padding=r)
    return hits[:, 0] > 0.5


@dataclass
class PointingGame:
    """Result of :func:`pointing_game`.

    Attributes:
        hit: ``(B,)`` 1.0 for a hit, 0.0 for a miss, the tied fraction with ``ties="fraction"``,
            NaN for an empty mask.
        accuracy: hits over images with a non-empty mask, averaged per class first when
            ``labels`` are given (Zhang et al.); a 0-d tensor.
        points: ``(B, 2)`` ``(row, col)`` of the first maximum in raster order.
        per_class: ``{label: accuracy}`` when ``labels`` are given, else ``None``.
    """

    hit: torch.Tensor
    accuracy: torch.Tensor
    points: torch.Tensor
    per_class: Optional[dict[int, float]]


def pointing_game(attribution: Any, masks: Any, *, tolerance: float = 15.0, ties: str = "fraction", reduce: str = "sum",
                  labels: Any = None) -> PointingGame:
    """Pointing game (Zhang et al. 2018): does the map's maximum fall on the object?

    A maximum within ``tolerance`` pixels (Euclidean) of the mask is a hit.

    Args:
        attribution: ``(B, C|1, H, W)`` or ``(B, H, W)`` tensor or array.
        masks: ``(B, H, W)`` ground-truth regions.
        tolerance: radius in pixels (Zhang et al. use 15; 0 means the maximum must be inside).
        ties: what several equal maxima count as: ``"fraction"`` (the fraction of them that
            hit, i.e. the expected hit under a random tie-break; the default), ``"any"`` (one
            hit is enough, as Quantus), ``"all"`` (all must hit) or ``"first"`` (the first in
            raster order, as ``argmax``). Without ties all four agree.
        reduce: channel reduction (see :mod:`xai_torch.metrics._common`).
        labels: optional ``(B,)`` class labels: the accuracy is then averaged per class first.

    Returns:
        :class:`PointingGame`.

    Example:
        >>> res = xt.metrics.pointing_game(cam_maps, object_masks)
        >>> res.accuracy
    """
    check_choice(ties, "ties", TIES)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise XaiError(f"tolerance must be a number of pixels >= 0; got {tolerance!r}.")
    rel, m = _relevance(attribution, masks, reduce)
    b, h, w = rel.shape
    region = dilate_masks(m, float(tolerance))
    peak = rel.flatten(1).amax(1)
    is_max = rel == peak[:, None, None]
    inside = (is_max & region).flatten(1).sum(1).double()
    count = is_max.flatten(1).sum(1).double()
    first = (rel.flatten(1) == peak[:, None]).double().argmax(1)
    first_hit = region.flatten(1).gather(1, first[:, None])[:, 0].double()
    hit = {"fraction": inside / count, "any": (inside > 0).double(), "all": (inside == count).double(),
           "first": first_hit}[ties]
    empty = ~m.flatten(1).any(1)
    hit = torch.where(empty, torch.full_like(hit, float("nan")), hit)
    points = torch.stack([first // w, first % w], 1)
    accuracy, per_class = _average(hit, labels, b)
    return PointingGame(hit=hit, accuracy=accuracy, points=points, per_class=per_class)


def _average(values: torch.Tensor, labels: Any, b: int) -> tuple[torch.Tensor, Optional[dict[int, float]]]:
    valid = ~torch.isnan(values)
    if labels is None:
        acc = values[valid].mean() if bool(valid.any()) else torch.tensor(float("nan"), dtype=torch.float64)
        return acc, None
    lab = torch.as_tensor(labels).reshape(-1)
    if lab.numel() != b or lab.is_floating_point():
        raise XaiError(f"labels must be {b} integer class labels, one per image; got {describe(labels)}.")
    per_class: dict[int, float] = {}
    for c in sorted(set(lab.tolist())):
        sel = (lab.to(values.device) == c) & valid
        if bool(sel.any()):
            per_class[c] = float(values[sel].mean())
    acc = torch.tensor(sum(per_class.values()) / len(per_class) if per_class else float("nan"),
                       dtype=torch.float64)
    return acc, per_class


@dataclass
class Localisation:
    """Result of :func:`relevance_mass` / :func:`relevance_rank`.

    Attributes:
        score: ``(B,)`` in [0, 1]; NaN for an empty mask (or no positive relevance, for mass).
        mean: the mean over images with a score (a 0-d tensor).
    """

    score: torch.Tensor
    mean: torch.Tensor


def relevance_mass(attribution: Any, masks: Any, *, positive_only: bool = True, reduce: str = "sum") -> Localisation:
    """Relevance mass accuracy (Arras et al. 2022): the share of the relevance that lies in
    the ground-truth region, ``sum_GT R / sum R``.

    Args:
        positive_only: keep positive relevance only (the paper); with ``False`` negative
            relevance counts too and the ratio can leave [0, 1].

    Returns:
        :class:`Localisation`.

    Example:
        >>> xt.metrics.relevance_mass(attr, masks).mean
    """
    rel, m = _relevance(attribution, masks, reduce, positive_only)
    total = rel.flatten(1).sum(1)
    inside = (rel * m).flatten(1).sum(1)
    nan = torch.full_like(total, float("nan"))
    score = torch.where((~m.flatten(1).any(1)) | (total == 0), nan, inside / torch.where(total == 0, 1.0, total))
    return Localisation(score=score, mean=_average(score, None, rel.shape[0])[0])


def relevance_rank(attribution: Any, masks: Any, *, positive_only: bool = True, reduce: str = "sum") -> Localisation:
    """Relevance rank accuracy (Arras et al. 2022): with ``K = |GT|``, the fraction of the ``K``
    most relevant pixels that lie in the ground-truth region. Ties are broken in raster order
    (a stable sort), so equal maps give equal scores.

    Args:
        positive_only: rank ``max(R, 0)`` (negative pixels tie at 0).

    Returns:
        :class:`Localisation`.

    Example:
        >>> xt.metrics.relevance_rank(attr, masks).score
    """
    rel, m = _relevance(attribution, masks, reduce, positive_only)
    b = rel.shape[0]
    order = descending_order(rel)
    flat = m.flatten(1)
    k = flat.sum(1)
    in_gt = flat.gather(1, order).double()
    top = torch.arange(order.shape[1], device=rel.device)[None, :] < k[:, None]
    score = (in_gt * top).sum(1) / k.clamp(min=1)
    score = torch.where(k == 0, torch.full_like(score, float("nan")), score)
    return Localisation(score=score, mean=_average(score, None, b)[0])
