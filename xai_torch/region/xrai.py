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

The ranking is :mod:`xai_torch.region.xrai_rank` (one compiled loop on the CPU with numba,
tensor ops elsewhere); the segmentation :mod:`xai_torch.felzenszwalb` (one sorted graph for
the six scales).
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
from .xrai_rank import Ranking as Ranking
from .xrai_rank import rank
from .xrai_rank import rank_fast as rank_fast
from .xrai_rank import rank_full as rank_full
from .xrai_rank import rank_map as rank_map

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
        with small_ops():
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
        with small_ops():  # the ranking and its bookkeeping: small ops, one thread
            attr = base.max(dim=-3).values.reshape(-1, *x.shape[2:])  # the signed channel max, rows (B [* K])
            maps, ranks, regions, gains = [], [], [], []
            for row in range(attr.shape[0]):
                i = row // (k or 1)  # the image of this row: K targets share its segments
                ranked = rank(attr[row], masks[i], self.algorithm, self.area_threshold, self.min_pixel_diff)
                maps.append(ranked.map)
                ranks.append(ranked.ranks)
                regions.append(ranked.regions.to(x.device))
                gains.append(ranked.gains.to(x.device))
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
