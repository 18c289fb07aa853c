"""XRAI (Kapishnikov et al. 2019): rank image regions by the attribution density they add.

PAIR saliency's algorithm, with its defaults, vectorised on the model's device:

1. a base attribution, by default Integrated Gradients (``steps``) averaged over two
   baselines, each image's scalar min and max (PAIR's ``_make_baselines``), reduced over
   channels by the **signed max**;
2. an oversegmentation: Felzenszwalb at six scales, every segment dilated
   (:func:`xai_torch.segmentation.multiscale`), or the user's ``segments=``;
3. a greedy ranking: repeatedly add the region whose *new* pixels have the highest mean
   attribution ("full"), or walk the regions once in order of whole-region density ("fast").
   Regions adding fewer than ``min_pixel_diff`` new pixels are dropped; ties go to the earlier
   region, as in PAIR.

The greedy step keeps, for every region, the count and the attribution sum of its pixels not
yet covered, and updates both from the (region, pixel) pairs that the last choice covered:
every pair is subtracted once, so the ranking never recomputes a region's mean from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import XaiError, check_choice, check_positive_int, describe
from ..explainer import Explainer, Explanation
from ..hooks import HookSession
from ..path.ig import IntegratedGradients
from ..runner import result_dtype
from ..segmentation import check_segments, labels_to_masks, multiscale
from ..targets import Target
from ..threads import small_ops

_F64 = torch.float64


@dataclass
class XRAIExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` of XRAI.

    Attributes:
        attributions: ``(B, 1, H, W)`` the XRAI map: every pixel holds the attribution density
            (mean base attribution over the region's new pixels) of the region that added it.
        ranks: ``(B, 1, H, W)`` long, the rank of each pixel's region, 1 = most important.
        regions: per image (per image and target, row-major, for ``(B, K)`` targets),
            ``(N, H, W)`` bool masks of the ranked regions (new pixels only, most important
            first; the uncovered rest last).
        gains: likewise, ``(N,)`` the density of each region in ``regions``.
        base_attribution: ``(B, C, H, W)`` the attribution that was ranked (pass it back as
            ``base_attribution=`` to re-rank without the IG cost).
        segments: per image, the ``(M, H, W)`` candidate masks.
    """

    ranks: Optional[torch.Tensor] = None
    regions: Optional[list[torch.Tensor]] = None
    gains: Optional[list[torch.Tensor]] = None
    base_attribution: Optional[torch.Tensor] = None
    segments: Optional[list[torch.Tensor]] = None


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


@small_ops()  # a loop of small ops: one thread (no oversubscription on a busy machine)
def rank_full(attr: torch.Tensor, masks: torch.Tensor, area_threshold: float = 1.0,
              min_pixel_diff: int = 50) -> Ranking:
    """PAIR's "full" XRAI greedy on one image (pure tensor code).

    Args:
        attr: ``(H, W)`` attribution.
        masks: ``(M, H, W)`` bool candidate regions.

    Returns:
        ``(map, regions, gains)``: the ``(H, W)`` float64 density map, and the added regions
        (new pixels only, ``(H, W)`` bool each) with their gains, in the order they were added.
    """
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


@small_ops()
def rank_fast(attr: torch.Tensor, masks: torch.Tensor, min_pixel_diff: int = 50) -> Ranking:
    """PAIR's "fast" XRAI on one image: regions sorted once by whole-region density (empty ones
    last, stable), then walked, each writing the density of its new pixels. The new-pixel
    counts and sums are kept up to date incrementally, so a skipped region costs nothing."""
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


