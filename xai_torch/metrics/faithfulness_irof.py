"""IROF, Iterative Removal Of Features (Rieger & Hansen 2020), batched: superpixels are removed
from the most to the least relevant (mean relevance per superpixel) and the area over the curve of
the normalised class score is reported.

Arguments shared by every metric are in :mod:`xai_torch.metrics._common`; ``baseline`` and
``absolute`` in :mod:`xai_torch.metrics.faithfulness_base`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, check_input
from ..segmentation import check_segments, get_segmenter
from ._common import coerce_attribution, is_explainer, to_result
from .faithfulness import causal_auc
from .faithfulness_base import curve_scores, feature_relevance, fill_images, grouped_sums, order_ranks, trapezoid
from .flipping import _prepare


@dataclass
class IrofResult:
    """What :func:`irof` returns (float64 tensors on ``x.device``).

    Attributes:
        score: ``(B,)`` the area over the curve: in [0, 1] by default (1 - the trapezoid area of
            ``curve`` over [0, 1]); ``S - np.trapz(curve[1:S+1])`` with ``quantus_compat=True``.
        curve: ``(B, S_max + 1)`` ``F(x_k) / F(x)`` after k = 0..S superpixels were removed (the
            first point is 1; NaN after an image's last superpixel).
        segments: ``(B,)`` long, the number of superpixels S of each image.
        model_calls: images forwarded, ``B + sum(S)``.
    """

    score: torch.Tensor
    curve: torch.Tensor
    segments: torch.Tensor
    model_calls: int


def quantus_slic(x: torch.Tensor) -> torch.Tensor:
    """Quantus's IROF segmentation: scikit-image ``slic(image, start_label=0)`` with its defaults
    (100 segments, compactness 10, no smoothing) on each raw ``(H, W, C)`` image of ``x``, without
    rescaling. Returns ``(B, H, W)`` long labels on ``x.device``."""
    from skimage.segmentation import slic

    imgs = np.moveaxis(x.detach().to("cpu", torch.float64).numpy(), 1, -1)
    labels = [slic(im, start_label=0) for im in imgs]
    return torch.from_numpy(np.stack(labels).astype(np.int64)).to(x.device)


def _segments(segments: Any, x: torch.Tensor) -> torch.Tensor:
    if segments is None:
        return check_segments(quantus_slic(x), x)
    if isinstance(segments, str) or (callable(segments) and not isinstance(segments, (torch.Tensor, np.ndarray))):
        return check_segments(get_segmenter(segments)(x.detach()), x)
    return check_segments(segments, x)


def irof(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, segments: Any = None,
         baseline: Union[str, float, torch.Tensor] = "mean", absolute: bool = False, score: str = "softmax",
         quantus_compat: bool = False, batch_size: Optional[int] = None,
         progress: Optional[bool] = None) -> IrofResult:
    """IROF (Rieger & Hansen 2020): the superpixels of each image are sorted by their mean
    relevance (all channels) and replaced by the baseline one after the other, most relevant
    first; the curve is the class score divided by the clean score, and the score is the area
    over it. Higher is better.

    Defaults follow Quantus 0.6 ``IROF``: SLIC superpixels (:func:`quantus_slic`), ``"mean"``
    baseline, ``abs=False``, softmax. Differences, on purpose (the paper's definition):

    * the score is the area over the curve on [0, 1] including the clean point,
      ``1 - trapz([1, c_1, ..., c_S]) / S``. Quantus returns ``S - trapz([c_1, ..., c_S], dx=1)``:
      off by one (a map whose removals change nothing scores 1, not 0) and on the scale of S;
      with several images of different S its zero padding adds ``c_S / 2`` to the shorter ones.
      ``quantus_compat=True`` gives Quantus's value for each image alone.
    * ``"mean"`` is each image's own mean. Quantus takes the mean of the whole batch of partly
      perturbed images, recomputed after every removal, so an image's score depends on the other
      images and the fill drifts. With a numeric baseline the scores equal Quantus to 1e-5
      (Quantus divides and integrates in float32).
    * Quantus 0.6's IROF only runs on one-channel images (its mask is ``(B, 1, H, W)`` and its
      fill function asserts the image's shape) and calls ``np.trapz``, removed in numpy 2.

    Args:
        segments: ``None`` (Quantus's SLIC), a segmenter name of :mod:`xai_torch.segmentation`
            (``"slic"``, ``"felzenszwalb"``, ``"quickshift"``) or callable ``x -> (B, H, W)``
            labels, or the labels themselves ``(H, W)`` / ``(B, H, W)``.
        baseline, absolute: see :mod:`xai_torch.metrics.faithfulness_base`.
        score: the class score (``"softmax"``, Quantus's).
        quantus_compat: return Quantus's per-image score instead of the paper's.

    Returns:
        :class:`IrofResult`.

    Cost:
        ``B + sum(S)`` forwards, batched.

    Example:
        >>> xt.metrics.irof(model, x, attr, segments="slic").score
    """
    x4, _ = check_input(x)
    fill = fill_images(baseline, x4.detach())
    if not is_explainer(attribution):
        coerce_attribution(attribution, x4, reduce=None, name="irof")
    seg = _segments(segments, x4)
    x4, scorer, attr = _prepare(model, x4, attribution, target, score, batch_size, progress, "irof")
    dev = scorer.device
    seg = seg.to(dev)
    b = seg.shape[0]
    counts = seg.flatten(1).amax(1) + 1                                              # (B,) S per image
    smax = int(counts.max())
    rel = feature_relevance(attr, scorer.x, "element", "sum", absolute)              # (B, C', H, W)
    group = seg[:, None].expand_as(rel)
    sizes = grouped_sums(torch.ones_like(rel), group, smax)
    means = grouped_sums(rel, group, smax) / sizes.clamp(min=1)
    means = torch.where(sizes > 0, means, torch.full_like(means, -torch.inf))        # absent labels go last
    pixel_rank = order_ranks(means, descending=True).gather(1, seg.flatten(1)).view(b, 1, *seg.shape[1:])
    image = torch.arange(b, device=dev).repeat_interleave(counts)
    starts = torch.cumsum(counts, 0) - counts
    changed = torch.arange(int(counts.sum()), device=dev) - starts.repeat_interleave(counts) + 1
    if bool((scorer.clean == 0).any()):
        raise XaiError("irof divides by the clean score, and an image scores exactly 0 for its target; "
                       "use score='softmax' or another target.")
    scores = curve_scores(scorer, scorer.x, fill.to(dev), pixel_rank, image, changed, "irof")
    curve = torch.full((b, smax + 1), float("nan"), dtype=torch.float64, device=dev)
    curve[:, 0] = 1.0
    curve[image, changed] = scores / scorer.clean[image]
    out = torch.empty(b, dtype=torch.float64, device=dev)
    for i in range(b):
        s = int(counts[i])
        c = curve[i, :s + 1]
        out[i] = s - trapezoid(c[1:]) if quantus_compat else 1.0 - causal_auc(c)
    return IrofResult(to_result(out, x4), to_result(curve, x4), counts.to(x4.device), scorer.calls)


__all__ = ["IrofResult", "irof", "quantus_slic"]
