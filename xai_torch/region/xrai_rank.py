"""XRAI's region ranking (PAIR saliency's "full" greedy and "fast" walk) on one image.

Both keep, for every region, the count and the attribution sum of its pixels not yet covered,
and update them from the (region, pixel) pairs that the last choice covered: every pair is
subtracted once, so a ranking never recomputes a region's mean from scratch.

* On the CPU with numba (``xai_torch[fast]``) the whole ranking is one compiled loop
  (:func:`_pairs`, :func:`_walk`): a ranking is a few milliseconds, and no thread waits on another.
* Elsewhere (a GPU, or no numba) it is a loop of tensor ops on the masks' device, run under
  :func:`xai_torch.threads.small_ops`.

Both give the same regions in the same order: ties go to the earlier region (PAIR's strict
``>``), the "fast" order is a stable sort, and every sum is accumulated in the same order
(per region, pixels ascending).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from ..felzenszwalb import Array, compiled, numba_available
from ..threads import small_ops

_F64 = torch.float64


#: ``(map, regions, gains)`` of one image: ``(H, W)`` float64 densities, the ranked regions'
#: ``(H, W)`` bool masks and their ``()`` gains.
Ranking = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]


class _Uncovered:
    """For every region, the count and the attribution sum of its pixels not yet covered.

    The (pixel, region) membership pairs are listed once, grouped by pixel (a sparse
    pixels x regions matrix); covering pixels gathers just their pairs and subtracts them, so a
    whole ranking touches every pair once.
    """

    def __init__(self, a: torch.Tensor, masks: torch.Tensor) -> None:
        m = masks.shape[0]
        pixel, region = torch.nonzero(masks.reshape(m, -1).t(), as_tuple=True)  # sorted by pixel
        self.region, self.a, self.m = region, a, m
        self.start = torch.cumsum(torch.bincount(pixel, minlength=a.shape[0]), 0)
        self.length = torch.bincount(pixel, minlength=a.shape[0])
        self.start -= self.length
        self.cnt = torch.bincount(region, minlength=m)
        self.sums = torch.zeros(m, dtype=_F64, device=a.device).index_add_(0, region, a[pixel])

    def cover(self, new: torch.Tensor) -> None:
        idx = torch.nonzero(new).flatten()
        length = self.length[idx]
        first = torch.repeat_interleave(self.start[idx], length)
        offset = torch.arange(first.shape[0], device=idx.device) - torch.repeat_interleave(
            torch.cumsum(length, 0) - length, length)
        region = self.region[first + offset]
        self.cnt -= torch.bincount(region, minlength=self.m)
        self.sums.index_add_(0, region, -torch.repeat_interleave(self.a[idx], length))


def _torch_full(attr: torch.Tensor, masks: torch.Tensor, area_threshold: float = 1.0,
              min_pixel_diff: int = 50) -> Ranking:
    """The "full" greedy in tensor ops (any device)."""
    h, w = attr.shape
    a = attr.reshape(-1).to(_F64)
    left = _Uncovered(a, masks)
    remaining = torch.ones(masks.shape[0], dtype=torch.bool, device=attr.device)
    covered = torch.zeros(h * w, dtype=torch.bool, device=attr.device)
    out = torch.full((h * w,), float("-inf"), dtype=_F64, device=attr.device)
    n_covered = 0
    regions: list[torch.Tensor] = []
    gains: list[torch.Tensor] = []
    while n_covered / (h * w) <= area_threshold:
        remaining &= left.cnt >= min_pixel_diff
        if not bool(remaining.any()):
            break
        gain = torch.where(remaining, left.sums / left.cnt.clamp_min(1), torch.full_like(left.sums, float("-inf")))
        best = int(torch.argmax(gain))  # the first maximum, as PAIR's strict ">"
        new = masks[best].reshape(-1) & ~covered
        out[new] = gain[best]
        regions.append(new.view(h, w))
        gains.append(gain[best])
        left.cover(new)
        covered |= new
        n_covered += int(new.sum())
        remaining[best] = False
    return _finish(a, out, regions, gains, h, w)


def _torch_fast(attr: torch.Tensor, masks: torch.Tensor, min_pixel_diff: int = 50) -> Ranking:
    """The "fast" walk in tensor ops (any device)."""
    h, w = attr.shape
    a = attr.reshape(-1).to(_F64)
    left = _Uncovered(a, masks)
    dens = torch.where(left.cnt > 0, left.sums / left.cnt.clamp_min(1), torch.full_like(left.sums, float("-inf")))
    order = torch.sort(dens, descending=True, stable=True).indices.tolist()
    covered = torch.zeros(h * w, dtype=torch.bool, device=attr.device)
    out = torch.full((h * w,), float("-inf"), dtype=_F64, device=attr.device)
    regions: list[torch.Tensor] = []
    gains: list[torch.Tensor] = []
    counts = left.cnt.tolist()
    for m in order:
        if counts[m] < max(min_pixel_diff, 1):  # a region with no new pixel has no density
            continue
        new = masks[m].reshape(-1) & ~covered
        gain = left.sums[m] / left.cnt[m]
        out[new] = gain
        regions.append(new.view(h, w))
        gains.append(gain)
        covered |= new
        left.cover(new)
        counts = left.cnt.tolist()
    return _finish(a, out, regions, gains, h, w)


def _finish(a: torch.Tensor, out: torch.Tensor, regions: list[torch.Tensor], gains: list[torch.Tensor], h: int,
            w: int) -> Ranking:
    rest = out == float("-inf")
    if bool(rest.any()):
        out[rest] = a[rest].mean()
    order = sorted(range(len(gains)), key=lambda i: -float(gains[i]))  # stable, as PAIR's sorted
    regions = [regions[i] for i in order]
    gains = [gains[i] for i in order]
    if bool(rest.any()):
        regions.append(rest.view(h, w))
        gains.append(a[rest].mean())
    return out.view(h, w), regions, gains


def rank_map(regions: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """``(H, W)`` long ranks 1..N from ordered regions (0 where no region covers)."""
    ranks = torch.zeros(shape, dtype=torch.long, device=regions[0].device if regions else None)
    for i, region in enumerate(regions):
        ranks[region] = i + 1
    return ranks



class Ranked(NamedTuple):
    """One image's ranking: ``map`` ``(H, W)`` float64 densities, ``regions`` ``(N, H, W)``
    bool (new pixels only, densest first, the uncovered rest last), ``gains`` ``(N,)`` and
    ``ranks`` ``(H, W)`` long (1 = densest region)."""

    map: torch.Tensor
    regions: torch.Tensor
    gains: torch.Tensor
    ranks: torch.Tensor


@compiled
def _cover(r: int, g: float, s: int, rstart: Array, rpix: Array, pstart: Array, preg: Array, a: Array,
           covered: Array, out: Array, step: Array, cnt: Array, sums: Array) -> int:  # pragma: no cover - compiled
    """Cover region ``r``'s new pixels with gain ``g`` at step ``s``; returns how many."""
    n = 0
    for i in range(rstart[r], rstart[r + 1]):
        q = rpix[i]
        if not covered[q]:
            covered[q] = True
            out[q] = g
            step[q] = s
            n += 1
            for j in range(pstart[q], pstart[q + 1]):
                cnt[preg[j]] -= 1
                sums[preg[j]] -= a[q]
    return n