class XRAI(Explainer):
    """XRAI (Kapishnikov et al. 2019) with PAIR saliency's defaults: the same image and base
    attribution give the same map.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        steps: IG steps per baseline for the base attribution (Gauss-Legendre; PAIR uses a
            linspace rule with both ends at full weight).
        algorithm: ``"full"`` (greedy on new-pixel density) or ``"fast"`` (one sort).
        area_threshold: "full" stops once this fraction of the image is covered (the region
            crossing it is still added); 1.0 ranks everything.
        baselines: IG baselines (see :mod:`xai_torch.space`); default PAIR's: each
            image's scalar min and max.
        min_pixel_diff: regions adding fewer new pixels are dropped (PAIR's 50).

    Call arguments:
        base_attribution: ``(B, C, H, W)`` attribution to rank instead of IG (reduced over
            channels by the signed max, as PAIR).
        segments: candidate regions instead of the multiscale Felzenszwalb masks: an
            ``(H, W)`` / ``(B, H, W)`` label map, or per image an ``(M, H, W)`` bool tensor
            (a list for several images); used as given (no dilation).
        image: pixel-space images to segment instead of ``x`` (see
            :mod:`xai_torch.segmentation`; PAIR segments the model input itself).

    Returns:
        ``(B, 1, H, W)`` region-density maps (``(B, K, 1, H, W)`` for ``(B, K)`` targets, which
        share each image's segments); ``explain`` adds the ranks, the ordered regions and the
        base attribution (:class:`XRAIExplanation`).

    Cost:
        ``2 * steps`` forward + backward passes per image (none with ``base_attribution``),
        six Felzenszwalb segmentations (CPU) and one pass over the regions x pixels matrix.

    Example:
        >>> xrai = xt.XRAI(model)
        >>> res = xrai.explain(x, target=281)
        >>> keep = xt.region.top_fraction(res.attributions, 0.3)   # the top 30 % of the image
    """

    call_keywords: tuple[str, ...] = ("base_attribution", "segments", "image")

    def __init__(self, model: Any, *, steps: int = 100, algorithm: str = "full", area_threshold: float = 1.0,
                 baselines: Any = None, min_pixel_diff: int = 50, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.steps = check_positive_int(steps, "steps")
        self.algorithm = check_choice(algorithm, "algorithm", ("full", "fast"))
        if isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, float)) \
                or not 0 < area_threshold <= 1:
            raise XaiError(f"area_threshold must lie in (0, 1]; got {describe(area_threshold)}.")
        self.area_threshold = float(area_threshold)
        self.baselines = baselines
        self.min_pixel_diff = check_positive_int(min_pixel_diff, "min_pixel_diff", minimum=0)

    def _config(self) -> dict[str, Any]:
        cfg = {"steps": self.steps, "algorithm": self.algorithm, "area_threshold": self.area_threshold,
               "baselines": self.baselines, "min_pixel_diff": self.min_pixel_diff}
        return {**cfg, **super()._config()}

    def _masks(self, segments: Any, x: torch.Tensor, image: Any) -> list[torch.Tensor]:
        b, _, h, w = x.shape
        if segments is None:
            return multiscale(x, image=image)
        if isinstance(segments, (list, tuple)):
            if len(segments) != b:
                raise XaiError(f"segments is a list of {len(segments)} mask sets but x has {b} images.")
            out = []
            for m in segments:
                m = torch.as_tensor(m).to(x.device)
                if m.dtype != torch.bool or m.ndim != 3 or tuple(m.shape[1:]) != (h, w):
                    raise XaiError(f"per-image segments must be (M, {h}, {w}) bool masks; got {describe(m)}.")
                out.append(m)
            return out
        seg = torch.as_tensor(segments).to(x.device)
        if seg.dtype == torch.bool and seg.ndim == 3 and b == 1 and tuple(seg.shape[1:]) == (h, w):
            return [seg]
        labels = check_segments(seg, x, minimum=1)
        return [labels_to_masks(lab) for lab in labels]

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 base_attribution: Any = None, segments: Any = None, image: Any = None,
                 **kwargs: Any) -> XRAIExplanation:
        runner = self.runner(x, target)
        device = runner.device
        xd = runner.place(x)
        k = target.k
        if base_attribution is not None:
            base = torch.as_tensor(base_attribution)
            if base.ndim == 3 and x.shape[0] == 1:  # unbatched, like an unbatched x
                base = base[None]
            expect = (x.shape[0], *((k,) if k is not None else ()), *x.shape[1:])
            if tuple(base.shape) != expect:
                raise XaiError(f"base_attribution must have the shape of x (with the target dim for (B, K) "
                               f"targets), {expect}; got {tuple(base.shape)}.")
            base = base.detach().to(device)
        masks = self._masks(segments, xd, image)  # bad segments fail before the IG cost
        scores = classes = None
        if base_attribution is None:
            baselines = self.baselines if self.baselines is not None else [_image_min, _image_max]
            ig = IntegratedGradients(self.model, steps=self.steps, batch_size=self.batch_size, progress=self.progress)
            ig.select_output = self.select_output  # scores what this explainer's select_output= picks
            res = ig._run(xd, target, {"baseline": baselines}, details=details)
            base, scores, classes = res.attributions, res.scores, res.targets
        elif details:
            _, scores, classes, _ = runner.pin(xd, target)
        attr = base.max(dim=-3).values.reshape(-1, *x.shape[2:])  # the signed channel max, rows (B [* K])
        maps, ranks, regions, gains = [], [], [], []
        for row in range(attr.shape[0]):
            i = row // (k or 1)  # the image of this row: K targets share its segments
            if self.algorithm == "full":
                m, reg, g = rank_full(attr[row], masks[i], self.area_threshold, self.min_pixel_diff)
            else:
                m, reg, g = rank_fast(attr[row], masks[i], self.min_pixel_diff)
            maps.append(m)
            ranks.append(rank_map(reg, m.shape))
            regions.append(torch.stack(reg).to(x.device) if reg else torch.zeros((0, *m.shape), dtype=torch.bool))
            gains.append(torch.stack(g).to(x.device) if g else torch.zeros(0, dtype=_F64))
        dtype = result_dtype(x)
        lead = (x.shape[0], k) if k is not None else (x.shape[0],)
        return XRAIExplanation(
            attributions=torch.stack(maps).view(*lead, 1, *x.shape[2:]).to(device=x.device, dtype=dtype),
            targets=None if classes is None else classes.to(x.device),
            scores=None if scores is None else scores.to(x.device),
            ranks=torch.stack(ranks).view(*lead, 1, *x.shape[2:]).to(x.device), regions=regions, gains=gains,
            base_attribution=base.to(x.device), segments=[m.to(x.device) for m in masks],
        )


def _image_min(x: torch.Tensor) -> torch.Tensor:
    return x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)


def _image_max(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
