"""Faithfulness correlation (Bhatt et al. 2020) and monotonicity correlation (Nguyen & Martinez
2020), as Quantus 0.6 ``FaithfulnessCorrelation`` and ``MonotonicityCorrelation``, batched.

Arguments shared by every metric (``model``, ``x``, ``attribution``, ``target``, ``reduce``,
``batch_size``, ``progress``) are documented in :mod:`xai_torch.metrics._common`; ``features``,
``baseline`` (Quantus ``perturb_baseline``) and ``absolute`` (Quantus ``abs``) in
:mod:`xai_torch.metrics.faithfulness_base`. Quantus's ``normalise=True`` (division by the maximum
absolute value) is not applied: both metrics are correlations, unchanged by a positive scale.
Randomness follows :mod:`xai_torch.metrics._random`: one generator seeded with ``seed`` on the
model's device, one block of draws per image, so image i's draws depend only on ``(seed, i)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, check_input, check_positive_int, describe
from ..seeding import check_seed, make_generator
from ._common import Scorer, coerce_attribution, correlation, is_explainer, to_result
from ._random import Blocks
from .faithfulness_base import feature_relevance, fill_images, grouped_sums, order_ranks
from .similarity import rank as average_ranks


@dataclass
class FaithfulnessCorrelationResult:
    """What :func:`faithfulness_correlation` returns (float64 tensors on ``x.device``).

    Attributes:
        correlation: ``(B,)`` Pearson correlation over the runs between ``sums`` and ``deltas``
            (NaN where either is constant).
        sums: ``(B, runs)`` the relevance of each random subset.
        deltas: ``(B, runs)`` ``F(x) - F(x with the subset replaced by the baseline)``.
        model_calls: images forwarded, ``B * (runs + 1)``.
    """

    correlation: torch.Tensor
    sums: torch.Tensor
    deltas: torch.Tensor
    model_calls: int


def _layout(x: torch.Tensor, features: str) -> tuple[int, int]:
    """``(groups, F)``: x is viewed as ``(B, groups, F)`` with the features on the last dim."""
    b, c, h, w = x.shape
    return (1, c * h * w) if features == "element" else (c, h * w)


def _check_indices(indices: Any, b: int, f: int) -> torch.Tensor:
    if not isinstance(indices, torch.Tensor) or indices.ndim != 3 or indices.shape[0] != b or \
            indices.is_floating_point() or indices.dtype == torch.bool:
        raise XaiError(f"indices must be a (B, runs, subset_size) integer tensor with B = {b}; "
                       f"got {describe(indices)}.")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= f):
        raise XaiError(f"indices must lie in [0, {f - 1}] (the number of features); got "
                       f"[{int(indices.min())}, {int(indices.max())}].")
    return indices.long()


def faithfulness_correlation(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *,
                             runs: int = 100, subset_size: int = 224,
                             baseline: Union[str, float, torch.Tensor] = "black", features: str = "element",
                             absolute: bool = False, score: str = "logit", reduce: str = "sum",
                             indices: Optional[torch.Tensor] = None, seed: Optional[int] = 0,
                             batch_size: Optional[int] = None,
                             progress: Optional[bool] = None) -> FaithfulnessCorrelationResult:
    """Faithfulness correlation (Bhatt et al. 2020): over ``runs`` random subsets S of
    ``subset_size`` features, the Pearson correlation between the relevance ``sum_{i in S} R_i``
    and the score drop ``F_c(x) - F_c(x with S set to the baseline)``. Higher is better.

    Defaults are Quantus 0.6's: 100 runs of 224 features, ``"black"`` baseline (the image's
    minimum), element features, ``abs=False``, logits (its ``softmax=False``). Equal to Quantus
    given the same subsets (``indices``) to 1e-6.

    Args:
        runs: random subsets per image (at least 2).
        subset_size: features per subset, at most the number of features.
        baseline, features, absolute: see :mod:`xai_torch.metrics.faithfulness_base`.
        score: the class score ``F_c`` (``"logit"``; see ``SCORES``).
        indices: optional ``(B, runs, subset_size)`` feature indices (into the flattened
            ``(C*H*W)`` elements or ``(H*W)`` pixels) to use instead of random subsets.
        seed: seed of the subsets (``None``: torch's global generator).

    Returns:
        :class:`FaithfulnessCorrelationResult`.

    Cost:
        ``B * (runs + 1)`` forwards, batched.

    Example:
        >>> res = xt.metrics.faithfulness_correlation(model, x, xt.Saliency(model), runs=50)
        >>> res.correlation                                  # (B,)
    """
    x4, _ = check_input(x)
    b = x4.shape[0]
    if features not in ("element", "pixel"):
        raise XaiError(f"features must be 'element' or 'pixel'; got {describe(features)}.")
    groups, f = _layout(x4, features)
    if indices is not None:
        idx_given: Optional[torch.Tensor] = _check_indices(indices, b, f)
        runs, subset_size = int(indices.shape[1]), int(indices.shape[2])
    else:
        idx_given = None
    runs = check_positive_int(runs, "runs", minimum=2)
    subset_size = check_positive_int(subset_size, "subset_size")
    if subset_size > f:
        raise XaiError(f"subset_size={subset_size} is larger than the {f} features of each image "
                       f"({features} features of {tuple(x4.shape[1:])}); use a smaller subset.")
    seed = check_seed(seed)
    fill = fill_images(baseline, x4.detach())
    attr = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=None,
                                                                      name="faithfulness_correlation")
    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress,
                    name="faithfulness_correlation")
    dev = scorer.device
    attr = scorer.attributions(attribution, reduce=None) if attr is None else attr.to(dev)
    rel = feature_relevance(attr, scorer.x, features, reduce, absolute).flatten(1)      # (B, F)
    xv = scorer.x.reshape(b, groups, f)
    fv = fill.to(dev).reshape(b, groups, f)
    gen = make_generator(seed, dev)
    k = subset_size
    blocks = Blocks(lambda _: torch.rand((runs, f), generator=gen, device=dev).topk(k, 1, largest=False).indices,
                    runs)
    flat_idx = None if idx_given is None else idx_given.to(dev).reshape(b * runs, k)
    sums = torch.empty(b * runs, dtype=torch.float64, device=dev)

    def make(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.arange(lo, hi, device=dev) // runs
        sel = blocks.rows(lo, hi) if flat_idx is None else flat_idx[lo:hi]
        sums[lo:hi] = rel[img].gather(1, sel).sum(1)
        idx3 = sel[:, None, :].expand(-1, groups, -1)
        z = xv[img].scatter_(2, idx3, fv[img].gather(2, idx3))
        return z.view(-1, *x4.shape[1:]), img

    deltas = scorer.clean.repeat_interleave(runs) - scorer.evaluate(b * runs, make, desc="faithfulness_correlation")
    s2, d2 = sums.view(b, runs), deltas.view(b, runs)
    return FaithfulnessCorrelationResult(to_result(correlation(s2, d2), x4), to_result(s2, x4), to_result(d2, x4),
                                         scorer.calls)


@dataclass
class MonotonicityCorrelationResult:
    """What :func:`monotonicity_nguyen` returns (float64 tensors on ``x.device``).

    Attributes:
        correlation: ``(B,)`` Spearman correlation between ``sums`` and ``variances`` (NaN where
            either is constant).
        sums: ``(B, T)`` the relevance of the features of each step (ascending order).
        variances: ``(B, T)`` ``E[(F(x) - F(x~))^2] / F(x)^2`` over the samples of each step
            (the division is skipped where ``|F(x)| < eps``).
        model_calls: images forwarded.
    """

    correlation: torch.Tensor
    sums: torch.Tensor
    variances: torch.Tensor
    model_calls: int


def monotonicity_nguyen(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *,
                        samples: int = 100, features_in_step: int = 1,
                        baseline: Union[str, float, torch.Tensor] = "uniform",
                        uniform_range: Sequence[float] = (0.0, 1.0), eps: float = 1e-5, features: str = "element",
                        absolute: bool = True, score: str = "softmax", reduce: str = "sum",
                        seed: Optional[int] = 0, batch_size: Optional[int] = None,
                        progress: Optional[bool] = None) -> MonotonicityCorrelationResult:
    """Monotonicity correlation (Nguyen & Martinez 2020): the features are taken in ascending
    order of relevance, ``features_in_step`` at a time; each step's features are replaced by the
    baseline ``samples`` times, and the Spearman correlation between each step's relevance and
    the mean squared change of the score is returned. Higher is better (1: a feature's relevance
    ranks the effect of removing it).

    Defaults are Quantus 0.6's ``MonotonicityCorrelation``: 100 samples per step, one element per
    step, ``"uniform"`` baseline (one U(0, 1) value per image, step and sample), ``abs=True``,
    softmax probabilities, ``eps=1e-5``. A deterministic baseline (``"black"``, a number...) gives
    the same image for every sample: it is scored once per step (Quantus scores it ``samples``
    times) with the same result. Equal to Quantus for deterministic baselines to 1e-6.

    Args:
        samples: perturbations per step for the ``"uniform"`` baseline.
        features_in_step: features replaced together at each step (the last step may be smaller).
        baseline: ``"uniform"`` or a deterministic fill (see
            :mod:`xai_torch.metrics.faithfulness_base`).
        uniform_range: ``(low, high)`` of the uniform values, in model space.
        eps: below this ``|F(x)|`` the squared changes are not divided by ``F(x)^2``.
        features, absolute, score: as :func:`faithfulness_correlation` (``score="softmax"`` here).
        seed: seed of the uniform values.

    Returns:
        :class:`MonotonicityCorrelationResult` with ``T = ceil(F / features_in_step)`` steps.

    Cost:
        ``B * (T * samples + 1)`` forwards with ``"uniform"``, ``B * (T + 1)`` otherwise, batched.

    Example:
        >>> xt.metrics.monotonicity_nguyen(model, x, attr, features="pixel", features_in_step=16).correlation
    """
    x4, _ = check_input(x)
    b = x4.shape[0]
    step = check_positive_int(features_in_step, "features_in_step")
    samples = check_positive_int(samples, "samples")
    seed = check_seed(seed)
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps >= 0):
        raise XaiError(f"eps must be a number >= 0; got {describe(eps)}.")
    uniform = isinstance(baseline, str) and baseline == "uniform"
    if uniform:
        lo_hi = tuple(uniform_range) if isinstance(uniform_range, (list, tuple)) else ()
        if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in lo_hi) or \
                lo_hi[0] > lo_hi[1]:
            raise XaiError(f"uniform_range must be (low, high) with low <= high; got {describe(uniform_range)}.")
        fill = None
    else:
        fill = fill_images(baseline, x4.detach())
    if features not in ("element", "pixel"):
        raise XaiError(f"features must be 'element' or 'pixel'; got {describe(features)}.")
    _, f = _layout(x4, features)
    if step > f:
        raise XaiError(f"features_in_step={step} is larger than the {f} features of each image; use a smaller step.")
    attr = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=None,
                                                                      name="monotonicity_nguyen")
    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress,
                    name="monotonicity_nguyen")
    dev = scorer.device
    attr = scorer.attributions(attribution, reduce=None) if attr is None else attr.to(dev)
    rel = feature_relevance(attr, scorer.x, features, reduce, absolute)
    group = torch.div(order_ranks(rel, descending=False), step, rounding_mode="floor")     # step of each feature
    t = -(-f // step)
    s = samples if uniform else 1
    per = t * s
    xd = scorer.x
    fd = None if fill is None else fill.to(dev)
    gen = make_generator(seed, dev)
    if uniform:
        low, high = float(uniform_range[0]), float(uniform_range[1])
        blocks = Blocks(lambda _: torch.rand(per, generator=gen, device=dev, dtype=torch.float64) * (high - low) + low,
                        per)

    def make(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(lo, hi, device=dev)
        img = idx // per
        take = group[img] == ((idx % per) // s).view(-1, 1, 1, 1)
        new = blocks.rows(lo, hi).to(xd.dtype).view(-1, 1, 1, 1) if fd is None else fd[img]
        return torch.where(take, new, xd[img]), img

    scores = scorer.evaluate(b * per, make, desc="monotonicity_nguyen").view(b, t, s)
    clean = scorer.clean
    inv = torch.where(clean.abs() >= eps, 1.0 / clean.pow(2), torch.ones_like(clean))
    variances = (scores - clean.view(b, 1, 1)).pow(2).mean(2) * inv[:, None]
    sums = grouped_sums(rel.expand_as(group), group, t)
    corr = correlation(average_ranks(sums), average_ranks(variances), dim=1)
    return MonotonicityCorrelationResult(to_result(corr, x4), to_result(sums, x4), to_result(variances, x4),
                                         scorer.calls)


__all__ = ["FaithfulnessCorrelationResult", "MonotonicityCorrelationResult", "faithfulness_correlation",
           "monotonicity_nguyen"]
