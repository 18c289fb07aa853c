"""Metric reliability (Tomsett et al. 2020, "Sanity Checks for Saliency Metrics"): do a metric's
conclusions about methods hold across images, methods and sibling metrics?

From a score table ``scores[metric][method] -> (N,)`` (one value per image, the same N images
for every cell), :func:`reliability` gives, each with a percentile-bootstrap confidence interval
over the images:

* **inter-rater reliability** per metric: Krippendorff's alpha (ordinal) of the ranking of the
  methods, the images being the raters and the methods the units. 1: every image ranks the
  methods alike; 0: no more agreement than chance; < 0: systematic disagreement.
* **inter-method reliability** per metric: the mean Spearman correlation, over pairs of
  methods, of the per-image scores (does the metric find the same images easy whatever the
  method?).
* **internal consistency** between metrics: Cronbach's alpha of the metrics as items, each
  standardised and oriented so that higher is better, over the (image, method) cells; and the
  Spearman correlation between each pair of metrics' rankings of the methods, averaged over
  images.

Pure functions on tensors / arrays (float64 numpy inside); nothing runs a model. Randomness:
the bootstrap draws come from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError, check_choice, describe
from ._common import correlation
from .similarity import rank

#: the fewest images a reliability statistic (and its bootstrap over images) is computed from
MIN_IMAGES = 3
#: the fewest methods a ranking of methods needs
MIN_METHODS = 2
#: Krippendorff's alpha levels of measurement
LEVELS = ("nominal", "ordinal", "interval")


def _array(data: Any, name: str, ndim: int) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        data = data.detach().to("cpu", torch.float64).numpy()
    try:
        a = np.array(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise XaiError(f"{name} must be a real {ndim}-D array or tensor; got {describe(data)}.") from None
    if a.ndim != ndim:
        raise XaiError(f"{name} must be a {ndim}-D array or tensor; got shape {a.shape}.")
    return a


def krippendorff_alpha(data: Any, level: str = "ordinal") -> float:
    """Krippendorff's alpha of reliability data (Krippendorff 2011, "Computing Krippendorff's
    Alpha-Reliability"): ``1 - D_o / D_e`` from the coincidence matrix of the values paired
    within each unit.

    Args:
        data: ``(raters, units)`` values, NaN where a rater gave none (units with fewer than two
            values are not pairable and are left out).
        level: ``"ordinal"`` (ranks: ``delta_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2``),
            ``"interval"`` (``(c - k)^2``) or ``"nominal"`` (``c != k``).

    Returns:
        Alpha as a float; NaN when there is no variation at all (``D_e = 0``).

    Raises:
        XaiError: not 2-D, fewer than 2 raters or 2 units, or no pairable unit.

    Example:
        >>> krippendorff_alpha([[1, 2, 3], [1, 2, 3]])      # perfect agreement
        1.0
    """
    check_choice(level, "level", LEVELS)
    a = _array(data, "data", 2)
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise XaiError(f"krippendorff_alpha needs at least 2 raters and 2 units; got {a.shape[0]} rater(s) x "
                       f"{a.shape[1]} unit(s).")
    present = ~np.isnan(a)
    values = np.unique(a[present])
    onehot = (a[..., None] == values) & present[..., None]         # (raters, units, V)
    counts = onehot.sum(0).astype(np.float64)                        # (units, V)
    m = counts.sum(1)
    w = np.where(m >= 2, 1.0 / np.maximum(m - 1, 1), 0.0)            # units with < 2 values: not pairable
    weighted = counts * w[:, None]
    o = weighted.T @ counts - np.diag(weighted.sum(0))
    n_c = o.sum(1)
    n = n_c.sum()
    if n == 0:
        raise XaiError("krippendorff_alpha found no unit with at least 2 values (nothing is pairable).")
    if level == "nominal":
        d = 1.0 - np.eye(len(values))
    elif level == "interval":
        d = (values[:, None] - values[None, :]) ** 2
    else:
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
        hi = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
        d = (cum[hi + 1] - cum[lo] - (n_c[:, None] + n_c[None, :]) / 2) ** 2
    expected = float((np.outer(n_c, n_c) * d).sum())
    if expected == 0:
        return float("nan")
    return float(1.0 - (n - 1) * float((o * d).sum()) / expected)


def cronbach_alpha(items: Any) -> float:
    """Cronbach's alpha of ``k`` items over ``n`` observations:
    ``k / (k - 1) * (1 - sum(var(item)) / var(sum of items))`` (sample variances).

    Args:
        items: ``(n, k)`` scores (rows: observations, columns: items), no NaN.

    Returns:
        Alpha as a float; NaN when the total has no variance.

    Raises:
        XaiError: not 2-D, fewer than 2 items or 2 observations, or NaN values.

    Example:
        >>> cronbach_alpha([[1, 1], [2, 2], [3, 3]])
        1.0
    """
    a = _array(items, "items", 2)
    if a.shape[0] < 2 or a.shape[1] < 2:
        raise XaiError(f"cronbach_alpha needs at least 2 observations and 2 items; got shape {a.shape}.")
    if np.isnan(a).any():
        raise XaiError("cronbach_alpha takes complete data; the items have NaN values.")
    total = a.sum(1).var(ddof=1)
    if total == 0:
        return float("nan")
    k = a.shape[1]
    return float(k / (k - 1) * (1.0 - a.var(0, ddof=1).sum() / total))


def check_bootstrap(bootstrap: Any, confidence: Any) -> tuple[int, float]:
    """``bootstrap`` a positive int and ``confidence`` in (0, 1), else XaiError."""
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap <= 0:
        raise XaiError(f"bootstrap must be a positive number of resamples (e.g. 1000); got {describe(bootstrap)}.")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < float(confidence) < 1:
        raise XaiError(f"confidence must be a number in (0, 1) (e.g. 0.95); got {describe(confidence)}.")
    return int(bootstrap), float(confidence)


@dataclass
class Estimate:
    """A statistic with its percentile-bootstrap confidence interval.

    Attributes:
        value: the statistic on the data as given.
        low, high: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the
            statistic over the resamples (NaN resamples left out; NaN when all are).
    """

    value: float
    low: float
    high: float


def bootstrap(statistic: Callable[[np.ndarray], Any], n: int, *, resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0, batched: bool = False) -> Estimate:
    """Percentile bootstrap of ``statistic(indices)`` over ``n`` units (images): the statistic on
    ``arange(n)``, then on ``resamples`` draws of ``n`` indices with replacement.

    Args:
        batched: ``statistic`` takes all index rows at once, ``(R, n) -> (R,)`` (row 0 is
            ``arange(n)``), instead of one ``(n,)`` row -> float.

    Example:
        >>> v = np.array([0.9, 0.8, 0.95])
        >>> bootstrap(lambda i: float(v[i].mean()), 3, resamples=200)
    """
    resamples, confidence = check_bootstrap(resamples, confidence)
    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.arange(n)[None], rng.integers(0, n, (resamples, n))])
    if batched:
        found = np.asarray(statistic(rows), dtype=np.float64)
    else:
        found = np.array([statistic(r) for r in rows], dtype=np.float64)
    return percentile_interval(found, confidence)


def percentile_interval(found: np.ndarray, confidence: float) -> Estimate:
    """``found[0]`` (the statistic on the data) with the percentile interval of the bootstrap
    draws ``found[1:]`` at ``confidence``, NaN draws left out (a NaN interval when all are)."""
    value, draws = float(found[0]), found[1:]
    draws = draws[~np.isnan(draws)]
    if not len(draws):
        return Estimate(value, float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Estimate(value, float(low), float(high))


def rank_methods(table: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """``(N images, M methods)`` scores -> ranks per image (1 = best; ties share their mean rank)."""
    t = torch.from_numpy(np.ascontiguousarray(-table if higher_is_better else table, dtype=np.float64))
    return rank(t).numpy()


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of the last-axis rows of ``a`` and ``b`` ``(..., M)`` (ties averaged;
    NaN for constant rows), batched."""
    ta, tb = torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))
    shape = ta.shape[:-1]
    r = correlation(rank(ta.reshape(-1, ta.shape[-1])), rank(tb.reshape(-1, tb.shape[-1])), dim=1)
    return r.reshape(shape).numpy()


