"""Similarity of batched maps, pure functions ``(B, H, W), (B, H, W) -> (B,)``: Pearson,
Spearman (ties averaged as scipy), SSIM (as skimage) and the HOG correlation of Adebayo et al.
2018. :func:`~xai_torch.metrics.sanity.model_randomization` compares maps with them by name
(:data:`SIMILARITIES`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError, describe
from ..imageops import minmax
from ._common import correlation

#: similarity names :func:`~xai_torch.metrics.sanity.model_randomization` knows.
SIMILARITIES = ("spearman", "spearman_abs", "pearson", "ssim", "hog")


def _flat_pair(a: Any, b: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    if a.shape != b.shape or a.ndim < 2:
        raise XaiError(f"{name} compares two batches of maps of the same shape (B, H, W) (or (B, N)); got "
                       f"{describe(a)} and {describe(b)}.")
    if a.is_complex() or b.is_complex() or a.dtype == torch.bool or b.dtype == torch.bool:
        raise XaiError(f"{name} needs real-valued maps; got {describe(a)} and {describe(b)}.")
    return a.detach().flatten(1).to(torch.float64), b.detach().flatten(1).to(a.device, torch.float64)


def pearson(a: Any, b: Any) -> torch.Tensor:
    """Pearson correlation of each pair of maps.

    Args:
        a, b: maps ``(B, H, W)`` (any trailing shape; each row is flattened).

    Returns:
        ``(B,)`` float64 in [-1, 1] on ``a.device``; NaN where a map is constant (the
        correlation is undefined; scipy also returns NaN).

    Shape:
        ``(B, *) , (B, *) -> (B,)``.

    Example:
        >>> pearson(maps, 2 * maps + 1)       # tensor([1., 1., ...])
    """
    return correlation(*_flat_pair(a, b, "pearson"), dim=1)


def rank(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (1..N) along the last dim of ``(B, N)`` values; ties share the mean of the
    ranks they span (``scipy.stats.rankdata(method="average")``), batched in torch.

    Shape:
        ``(B, N) -> (B, N)`` float64.

    Example:
        >>> rank(torch.tensor([[3.0, 1.0, 3.0, 2.0]]))   # tensor([[3.5, 1.0, 3.5, 2.0]])
    """
    n = v.shape[-1]
    sv, idx = torch.sort(v, dim=-1, stable=True)
    pos = torch.arange(n, device=v.device, dtype=torch.float64).expand_as(sv)
    starts = torch.ones_like(sv, dtype=torch.bool)
    starts[..., 1:] = sv[..., 1:] != sv[..., :-1]
    ends = torch.ones_like(starts)
    ends[..., :-1] = starts[..., 1:]
    first = torch.where(starts, pos, torch.zeros_like(pos)).cummax(-1).values
    last = torch.where(ends, pos, torch.full_like(pos, n)).flip(-1).cummin(-1).values.flip(-1)
    return torch.empty_like(pos).scatter_(-1, idx, (first + last) / 2 + 1)


