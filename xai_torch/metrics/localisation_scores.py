"""Localisation scores of the Quantus catalogue: top-k intersection (Theiner et al. 2021), ROC
AUC against a mask (Fawcett 2006) and Focus on 2x2 mosaics (Arias-Duart et al. 2022), with the
helper that builds the mosaics.

Model-free, batched: the attribution is a tensor or array ``(B, C, H, W)``, ``(B, 1, H, W)``
or ``(B, H, W)`` (channels reduced with ``reduce``, the signed sum by default; see
:mod:`xai_torch.metrics._common`), masks are ``(B, H, W)`` bool or 0/1. Results are ``(B,)``
float64. Unlike :mod:`~xai_torch.metrics.localisation` (NaN for an empty mask), these refuse a
mask that leaves the score undefined with an ``XaiError`` naming the images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError, check_positive_int, describe
from ..seeding import check_seed
from .complexity import feature_maps
from .localisation import _masks


def _maps_and_masks(attribution: Any, masks: Any, reduce: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    a = attribution
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor) or a.ndim not in (2, 3, 4):
        raise XaiError(f"{name}: attribution must be (B, C, H, W), (B, 1, H, W), (B, H, W) or (H, W); "
                       f"got {describe(attribution)}.")
    h, w = a.shape[-2:]
    rel = feature_maps(a, reduce, name=name)
    m = _masks(masks, rel.shape[0], h, w).to(rel.device).flatten(1)
    return rel, m


def _refuse(bad: torch.Tensor, what: str, name: str) -> None:
    if bool(bad.any()):
        idx = torch.nonzero(bad).flatten().tolist()
        raise XaiError(f"{name}: the masks of images {idx[:10]} are {what}, so the score is undefined; "
                       "leave those images out.")


def top_k_intersection(attribution: Any, masks: Any, *, k: int = 1000, concept_influence: bool = False,
                       reduce: str = "sum") -> torch.Tensor:
    """Top-k intersection (Theiner et al. 2021; Quantus ``TopKIntersection``): the fraction of
    the ``k`` most relevant pixels that lie in the mask, ``|top_k(a) & s| / k``. Ties are broken
    in raster order (a stable sort; Quantus' ``argsort`` breaks them arbitrarily: equal on
    tie-free maps). Quantus' default ``abs=False``, ``normalise=True`` do not change the order.

    Args:
        attribution, masks: see the module docstring.
        k: pixels to take, 1 <= k <= H*W (Quantus' 1000; it silently takes all pixels when the
            map is smaller; here that is an error).
        concept_influence: multiply by ``H*W / |s|`` (Quantus' option: 1 means chance level).
        reduce: channel reduction.

    Returns:
        ``(B,)`` float64 in [0, 1] (up to ``H*W / |s|`` with ``concept_influence``).

    Raises:
        XaiError: ``k`` out of range, or an empty mask.

    Example:
        >>> xt.metrics.top_k_intersection(attr, masks, k=500)
    """
    k = check_positive_int(k, "k")
    rel, m = _maps_and_masks(attribution, masks, reduce, "top_k_intersection")
    n = rel.shape[1]
    if k > n:
        raise XaiError(f"top_k_intersection: k={k} is larger than the map ({n} pixels); pass k <= {n}.")
    size = m.sum(1)
    _refuse(size == 0, "empty", "top_k_intersection")
    order = torch.sort(rel, dim=1, descending=True, stable=True).indices[:, :k]
    score = m.gather(1, order).double().mean(1)
    if not isinstance(concept_influence, bool):
        raise XaiError(f"concept_influence must be True or False; got {describe(concept_influence)}.")
    return score * (n / size.double()) if concept_influence else score


def auc(attribution: Any, masks: Any, *, reduce: str = "sum") -> torch.Tensor:
    """ROC AUC of the map as a detector of the mask (Fawcett 2006; Quantus ``AUC``): the
    probability that a random mask pixel has more relevance than a random pixel outside it,
    ties counting one half (the Mann-Whitney statistic from average ranks, which equals
    ``sklearn.metrics.roc_auc_score`` / ``auc(roc_curve(...))`` ties included). Batched in torch.

    Args:
        attribution, masks: see the module docstring.
        reduce: channel reduction.

    Returns:
        ``(B,)`` float64 in [0, 1]; 0.5 for a constant map.

    Raises:
        XaiError: a mask that is empty or covers the whole image (the ROC needs both classes;
            Quantus returns NaN for an empty mask and a warning plus NaN for a full one).

    Example:
        >>> xt.metrics.auc(attr, masks)
    """
    rel, m = _maps_and_masks(attribution, masks, reduce, "auc")
    pos = m.sum(1).double()
    neg = m.shape[1] - pos
    _refuse(pos == 0, "empty", "auc")
    _refuse(neg == 0, "full (no pixel outside)", "auc")
    srt = torch.sort(rel, dim=1).values
    below = torch.searchsorted(srt, rel, right=False).double()
    upto = torch.searchsorted(srt, rel, right=True).double()
    ranks = (below + upto + 1) / 2                     # average 1-based ranks
    return ((ranks * m).sum(1) - pos * (pos + 1) / 2) / (pos * neg)


def _quadrants(quadrants: Any, b: int) -> torch.Tensor:
    q = torch.from_numpy(np.asarray(quadrants)) if isinstance(quadrants, (np.ndarray, list, tuple)) else quadrants
    if not isinstance(q, torch.Tensor) or tuple(q.shape) != (b, 4) or q.is_complex():
        raise XaiError(f"quadrants must be ({b}, 4) flags, one row per mosaic (top-left, top-right, bottom-left, "
                       f"bottom-right; True where the image is of the target class); got {describe(quadrants)}.")
    if q.dtype != torch.bool:
        if not bool(((q == 0) | (q == 1)).all()):
            raise XaiError("quadrants must be boolean or hold only 0 and 1.")
        q = q != 0
    _refuse(~q.any(1), "all false (no quadrant of the target class)", "focus")
    return q


def focus(attribution: Any, quadrants: Any, *, reduce: str = "sum") -> torch.Tensor:
    """Focus (Arias-Duart et al. 2022; Quantus ``Focus``): on a 2x2 mosaic of equal images,
    the share of the positive relevance that falls on the quadrants of the target class,
    ``sum_{target quadrants} max(R, 0) / sum max(R, 0)``. Build mosaics with :func:`make_mosaics`.

    Differs from Quantus 0.6: a map without positive relevance gives NaN (Quantus divides by
    ``total + 1e-9`` and reports 0, a perfect miss); an odd height or width is refused (Quantus
    splits at ``H // 2``, giving the extra row to the bottom quadrants). Channels are reduced
    first (``reduce``); Quantus clips each channel, so they agree on one-channel maps.

    Args:
        attribution: mosaic maps ``(B, C|1, 2h, 2w)`` or ``(B, 2h, 2w)``.
        quadrants: ``(B, 4)`` flags in the order (top-left, top-right, bottom-left,
            bottom-right), True on the target class (``Mosaics.quadrants``).
        reduce: channel reduction.

    Returns:
        ``(B,)`` float64 in [0, 1].

    Raises:
        XaiError: odd height or width, quadrants of the wrong shape, or a row without a target.

    Example:
        >>> mos = xt.metrics.make_mosaics(images, labels, seed=0)
        >>> xt.metrics.focus(explainer(mos.images, target=mos.targets), mos.quadrants)
    """
    a = attribution
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor) or a.ndim not in (3, 4):
        raise XaiError(f"focus: attribution must be mosaic maps (B, C, 2h, 2w) or (B, 2h, 2w); got {describe(a)}.")
    h, w = a.shape[-2:]
    if h % 2 or w % 2:
        raise XaiError(f"focus: a 2x2 mosaic has an even height and width; got {h}x{w}. Build the mosaics with "
                       "xt.metrics.make_mosaics (four images of one size).")
    rel = feature_maps(a, reduce, name="focus").view(-1, h, w).clamp(min=0)
    q = _quadrants(quadrants, rel.shape[0]).to(rel.device)
    parts = torch.stack([rel[:, :h // 2, :w // 2], rel[:, :h // 2, w // 2:], rel[:, h // 2:, :w // 2],
                         rel[:, h // 2:, w // 2:]], 1).flatten(2).sum(2)
    total = parts.sum(1)
    score = (parts * q).sum(1) / torch.where(total == 0, torch.ones_like(total), total)
    return torch.where(total == 0, torch.full_like(score, float("nan")), score)


@dataclass
class Mosaics:
    """What :func:`make_mosaics` returns.

    Attributes:
        images: ``(M, C, 2H, 2W)`` mosaics.
        quadrants: ``(M, 4)`` bool, True where the quadrant's image is of the target class
            (top-left, top-right, bottom-left, bottom-right).
        targets: ``(M,)`` long, the target class of each mosaic.
        indices: ``(M, 4)`` long, the source image of each quadrant.
    """

    images: torch.Tensor
    quadrants: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor


def make_mosaics(images: Any, labels: Any, *, per_class: int = 1, seed: Optional[int] = 0) -> Mosaics:
    """2x2 mosaics for :func:`focus` (Arias-Duart et al. 2022): for every class, ``per_class``
    mosaics of two distinct images of that class and two distinct images of other classes, in
    shuffled quadrants. Seeded with a CPU ``torch.Generator`` (Quantus' ``mosaic_creation``
    ignores ``seed=0``, as its ``if seed:`` test is false, and may repeat a target image).

    Args:
        images: ``(N, C, H, W)`` tensor.
        labels: ``(N,)`` integer classes.
        per_class: mosaics per class (>= 1).
        seed: the seed of the draws (``None``: torch's global generator).

    Returns:
        :class:`Mosaics`, classes in increasing order.

    Raises:
        XaiError: fewer than two classes, or a class with fewer than two images.

    Example:
        >>> mos = xt.metrics.make_mosaics(x, y, per_class=2, seed=0)
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise XaiError(f"images must be a (N, C, H, W) tensor; got {describe(images)}.")
    lab = torch.as_tensor(labels).reshape(-1).cpu() if not isinstance(labels, torch.Tensor) else labels.cpu()
    if lab.ndim != 1 or lab.numel() != images.shape[0] or lab.is_floating_point() or lab.dtype == torch.bool:
        raise XaiError(f"labels must be {images.shape[0]} integer classes, one per image; got {describe(labels)}.")
    per_class = check_positive_int(per_class, "per_class")
    checked = check_seed(seed)
    gen = torch.Generator().manual_seed(checked) if checked is not None else None
    classes = sorted(set(lab.tolist()))
    if len(classes) < 2:
        raise XaiError(f"make_mosaics needs images of at least two classes; got only {classes}.")
    idx, quad, tgt = [], [], []
    for c in classes:
        own, other = torch.nonzero(lab == c).flatten(), torch.nonzero(lab != c).flatten()
        if own.numel() < 2 or other.numel() < 2:
            raise XaiError(f"make_mosaics needs at least two images of each class; class {c} has {own.numel()}.")
        for _ in range(per_class):
            four = torch.cat([own[torch.randperm(own.numel(), generator=gen)[:2]],
                              other[torch.randperm(other.numel(), generator=gen)[:2]]])
            flags = torch.tensor([True, True, False, False])
            place = torch.randperm(4, generator=gen)
            idx.append(four[place])
            quad.append(flags[place])
            tgt.append(c)
    index = torch.stack(idx)
    pick = images.detach()[index.to(images.device)]                      # (M, 4, C, H, W)
    rows = [torch.cat([pick[:, 0], pick[:, 1]], -1), torch.cat([pick[:, 2], pick[:, 3]], -1)]
    return Mosaics(images=torch.cat(rows, -2), quadrants=torch.stack(quad), targets=torch.tensor(tgt),
                   indices=index)


__all__ = ["Mosaics", "auc", "focus", "make_mosaics", "top_k_intersection"]