@compiled
def _pairs(a: Array, masks: Array) -> tuple[Array, Array, Array, Array, Array, Array]:  # pragma: no cover
    """The (region, pixel) pairs both ways (CSR: ``rstart``/``rpix`` by region, ``pstart``/
    ``preg`` by pixel) and every region's pixel count and attribution sum (pixels ascending)."""
    m, p = masks.shape
    cnt = np.zeros(m, np.int64)
    pstart = np.zeros(p + 1, np.int64)
    for r in range(m):
        for q in range(p):
            if masks[r, q]:
                cnt[r] += 1
                pstart[q + 1] += 1
    rstart = np.zeros(m + 1, np.int64)
    for r in range(m):
        rstart[r + 1] = rstart[r] + cnt[r]
    for q in range(p):
        pstart[q + 1] += pstart[q]
    rpix = np.empty(rstart[m], np.int64)
    preg = np.empty(rstart[m], np.int64)
    fill = pstart[:p].copy()
    sums = np.zeros(m)
    k = 0
    for r in range(m):
        for q in range(p):
            if masks[r, q]:
                rpix[k] = q
                k += 1
                preg[fill[q]] = r
                fill[q] += 1
                sums[r] += a[q]
    return cnt, sums, rstart, rpix, pstart, preg


@compiled
def _walk(order: Array, full: bool, area_threshold: float, min_pixel_diff: int, cnt: Array, sums: Array,
          rstart: Array, rpix: Array, pstart: Array, preg: Array, a: Array, out: Array,
          step: Array) -> Array:  # pragma: no cover - compiled
    """The ranking: "full" picks the densest remaining region each time, "fast" walks
    ``order``; fills ``out`` (densities) and ``step`` (which choice covered each pixel, -1 for
    none) and returns the gains in the order of the choices."""
    m, p = cnt.shape[0], a.shape[0]
    covered = np.zeros(p, np.bool_)
    gains = np.empty(m)
    s = 0
    if full:
        remaining = np.ones(m, np.bool_)
        n_covered = 0
        while n_covered / p <= area_threshold:
            best, top = -1, 0.0
            for r in range(m):
                if remaining[r]:
                    if cnt[r] < min_pixel_diff:
                        remaining[r] = False
                        continue
                    g = sums[r] / max(cnt[r], 1)
                    if best < 0 or g > top:  # the first maximum, as PAIR's strict ">"
                        best, top = r, g
            if best < 0:
                break
            n_covered += _cover(best, top, s, rstart, rpix, pstart, preg, a, covered, out, step, cnt, sums)
            gains[s] = top
            s += 1
            remaining[best] = False
    else:
        for i in range(order.shape[0]):
            r = order[i]
            if cnt[r] < max(min_pixel_diff, 1):  # a region with no new pixel has no density
                continue
            g = sums[r] / cnt[r]
            _cover(r, g, s, rstart, rpix, pstart, preg, a, covered, out, step, cnt, sums)
            gains[s] = g
            s += 1
    return gains[:s]