def spearman(a: Any, b: Any, absolute: bool = False) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (Pearson of average ranks, so ties are
    handled as ``scipy.stats.spearmanr``).

    Args:
        a, b: maps ``(B, H, W)`` (any trailing shape; each row is flattened).
        absolute: rank ``|a|`` and ``|b|`` (the magnitude ordering; the paper's "ABS" variant
            when the maps are signed).

    Returns:
        ``(B,)`` float64 in [-1, 1] on ``a.device``; NaN where a map is constant.

    Shape:
        ``(B, *) , (B, *) -> (B,)``.

    Example:
        >>> spearman(maps, maps.exp())        # tensor([1., ...]): any increasing map
        >>> spearman(maps, -maps)             # tensor([-1., ...])
    """
    a, b = _flat_pair(a, b, "spearman")
    if absolute:
        a, b = a.abs(), b.abs()
    return correlation(rank(a), rank(b), dim=1)


def ssim(a: Any, b: Any, *, data_range: Optional[float] = None, win_size: int = 7) -> torch.Tensor:
    """Structural similarity of each pair of maps, equal to
    ``skimage.metrics.structural_similarity(a_i, b_i, data_range=..., win_size=7)`` (its
    defaults: uniform 7x7 window, K1 = 0.01, K2 = 0.03, sample covariance, mean over the
    windows that lie inside the image).

    Args:
        a, b: maps ``(B, H, W)``, H and W at least ``win_size``.
        data_range: the value range L of the maps (C1 = (0.01 L)^2, C2 = (0.03 L)^2). ``None``:
            per pair, the joint range ``max(a_i, b_i) - min(a_i, b_i)`` (skimage asks for it
            explicitly on float maps). SSIM is not scale invariant: compare maps on one scale
            (``model_randomization`` min-max normalises both to [0, 1], data_range 1).
        win_size: the odd side of the square window.

    Returns:
        ``(B,)`` float64 on ``a.device``, 1 for identical maps; NaN where the range is 0.

    Shape:
        ``(B, H, W), (B, H, W) -> (B,)``.

    Example:
        >>> ssim(m1, m2, data_range=1.0)
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.ndim != 3 or a.shape != b.shape:
        raise XaiError(f"ssim compares two batches of maps of shape (B, H, W); got {describe(a)} and {describe(b)}.")
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0:
        raise XaiError(f"win_size must be an odd integer >= 3; got {describe(win_size)}.")
    if min(a.shape[1:]) < win_size:
        raise XaiError(f"ssim with win_size={win_size} needs maps of at least {win_size}x{win_size}; got "
                       f"{tuple(a.shape[1:])}. Pass a smaller odd win_size.")
    a = a.detach().to(torch.float64)
    b = b.detach().to(a.device, torch.float64)
    if data_range is None:
        both = torch.cat([a.flatten(1), b.flatten(1)], 1)
        rng = both.amax(1) - both.amin(1)
    else:
        if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
            raise XaiError(f"data_range must be a positive number or None; got {describe(data_range)}.")
        rng = torch.full((a.shape[0],), float(data_range), dtype=torch.float64, device=a.device)
    c1 = (0.01 * rng)[:, None, None, None] ** 2
    c2 = (0.03 * rng)[:, None, None, None] ** 2
    pool = torch.nn.functional.avg_pool2d
    stack = torch.stack([a, b, a * a, b * b, a * b], 1)          # (B, 5, H, W)
    pooled: torch.Tensor = pool(stack, win_size, stride=1)
    mu_a, mu_b, m_aa, m_bb, m_ab = torch.split(pooled, 1, dim=1)
    n = win_size * win_size
    cov = n / (n - 1)                                             # sample covariance, as skimage
    var_a, var_b, cov_ab = cov * (m_aa - mu_a ** 2), cov * (m_bb - mu_b ** 2), cov * (m_ab - mu_a * mu_b)
    s = ((2 * mu_a * mu_b + c1) * (2 * cov_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def hog_similarity(a: Any, b: Any, **hog_kwargs: Any) -> torch.Tensor:
    """Pearson correlation of the HOG descriptors of each pair of maps, as in the paper:
    ``pearson(skimage.feature.hog(a_i), skimage.feature.hog(b_i))``, one image at a time on
    the CPU.

    Args:
        a, b: maps ``(B, H, W)``; with skimage's defaults (8x8-pixel cells, 3x3-cell blocks)
            H and W must be at least 24. HOG's block normalisation has an epsilon, so bring
            tiny-valued maps to a common scale first (``model_randomization`` min-max
            normalises them).
        **hog_kwargs: passed to ``skimage.feature.hog`` (``orientations=9``,
            ``pixels_per_cell=(8, 8)``, ``cells_per_block=(3, 3)``, ``block_norm="L2-Hys"`` by
            default).

    Returns:
        ``(B,)`` float64 on ``a.device``; NaN where a descriptor is constant.

    Shape:
        ``(B, H, W), (B, H, W) -> (B,)``.

    Example:
        >>> hog_similarity(m1, m2, pixels_per_cell=(16, 16))
    """
    from skimage.feature import hog

    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.ndim != 3 or a.shape != b.shape:
        raise XaiError(f"hog_similarity compares two batches of maps of shape (B, H, W); got {describe(a)} and "
                       f"{describe(b)}.")
    ppc = hog_kwargs.get("pixels_per_cell", (8, 8))
    cpb = hog_kwargs.get("cells_per_block", (3, 3))
    need = (ppc[0] * cpb[0], ppc[1] * cpb[1])
    if a.shape[1] < need[0] or a.shape[2] < need[1]:
        raise XaiError(f"hog_similarity with pixels_per_cell={tuple(ppc)} and cells_per_block={tuple(cpb)} needs "
                       f"maps of at least {need[0]}x{need[1]}; got {tuple(a.shape[1:])}.")
    an = a.detach().to("cpu", torch.float64).numpy()
    bn = b.detach().to("cpu", torch.float64).numpy()
    da = np.stack([hog(m, channel_axis=None, **hog_kwargs) for m in an])
    db = np.stack([hog(m, channel_axis=None, **hog_kwargs) for m in bn])
    return correlation(torch.from_numpy(da), torch.from_numpy(db), dim=1).to(a.device)


#: the similarity of each name in :data:`SIMILARITIES`; SSIM and HOG compare the maps min-max
#: normalised to [0, 1] (SSIM with data_range 1).
BUILTIN: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "spearman": lambda a, b: spearman(a, b),
    "spearman_abs": lambda a, b: spearman(a, b, absolute=True),
    "pearson": lambda a, b: pearson(a, b),
    "ssim": lambda a, b: ssim(minmax(a), minmax(b), data_range=1.0),
    "hog": lambda a, b: hog_similarity(minmax(a), minmax(b)),
}


__all__ = ["SIMILARITIES", "BUILTIN", "pearson", "rank", "spearman", "ssim", "hog_similarity"]