def _nanmean(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


@dataclass
class ReliabilityResult:
    """What :func:`reliability` returns.

    Attributes:
        metrics, methods: the names, in the table's order.
        images: N, the images each cell holds.
        inter_rater: per metric, Krippendorff's ordinal alpha of the method ranking across images.
        inter_method: per metric, the mean Spearman correlation of per-image scores over method pairs.
        internal_consistency: Cronbach's alpha of the (standardised, oriented) metrics over the
            (image, method) cells; None with one metric.
        metric_agreement: ``(K, K)`` mean over images of the Spearman correlation between two
            metrics' rankings of the methods (oriented: 1 = they rank the methods alike).
    """

    metrics: list[str]
    methods: list[str]
    images: int
    inter_rater: dict[str, Estimate]
    inter_method: dict[str, Estimate]
    internal_consistency: Optional[Estimate]
    metric_agreement: torch.Tensor


def score_table(scores: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str], np.ndarray]:
    """``scores[metric][method] -> (N,)`` as names and a ``(K metrics, N images, M methods)`` array.

    Raises:
        XaiError: not a nested mapping, cells of different lengths, methods that differ between
            metrics, NaN or infinite scores, or fewer than :data:`MIN_IMAGES` images or
            :data:`MIN_METHODS` methods.
    """
    if not isinstance(scores, Mapping) or not scores or not all(isinstance(v, Mapping) for v in scores.values()):
        raise XaiError(f"scores must be a mapping metric -> {{method -> (N,) per-image scores}}; got "
                       f"{describe(scores)}.")
    metrics = [str(m) for m in scores]
    methods = [str(m) for m in next(iter(scores.values()))]
    for metric, row in scores.items():
        if [str(m) for m in row] != methods:
            raise XaiError(f"every metric must score the same methods in the same order; {metric!r} has "
                           f"{list(row)}, the first metric {methods}.")
    cells = [[_array(scores[k][m], f"scores[{k!r}][{m!r}]", 1) for m in scores[k]] for k in scores]
    n = len(cells[0][0]) if cells[0] else 0
    if any(len(c) != n for row in cells for c in row):
        raise XaiError("every cell scores[metric][method] must hold one value per image, the same N images; got "
                       f"lengths {sorted({len(c) for row in cells for c in row})}.")
    if n < MIN_IMAGES or len(methods) < MIN_METHODS:
        raise XaiError(f"reliability statistics need at least {MIN_IMAGES} images and {MIN_METHODS} methods; got "
                       f"{n} image(s) and {len(methods)} method(s).")
    table = np.stack([np.stack(row, 1) for row in cells])           # (K, N, M)
    if not np.isfinite(table).all():
        raise XaiError("the scores have NaN or infinite values; drop those images or methods first.")
    return metrics, methods, table