def rank(attr: torch.Tensor, masks: torch.Tensor, algorithm: str = "full", area_threshold: float = 1.0,
         min_pixel_diff: int = 50) -> Ranked:
    """XRAI's ranking of one image (see the module doc).

    Args:
        attr: ``(H, W)`` attribution.
        masks: ``(M, H, W)`` bool candidate regions.
        algorithm: ``"full"`` (greedy on new-pixel density, until ``area_threshold`` of the
            image is covered) or ``"fast"`` (regions walked once by whole-region density).
        min_pixel_diff: regions adding fewer new pixels are dropped.

    Returns:
        :class:`Ranked`, on ``attr``'s device.
    """
    h, w = attr.shape
    with small_ops():
        if attr.device.type != "cpu" or masks.device.type != "cpu" or not numba_available():
            if algorithm == "full":
                m, reg, g = _torch_full(attr, masks, area_threshold, min_pixel_diff)
            else:
                m, reg, g = _torch_fast(attr, masks, min_pixel_diff)
            regions = torch.stack(reg) if reg else torch.zeros((0, h, w), dtype=torch.bool, device=attr.device)
            gains = torch.stack(g) if g else torch.zeros(0, dtype=_F64, device=attr.device)
            return Ranked(m, regions, gains, rank_map(reg, (h, w)).to(attr.device))
        a = attr.detach().reshape(-1).to(_F64).contiguous()
        out = np.full(h * w, -np.inf)
        step = np.full(h * w, -1, dtype=np.int64)
        cnt, sums, *pairs = _pairs(a.numpy(), masks.reshape(masks.shape[0], -1).contiguous().numpy())
        walk = np.empty(0, dtype=np.int64)
        if algorithm == "fast":  # whole-region density, empty regions last, ties in region order
            whole = np.where(cnt > 0, sums / np.maximum(cnt, 1), -np.inf)
            walk = np.argsort(-whole, kind="stable").astype(np.int64)
        found = _walk(walk, algorithm == "full", float(area_threshold), int(min_pixel_diff), cnt, sums, *pairs,
                      a.numpy(), out, step)
        dens, chosen, gains = torch.from_numpy(out), torch.from_numpy(step), torch.from_numpy(found)
        order = torch.sort(-gains, stable=True).indices  # densest first; ties keep the order of choice
        position = torch.empty_like(order)
        position[order] = torch.arange(order.shape[0])
        rest = chosen < 0
        ranks = position[chosen.clamp_min(0)] + 1
        regions = chosen[None] == order[:, None]
        gains = gains[order]
        if bool(rest.any()):
            mean = a[rest].mean()
            dens[rest] = mean
            ranks[rest] = order.shape[0] + 1
            regions = torch.cat([regions, rest[None]])
            gains = torch.cat([gains, mean[None]])
        return Ranked(dens.view(h, w), regions.view(-1, h, w), gains, ranks.view(h, w))


def rank_full(attr: torch.Tensor, masks: torch.Tensor, area_threshold: float = 1.0,
              min_pixel_diff: int = 50) -> Ranking:
    """PAIR's "full" XRAI greedy on one image.

    Args:
        attr: ``(H, W)`` attribution.
        masks: ``(M, H, W)`` bool candidate regions.

    Returns:
        ``(map, regions, gains)``: the ``(H, W)`` float64 density map, and the ranked regions
        (new pixels only, ``(H, W)`` bool each, densest first, the uncovered rest last) with
        their gains. :func:`rank` also gives the ranks, as stacked tensors.
    """
    res = rank(attr, masks, "full", area_threshold, min_pixel_diff)
    return res.map, list(res.regions.unbind()), list(res.gains.unbind())


def rank_fast(attr: torch.Tensor, masks: torch.Tensor, min_pixel_diff: int = 50) -> Ranking:
    """PAIR's "fast" XRAI on one image: regions sorted once by whole-region density (empty ones
    last, stable), then walked, each writing the density of its new pixels; returns as
    :func:`rank_full`."""
    res = rank(attr, masks, "fast", min_pixel_diff=min_pixel_diff)
    return res.map, list(res.regions.unbind()), list(res.gains.unbind())


__all__ = ["Ranked", "Ranking", "rank", "rank_full", "rank_fast", "rank_map"]
