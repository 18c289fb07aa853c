"""Stability of stochastic explanations (seed 003; Visani et al. 2022 for LIME): how much of a
map is the method's own sampling, and how much the image?

* **Sampling variance**: the same images explained with different seeds (every pair of runs
  compared).
* **Input sensitivity**: the same seed on the images and on copies with a tiny uniform noise
  that keeps the model's top-1 class (copies that change it are left out and counted).

Each comparison gives, per image, the top-k overlap (the share of the k most relevant pixels
two maps have in common), the Spearman correlation and the SSIM of the maps (reduced over
channels, ``reduce="abs"`` by default), with percentile-bootstrap confidence intervals over the
images and pairs (:func:`xai_torch.metrics.reliability.mean_estimate`). :func:`samples_needed`
doubles a method's sample count until the seeds agree (e.g. Spearman >= 0.9).

Explainers are re-created with another seed from their configuration (``_config()``), as
``xai_torch.dataset.build.recreate`` does, or made by a factory ``seed -> explainer``. The images
each run explains keep their positions in the batch, so "the same seed" means the same draws.
Model calls: images the model forwarded in the calling thread.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import nn

from ..errors import XaiError, check_input, check_positive_int, describe
from ..explainer import Explainer
from ..hooks import HookSession, check_hookable, this_thread
from ..imageops import minmax
from ..seeding import derive_seed
from ._common import Scorer, descending_order, reduce_channels
from .reliability import Estimate, check_bootstrap, mean_estimate
from .similarity import spearman, ssim

#: constructor keywords that hold a stochastic method's sample count, in the order they are looked for
SAMPLE_KEYWORDS = ("samples", "n_samples", "num_samples", "nsamples", "masks", "max_evals")
#: the per-image measures of agreement between two maps
MEASURES = ("top_k", "spearman", "ssim")
Factory = Callable[[int], Any]


def sample_keyword(explainer: Any) -> Optional[str]:
    """The constructor keyword of ``explainer``'s sample count (``"samples"``, ``"masks"``,
    ``"max_evals"``...; see :data:`SAMPLE_KEYWORDS`), found in its configuration; None if it has none."""
    config = explainer._config() if isinstance(explainer, Explainer) else {}
    for key in SAMPLE_KEYWORDS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return key
    return None


def with_config(explainer: Explainer, **changes: Any) -> Explainer:
    """The same explainer class built again from its configuration with ``changes``
    (``seed=1``, ``samples=64``); the first constructor argument is the model unless the
    configuration names it (SmoothGrad's wrapped explainer). A tensor option the configuration
    shows by its shape (ExpectedGradients' background) is taken from the explainer's attribute.

    Raises:
        XaiError: the class does not take one of ``changes`` (its options are named).
    """
    cls = type(explainer)
    config = explainer._config()
    cfg = {**config, **changes}
    for key, value in config.items():  # a tensor option shown by its shape (ExpectedGradients' background)
        held = getattr(explainer, key, None)
        if key not in changes and isinstance(held, torch.Tensor) and not isinstance(value, torch.Tensor):
            cfg[key] = held
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    args = [cfg.pop(params[0])] if params and params[0] in cfg else [explainer.model]
    try:
        return cls(*args, **cfg)
    except TypeError as err:
        raise XaiError(f"{cls.__name__} does not take option(s) {sorted(changes)} ({err}); its options: "
                       f"{', '.join(sorted(config))}.") from None


def _model_of(explainer: Any) -> Any:
    inner = explainer
    while isinstance(inner, Explainer) and not isinstance(getattr(inner, "model", None), nn.Module) \
            and isinstance(getattr(inner, "explainer", None), Explainer):
        inner = getattr(inner, "explainer")  # noqa: B009 (SmoothGrad's wrapped explainer)
    return getattr(inner, "model", None)


class ModelCalls(HookSession):
    """Images forwarded by ``model`` in this thread while open (None when it cannot be hooked)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.images: Optional[int] = None
        if isinstance(model, nn.Module) and not _scripted(model):
            self.images = 0
            self.forward_pre_hook(model, this_thread(self._count))

    def _count(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor) and self.images is not None:
            self.images += int(args[0].shape[0]) if args[0].ndim else 1


def _scripted(model: nn.Module) -> bool:
    try:
        check_hookable(model, [("", model)])
    except XaiError:
        return True
    return False


@dataclass
class StabilityScores:
    """Agreement of pairs of maps, per image.

    Attributes:
        top_k, spearman, ssim: ``(B,)`` the mean over the image's pairs (NaN where it has none).
        pairs: measure -> ``(B, P)`` the value of each pair (NaN for a pair left out).
        ci: measure -> :class:`~xai_torch.metrics.reliability.Estimate` of the mean over images
            and pairs, with its bootstrap interval.
    """

    top_k: torch.Tensor
    spearman: torch.Tensor
    ssim: torch.Tensor
    pairs: dict[str, torch.Tensor]
    ci: dict[str, Estimate]


@dataclass
class StabilityResult:
    """What :func:`stability` returns.

    Attributes:
        sampling: sampling variance (pairs of seeds on the same images), None if not asked.
        sensitivity: input sensitivity (same seed, noisy copies), None if not asked.
        kept: ``(B,)`` the share of noisy copies that kept the top-1 class (NaN if not asked).
        k: the top-k size; seeds: the seeds used; noise: the noise's half-width (or None).
        sample_keyword, samples: the method's sample-count keyword and its value (or None).
        model_calls: images the model forwarded in the run (None: TorchScript, a plain callable).
    """

    sampling: Optional[StabilityScores]
    sensitivity: Optional[StabilityScores]
    kept: torch.Tensor
    k: int
    seeds: tuple[int, ...]
    noise: Optional[float]
    sample_keyword: Optional[str]
    samples: Optional[int]
    model_calls: Optional[int]


def top_k_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """The share of the ``k`` most relevant pixels (ties in raster order) two maps ``(B, H, W)`` share. ``(B,)``."""
    hw = a[0].numel()
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= hw:
        raise XaiError(f"k must be an integer in [1, {hw}] (the pixels of the map); got {describe(k)}.")
    ta = torch.zeros(a.shape[0], hw, dtype=torch.bool, device=a.device).scatter_(1, descending_order(a)[:, :k], True)
    tb = torch.zeros_like(ta).scatter_(1, descending_order(b.to(a.device))[:, :k], True)
    return (ta & tb).sum(1).double() / k


def compare_maps(a: torch.Tensor, b: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Top-k overlap, Spearman and SSIM (min-max normalised maps, window 7 or the largest odd
    side that fits; NaN below 3 pixels) of two batches of pixel maps ``(B, H, W)``."""
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    s = ssim(minmax(a), minmax(b), data_range=1.0, win_size=win) if win >= 3 else \
        torch.full((a.shape[0],), float("nan"), dtype=torch.float64, device=a.device)
    return {"top_k": top_k_overlap(a, b, k), "spearman": spearman(a, b), "ssim": s}


def _scores(pairs: dict[str, torch.Tensor], resamples: int, confidence: float, seed: int,
            like: torch.Tensor) -> StabilityScores:
    out = {m: v.nanmean(1).to(like.device, torch.float64) for m, v in pairs.items()}
    ci = {m: mean_estimate(v, resamples=resamples, confidence=confidence, seed=seed) for m, v in pairs.items()}
    return StabilityScores(out["top_k"], out["spearman"], out["ssim"],
                           {m: v.to(like.device) for m, v in pairs.items()}, ci)


def _check_seeds(seeds: Any) -> Optional[tuple[int, ...]]:
    if seeds is None:
        return None
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = tuple(range(seeds)) if seeds >= 2 else seeds
    if not isinstance(seeds, Sequence) or isinstance(seeds, str) or len(seeds) < 2 \
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise XaiError(f"seeds must be at least 2 distinct seeds >= 0 (a list, or a count n for 0..n-1), or None to "
                       f"skip the sampling variance; got {describe(seeds)}.")
    return tuple(int(s) for s in seeds)


def _make(source: Union[Explainer, Factory], seed: int) -> Any:
    if isinstance(source, Explainer):
        return with_config(source, seed=seed)
    made = source(seed)
    if not callable(made):
        raise XaiError(f"the explainer factory must return an explainer for each seed; got {describe(made)}.")
    return made


def _maps(explainer: Any, x: torch.Tensor, target: Any, reduce: str, call: dict[str, Any]) -> torch.Tensor:
    out = explainer(x.clone(), target=target, **call)
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0] \
            or out.shape[-2:] != x.shape[-2:]:
        raise XaiError(f"stability compares maps of shape (B, C, H, W) at the input's size {tuple(x.shape[-2:])}; "
                       f"the explainer returned {describe(out)}.")
    return reduce_channels(out.detach().to(torch.float64), reduce)


def stability(explainer: Union[Explainer, Factory], x: torch.Tensor, target: Any = None, *,
              seeds: Union[int, Sequence[int], None] = 3, noise: Optional[float] = 0.01, copies: int = 2,
              k: Optional[int] = None, reduce: str = "abs", model: Any = None, bootstrap: int = 1000,
              confidence: float = 0.95, seed: int = 0, **call_kwargs: Any) -> StabilityResult:
    """Sampling variance and input sensitivity of a stochastic explainer (LIME, KernelSHAP, RISE,
    SmoothGrad, ExpectedGradients, PartitionSHAP...).

    Args:
        explainer: a seeded xai_torch explainer (re-created with each seed from its
            configuration), or a factory ``seed -> explainer``.
        x, target: see :mod:`xai_torch.metrics._common`; ``None`` explains every run (noisy
            copies too) for the clean top-1 class.
        seeds: the seeds compared pairwise (a list, or a count n for ``0..n-1``; at least 2),
            or None to skip the sampling variance. The first seed also makes the input-
            sensitivity runs.
        noise: half-width of the uniform noise of the copies, in model-space units, or None to
            skip the input sensitivity.
        copies: noisy copies per image.
        k: pixels of the top-k overlap (default: a tenth of the map, at least 1).
        reduce: how attributions become one value per pixel (``"abs"``: magnitude).
        model: the classifier, for a factory's explainers that are not xai_torch explainers.
        bootstrap: bootstrap resamples of each interval (> 0); confidence: its coverage.
        seed: seed of the noise and of the bootstrap.
        **call_kwargs: passed to every explainer call (``segments=`` for LIME...).

    Returns:
        :class:`StabilityResult`; higher agreement is more stable.

    Raises:
        XaiError: a deterministic explainer (no ``seed``) with ``seeds`` (its sampling variance
            is zero by construction: pass ``seeds=None``), k larger than the map, bootstrap <= 0,
            noise <= 0, fewer than 2 seeds, both parts skipped.

    Cost:
        ``len(seeds) + copies`` explanations of the batch plus ``B * (1 + copies)`` forwards
        (:attr:`StabilityResult.model_calls` counts them all).

    Example:
        >>> res = xt.metrics.stability(xt.LIME(model, samples=200, seed=0), x, seeds=3, noise=0.01)
        >>> res.sampling.ci["spearman"], res.sensitivity.ci["spearman"], res.model_calls
    """
    x4, _ = check_input(x)
    seed_list = _check_seeds(seeds)
    resamples, confidence = check_bootstrap(bootstrap, confidence)
    if noise is not None and (isinstance(noise, bool) or not isinstance(noise, (int, float))
                              or not math.isfinite(noise) or noise <= 0):
        raise XaiError(f"noise must be a positive half-width in model-space units (e.g. 0.01), or None; "
                       f"got {describe(noise)}.")
    copies = check_positive_int(copies, "copies")
    if seed_list is None and noise is None:
        raise XaiError("stability has nothing to measure: give seeds (sampling variance) or noise (input sensitivity).")
    hw = x4.shape[-2] * x4.shape[-1]
    k = max(1, hw // 10) if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= hw:
        raise XaiError(f"k must be an integer in [1, {hw}] (the pixels of the {x4.shape[-2]}x{x4.shape[-1]} map); "
                       f"got {describe(k)}.")
    if not (isinstance(explainer, Explainer) or callable(explainer)):
        raise XaiError(f"explainer must be a seeded xai_torch explainer or a factory seed -> explainer; got "
                       f"{describe(explainer)}.")
    if isinstance(explainer, Explainer) and seed_list is not None and "seed" not in explainer._config():
        raise XaiError(f"{type(explainer).__name__} is deterministic (it takes no seed): its sampling variance is "
                       "zero by construction. Pass seeds=None to measure its input sensitivity only.")
    first = seed_list[0] if seed_list else 0
    reference = _make(explainer, first) if seed_list is not None or not isinstance(explainer, Explainer) \
        else explainer
    owner = model if model is not None else _model_of(reference)
    if owner is None or not callable(owner):
        raise XaiError("stability needs the model (to keep the predicted class of the noisy copies): pass model=.")
    counter = ModelCalls(owner)
    with counter:
        scorer = Scorer(owner, x4, target, score="logit", name="stability")
        dev = scorer.device
        xd = scorer.x
        tgt = scorer.classes.cpu() if scorer.classes is not None else target
        base = _maps(reference, xd, tgt, reduce, call_kwargs)
        sampling = sensitivity = None
        kept = torch.full((x4.shape[0],), float("nan"), dtype=torch.float64)
        if seed_list is not None:
            runs = [base] + [_maps(_make(explainer, s), xd, tgt, reduce, call_kwargs) for s in seed_list[1:]]
            pairs = [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]
            found = [compare_maps(runs[i], runs[j], k) for i, j in pairs]
            sampling = _scores({m: torch.stack([f[m] for f in found], 1).cpu() for m in MEASURES}, resamples,
                               confidence, seed, x4)
        if noise is not None:
            if scorer.clean_top1 is None:
                raise XaiError("stability's input sensitivity keeps the top-1 class of each noisy copy: it needs "
                               "class targets (None, an int or one class per image), not a callable target.")
            found, ok = [], []
            for j in range(copies):  # each image's noise from its own seed: independent of the batch
                draws = [torch.empty_like(xd[i]).uniform_(-noise, noise, generator=torch.Generator(dev).manual_seed(
                    derive_seed(seed, j, i))) for i in range(xd.shape[0])]
                noisy = xd + torch.stack(draws)
                probe = Scorer(owner, noisy, None, score="logit", name="stability")
                assert probe.clean_top1 is not None and scorer.clean_top1 is not None
                same = (probe.clean_top1 == scorer.clean_top1).cpu()
                values = compare_maps(base, _maps(reference, noisy, tgt, reduce, call_kwargs), k)
                found.append({m: torch.where(same, v.cpu(), torch.full_like(v.cpu(), float("nan")))
                              for m, v in values.items()})
                ok.append(same)
            sensitivity = _scores({m: torch.stack([f[m] for f in found], 1) for m in MEASURES}, resamples,
                                  confidence, seed, x4)
            kept = torch.stack(ok, 1).double().mean(1)
    keyword = sample_keyword(reference)
    return StabilityResult(sampling, sensitivity, kept.to(x4.device), k, tuple(seed_list or (first,)),
                           None if noise is None else float(noise), keyword,
                           reference._config()[keyword] if keyword else None, counter.images)


@dataclass
class SamplesNeeded:
    """What :func:`samples_needed` returns.

    Attributes:
        samples: the first sample count whose seeds agree enough, or None if ``max_samples`` did not.
        keyword: the constructor keyword that was doubled (``"samples"``, ``"masks"``...).
        tried: ``(samples, mean agreement over images and pairs, model calls)`` per step.
        measure, threshold: what had to be reached.
        agreement: ``(B,)`` each image's agreement (mean over pairs of seeds) at the last count tried.
        model_calls: images the model forwarded in the whole search (None: not countable).
    """

    agreement: torch.Tensor
    samples: Optional[int]
    keyword: str
    tried: list[tuple[int, float, Optional[int]]]
    measure: str
    threshold: float
    model_calls: Optional[int]


def samples_needed(explainer: Explainer, x: torch.Tensor, target: Any = None, *, threshold: float = 0.9,
                   measure: str = "spearman", seeds: Union[int, Sequence[int]] = 2, start: Optional[int] = None,
                   max_samples: int = 4096, k: Optional[int] = None, reduce: str = "abs",
                   **call_kwargs: Any) -> SamplesNeeded:
    """The sample count a stochastic method needs to be stable: starting at ``start`` (default:
    its own count), the count is doubled until the mean agreement between seeds (``measure``,
    averaged over images and pairs) reaches ``threshold``, or ``max_samples`` is passed.

    Args:
        explainer: a seeded xai_torch explainer whose configuration has a sample count
            (:data:`SAMPLE_KEYWORDS`: LIME / KernelSHAP / SmoothGrad / ExpectedGradients
            ``samples``, RISE ``masks``, PartitionSHAP ``max_evals``).
        threshold: the agreement to reach; measure: one of :data:`MEASURES`.
        seeds, k, reduce, call_kwargs: as :func:`stability`.

    Returns:
        :class:`SamplesNeeded` (with the model calls of every step).

    Example:
        >>> xt.metrics.samples_needed(xt.RISE(model, masks=64, seed=0), x, threshold=0.9).samples
    """
    if measure not in MEASURES:
        raise XaiError(f"measure must be one of {list(MEASURES)}; got {describe(measure)}.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise XaiError(f"threshold must be an agreement in [-1, 1] (e.g. 0.9); got {describe(threshold)}.")
    if not isinstance(explainer, Explainer):
        raise XaiError(f"samples_needed re-creates the explainer with more samples: give an xai_torch explainer; "
                       f"got {describe(explainer)}.")
    keyword = sample_keyword(explainer)
    if keyword is None:
        raise XaiError(f"{type(explainer).__name__} has no sample count among its options "
                       f"({', '.join(sorted(explainer._config()))}); samples_needed doubles one of "
                       f"{', '.join(SAMPLE_KEYWORDS)}.")
    n = check_positive_int(explainer._config()[keyword] if start is None else start, "start")
    max_samples = check_positive_int(max_samples, "max_samples")
    tried: list[tuple[int, float, Optional[int]]] = []
    total: Optional[int] = 0
    per_image = torch.empty(0, dtype=torch.float64)
    if n > max_samples:
        raise XaiError(f"start={n} is above max_samples={max_samples}: nothing would be tried.")
    while n <= max_samples:
        res = stability(with_config(explainer, **{keyword: n}), x, target, seeds=seeds, noise=None, k=k,
                        reduce=reduce, bootstrap=1, **call_kwargs)
        assert res.sampling is not None
        agreement = res.sampling.ci[measure].value
        per_image = getattr(res.sampling, measure)
        tried.append((n, agreement, res.model_calls))
        total = None if total is None or res.model_calls is None else total + res.model_calls
        if agreement >= threshold:
            return SamplesNeeded(per_image, n, keyword, tried, measure, float(threshold), total)
        n *= 2
    return SamplesNeeded(per_image, None, keyword, tried, measure, float(threshold), total)


__all__ = ["MEASURES", "SAMPLE_KEYWORDS", "SamplesNeeded", "StabilityResult", "StabilityScores", "compare_maps",
           "sample_keyword", "samples_needed", "stability", "top_k_overlap", "with_config"]
