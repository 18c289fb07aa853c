"""Sensitivity-n (Ancona et al. 2018): the correlation, over random subsets of n features,
between the relevance they hold and the score drop when they are removed.

Arguments shared by every metric (``model``, ``x``, ``attribution``, ``target``, ``reduce``,
``batch_size``, ``progress``) are documented in :mod:`xai_torch.metrics._common`. Randomness:
per image (the convention of :mod:`xai_torch.metrics._random`): the subsets come from one
``torch.Generator`` seeded with ``seed`` on the model's device, drawn image by image in fixed
blocks (one block of ``subsets`` draws per image and grid point), so image i's subsets depend only
on ``(seed, i)``, its size and the grid: a seed gives the same result bit-for-bit on the same device
whatever the other images in the batch and whatever ``batch_size`` is.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, check_input, check_positive_int, describe
from ..seeding import check_seed, make_generator
from ._common import Scorer, coerce_attribution, correlation, is_explainer, to_result
from ._random import Blocks, fill_baseline


@dataclass
class SensitivityNResult:
    """What :func:`sensitivity_n` returns (float64 tensors on ``x.device``).

    Attributes:
        correlation: ``(B, G)`` Pearson correlation between ``sums`` and ``deltas`` per image and
            grid point (NaN where either does not vary, e.g. n = all features).
        n: ``(G,)`` long, the subset sizes (in features).
        sums: ``(B, G, subsets)`` the relevance ``sum_{i in S} R_i`` of each drawn subset.
        deltas: ``(B, G, subsets)`` the score drop ``F(x) - F(x with S set to the baseline)``.
    """

    correlation: torch.Tensor
    n: torch.Tensor
    sums: torch.Tensor
    deltas: torch.Tensor


def sensitivity_n_grid(features: int, points: int = 10, top: float = 0.8) -> list[int]:
    """The default grid: ``points`` log-spaced subset sizes from 1 to ``top`` of ``features``
    (rounded, duplicates dropped)."""
    hi = max(1.0, top * features)
    return sorted({int(v) for v in np.rint(np.logspace(0.0, math.log10(hi), points))})


def feature_map(h: int, w: int, patch: int, device: Optional[torch.device] = None) -> tuple[torch.Tensor, int]:
    """``((H*W,) long, D)``: the feature of each pixel (row-major) for ``patch x patch`` cells
    (the last row / column of cells cropped at the edge), and the number of features D."""
    gw = -(-w // patch)
    gh = -(-h // patch)
    rows = torch.arange(h, device=device) // patch
    cols = torch.arange(w, device=device) // patch
    return (rows[:, None] * gw + cols[None, :]).reshape(-1), gh * gw


def subset_masks(keys: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(m, D)`` bool: in row i, the ``counts[i]`` features with the smallest ``keys`` (a
    uniformly random subset of that size when the keys are i.i.d. uniform)."""
    order = keys.argsort(dim=1)
    ranks = torch.arange(keys.shape[1], device=keys.device).expand_as(keys)
    return torch.zeros_like(keys, dtype=torch.bool).scatter_(1, order, ranks < counts[:, None])