def reliability(scores: Mapping[str, Mapping[str, Any]], *, higher_is_better: Optional[Mapping[str, bool]] = None,
                bootstrap_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> ReliabilityResult:
    """Tomsett et al. 2020's reliability of saliency metrics on a score table.

    Args:
        scores: ``scores[metric][method] -> (N,)`` per-image scores (tensors, arrays or lists),
            the same methods in the same order for every metric, at least :data:`MIN_IMAGES`
            images and :data:`MIN_METHODS` methods.
        higher_is_better: per metric, whether a higher score is better (default: True; deletion
            AUC, infidelity... are lower-is-better: see ``xt.metrics.catalogue.CATALOGUE``).
        bootstrap_resamples: resamples of the images for each confidence interval (> 0).
        confidence: the interval's coverage in (0, 1).
        seed: the bootstrap's seed.

    Returns:
        :class:`ReliabilityResult`.

    Raises:
        XaiError: a malformed table (see :func:`score_table`), too few images or methods (the
            minimum named), ``bootstrap_resamples <= 0``.

    Example:
        >>> table = {"deletion": {"gradient": d_g, "gradcam": d_c}, "insertion": {...}}
        >>> r = xt.metrics.reliability(table, higher_is_better={"deletion": False, "insertion": True})
        >>> r.inter_rater["deletion"].value, r.internal_consistency
    """
    resamples, confidence = check_bootstrap(bootstrap_resamples, confidence)
    metrics, methods, table = score_table(scores)
    better = dict(higher_is_better or {})
    unknown = sorted(set(better) - set(metrics))
    if unknown:
        raise XaiError(f"higher_is_better names metrics that are not in the table: {unknown}.")
    sign = np.array([1.0 if better.get(m, True) else -1.0 for m in metrics])
    oriented = table * sign[:, None, None]                            # higher is better everywhere
    ranks = np.stack([rank_methods(t) for t in oriented])             # (K, N, M), 1 = best
    n, m = table.shape[1], table.shape[2]
    kw: dict[str, Any] = {"resamples": resamples, "confidence": confidence, "seed": seed}
    inter_rater, inter_method = {}, {}
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    for k, name in enumerate(metrics):
        def rank_agreement(idx: np.ndarray, r: np.ndarray = ranks[k]) -> float:
            return krippendorff_alpha(r[idx], "ordinal")

        inter_rater[name] = bootstrap(rank_agreement, n, **kw)
        cols = table[k]

        def method_agreement(idx: np.ndarray, cols: np.ndarray = cols) -> np.ndarray:
            sub = cols[idx].transpose(0, 2, 1)                         # (R, M, N): each method over the images
            rho = _spearman_rows(sub[:, [i for i, _ in pairs]], sub[:, [j for _, j in pairs]])  # (R, P)
            ok = ~np.isnan(rho)
            count = ok.sum(1)
            return np.asarray(np.where(count > 0, np.where(ok, rho, 0.0).sum(1) / np.maximum(count, 1), np.nan))

        inter_method[name] = bootstrap(method_agreement, n, batched=True, **kw)
    consistency: Optional[Estimate] = None
    agreement = np.ones((len(metrics), len(metrics)))
    if len(metrics) > 1:
        def standardised(idx: np.ndarray) -> np.ndarray:
            cells = oriented[:, idx].reshape(len(metrics), -1).T      # (N' * M, K)
            sd = cells.std(0, ddof=1)
            return np.asarray((cells - cells.mean(0)) / np.where(sd > 0, sd, 1.0), dtype=np.float64)

        consistency = bootstrap(lambda idx: cronbach_alpha(standardised(idx)), n, **kw)
        for a in range(len(metrics)):
            for b in range(a + 1, len(metrics)):
                agreement[a, b] = agreement[b, a] = _nanmean(_spearman_rows(oriented[a], oriented[b]))
    return ReliabilityResult(metrics, methods, n, inter_rater, inter_method, consistency, torch.from_numpy(agreement))


def mean_estimate(values: Any, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """The mean of per-image values with a percentile-bootstrap interval over the images (rows).

    ``values`` ``(N,)``, or ``(N, P)`` for P pairs per image: a two-stage resample, images then
    pairs within each image. NaN values are left out of the means.

    Example:
        >>> mean_estimate(torch.tensor([0.9, 0.8, 0.95]), resamples=200)
    """
    v = _array(values, "values", 1) if np.ndim(values) == 1 else _array(values, "values", 2)
    if v.ndim == 1:
        v = v[:, None]
    if v.shape[0] < 1:
        raise XaiError("mean_estimate needs at least one value.")
    resamples, confidence = check_bootstrap(resamples, confidence)
    rng = np.random.default_rng(seed)
    n, p = v.shape
    rows = np.concatenate([np.arange(n)[None], rng.integers(0, n, (resamples, n))])           # (R + 1, n)
    cols = np.concatenate([np.arange(p)[None, None].repeat(n, 1), rng.integers(0, p, (resamples, n, p))])
    picked = np.take_along_axis(v[rows], cols, 2).reshape(resamples + 1, -1)                 # pairs within images
    ok = ~np.isnan(picked)
    count = ok.sum(1)
    means = np.where(count > 0, np.where(ok, picked, 0.0).sum(1) / np.maximum(count, 1), np.nan)
    return percentile_interval(means, confidence)


__all__ = ["MIN_IMAGES", "MIN_METHODS", "LEVELS", "Estimate", "ReliabilityResult", "bootstrap", "check_bootstrap",
           "cronbach_alpha", "krippendorff_alpha", "mean_estimate", "rank_methods", "reliability", "score_table"]