def sensitivity_n(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *,
                  n: Union[None, int, Sequence[int], torch.Tensor] = None, subsets: int = 100,
                  baseline: Union[float, torch.Tensor] = 0.0, features: Union[str, int] = "pixel",
                  score: str = "logit", reduce: str = "sum",
                  seed: Optional[int] = 0, batch_size: Optional[int] = None,
                  progress: Optional[bool] = None) -> SensitivityNResult:
    """Sensitivity-n (Ancona et al. 2018): for each n on a grid, draw ``subsets`` random sets S of
    n features; per image and n, the Pearson correlation over the draws between the relevance
    ``sum_{i in S} R_i`` and the score drop ``F_c(x) - F_c(x with S set to the baseline)``.
    Higher is better; an attribution whose sums equal the drops for every S (gradient x input of
    a linear model with a zero baseline) has correlation 1 for every n.

    Args:
        model, x, attribution, target, reduce, batch_size, progress: see
            :mod:`xai_torch.metrics._common` (``reduce`` turns pixel attributions into one value
            per pixel; a feature's relevance is the sum over its pixels).
        n: subset sizes in features: ``None`` (about 10 log-spaced sizes from 1 to 80 % of the
            features, see :func:`sensitivity_n_grid`), an int, or a sequence of ints in [1, D].
        subsets: random subsets per image and n (at least 2).
        baseline: what removed features are set to, in model space: a number (0 = the dataset-mean
            colour for normalised inputs) or a tensor broadcastable to ``x``.
        features: ``"pixel"`` (one feature per pixel, all channels) or an int p: ``p x p`` patches
            (the last row / column cropped at the edge).
        score: the class score ``F_c`` (``"logit"`` by default; see ``SCORES``).
        seed: seed of the subsets (``None``: torch's global generator). Drawn per image: image i
            gets the same subsets alone, at position i of any batch, and for any ``batch_size``.

    Returns:
        :class:`SensitivityNResult`: ``correlation`` ``(B, G)``, the grid ``n`` ``(G,)``, and the
        ``sums`` and ``deltas`` ``(B, G, subsets)`` they come from.

    Cost:
        ``B * (G * subsets + 1)`` forwards, batched (chunks of at most ``batch_size`` images).

    Example:
        >>> attr = xt.InputXGradient(model)(x)
        >>> res = xt.metrics.sensitivity_n(model, x, attr, features=16, subsets=100)
        >>> res.correlation.mean(0)                          # the curve over res.n
    """
    x4, _ = check_input(x)
    subsets = check_positive_int(subsets, "subsets", minimum=2)
    seed = check_seed(seed)
    if features == "pixel":
        patch = 1
    elif isinstance(features, int) and not isinstance(features, bool) and features >= 1:
        patch = features
    else:
        raise XaiError(f"features must be 'pixel' or a patch size (int >= 1); got {describe(features)}.")
    b, c, h, w = x4.shape
    if patch > max(h, w):
        raise XaiError(f"features={patch} is larger than the images ({h} x {w}); use a smaller patch.")
    fmap, d = feature_map(h, w, patch)
    grid = _check_grid(n, d)
    base = fill_baseline(baseline, x4)
    rel = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=reduce,
                                                                     name="sensitivity_n")

    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress, name="sensitivity_n")
    dev = scorer.device
    xd = scorer.x
    rel = scorer.attributions(attribution, reduce=reduce) if rel is None else rel.to(dev)
    fmap = fmap.to(dev)
    base = base.to(dev)
    # relevance per feature (B, D)
    rel_f = torch.zeros(b, d, dtype=torch.float64, device=dev).index_add_(1, fmap, rel.flatten(1))
    counts = torch.tensor(grid, dtype=torch.long, device=dev)
    g = len(grid)
    gen = make_generator(seed, dev)
    # rows are image-major (image, grid point, draw); one block of keys per (image, grid point),
    # drawn in row order: image i's keys never depend on B (per-image draws, see _random)
    blocks = Blocks(lambda k: torch.rand((subsets, d), generator=gen, device=dev), subsets)
    per_image = g * subsets
    sums = torch.empty(b * per_image, dtype=torch.float64, device=dev)

    def make(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(start, stop, device=dev)
        rows = idx // per_image
        mask_f = subset_masks(blocks.rows(start, stop), counts[(idx // subsets) % g])
        sums[start:stop] = (mask_f * rel_f[rows]).sum(1)
        mask = mask_f[:, fmap].view(-1, 1, h, w)
        return torch.where(mask, base[rows], xd[rows]), rows

    scores = scorer.evaluate(b * per_image, make, desc="sensitivity_n")
    drops = scorer.clean.repeat_interleave(per_image) - scores
    sums = sums.view(b, g, subsets)
    drops = drops.view(b, g, subsets)
    return SensitivityNResult(to_result(correlation(sums, drops), x4), counts.to(x4.device),
                              to_result(sums, x4), to_result(drops, x4))


def _check_grid(n: object, d: int) -> list[int]:
    if n is None:
        return sensitivity_n_grid(d)
    items: Any = [n] if isinstance(n, numbers.Integral) else n
    if isinstance(items, torch.Tensor):
        items = items.tolist()
    ok = isinstance(items, (list, tuple)) and len(items) > 0 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= int(v) <= d for v in items)
    if not ok:
        raise XaiError(f"n must be None, an int or a non-empty sequence of ints in [1, {d}] (the number of "
                       f"features); got {describe(n)}.")
    return [int(v) for v in items]


__all__ = ["SensitivityNResult", "sensitivity_n", "sensitivity_n_grid", "feature_map", "subset_masks"]
