"""Curves of cumulative removal, as Quantus 0.6: pixel flipping (Bach et al. 2015), region
perturbation (Samek et al. 2017, MoRF / LeRF / random) and monotonicity (Arya et al. 2019).

Every point of every curve of every image is one sample of one batched no-grad evaluation
(Quantus loops over the steps, one model call each). Arguments shared by every metric are in
:mod:`xai_torch.metrics._common`; ``features``, ``baseline`` and ``absolute`` in
:mod:`xai_torch.metrics.faithfulness_base`. Quantus's ``normalise=True`` (a positive scale) does
not change any order, so it is not applied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, check_choice, check_input, check_positive_int
from ..seeding import check_seed, make_generator
from ._common import Scorer, coerce_attribution, is_explainer, to_result
from .faithfulness_base import curve_scores, feature_relevance, fill_images, grouped_sums, order_ranks, trapezoid


@dataclass
class FlippingResult:
    """What :func:`pixel_flipping` returns (float64 tensors on ``x.device``).

    Attributes:
        curve: ``(B, T)`` the score after each step (step 1 to T; the last has every feature
            replaced), Quantus's ``PixelFlipping`` output.
        auc: ``(B,)`` ``np.trapz(curve, dx=1)`` (Quantus ``return_auc_per_sample=True``).
        clean: ``(B,)`` the score of the clean images.
        model_calls: images forwarded, ``B * (T + 1)``.
    """

    curve: torch.Tensor
    auc: torch.Tensor
    clean: torch.Tensor
    model_calls: int


def _prepare(model: Any, x: torch.Tensor, attribution: Any, target: Any, score: str, batch_size: Optional[int],
             progress: Optional[bool], name: str) -> tuple[torch.Tensor, Scorer, torch.Tensor]:
    """``(x4, scorer, attribution on the scorer's device)``: tensors are checked before any
    model call."""
    x4, _ = check_input(x)
    attr = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=None, name=name)
    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress, name=name)
    attr = scorer.attributions(attribution, reduce=None) if attr is None else attr.to(scorer.device)
    return x4, scorer, attr


def _steps(x: torch.Tensor, features: str, features_in_step: int) -> tuple[int, int]:
    """``(F, T)``: features per image and steps."""
    step = check_positive_int(features_in_step, "features_in_step")
    if features not in ("element", "pixel"):
        raise XaiError(f"features must be 'element' or 'pixel'; got {features!r}.")
    b, c, h, w = x.shape
    f = c * h * w if features == "element" else h * w
    if step > f:
        raise XaiError(f"features_in_step={step} is larger than the {f} features of each image; use a smaller step.")
    return f, -(-f // step)


def _cumulative(scorer: Scorer, start: torch.Tensor, finish: torch.Tensor, rank: torch.Tensor, f: int, step: int,
                t: int, desc: str) -> torch.Tensor:
    """``(B, T)`` scores with the first ``min(k * step, F)`` features of the order changed, k = 1..T."""
    b = start.shape[0]
    changed = (torch.arange(1, t + 1, device=scorer.device) * step).clamp(max=f).repeat(b)
    image = torch.arange(b, device=scorer.device).repeat_interleave(t)
    return curve_scores(scorer, start, finish, rank, image, changed, desc).view(b, t)


def pixel_flipping(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, features_in_step: int = 1,
                   baseline: Union[str, float, torch.Tensor] = "black", features: str = "element",
                   absolute: bool = False, score: str = "softmax", reduce: str = "sum",
                   batch_size: Optional[int] = None, progress: Optional[bool] = None) -> FlippingResult:
    """Pixel flipping (Bach et al. 2015): the features are replaced by the baseline from the most
    to the least relevant, ``features_in_step`` at a time, and the class score is recorded after
    each step; a faithful map makes it fall fast (low ``auc`` is good).

    Defaults are Quantus 0.6's ``PixelFlipping``: one element per step, ``"black"`` baseline (the
    image's minimum), ``abs=False``, softmax. Equal to Quantus to 1e-6 (Quantus breaks ties with an
    unstable sort; here ties keep raster order).

    Args:
        features_in_step: features replaced per step. With ``features="element"`` and a
            ``(B, 1, H, W)`` map, a multiple of C replaces whole pixels.
        baseline, features, absolute: see :mod:`xai_torch.metrics.faithfulness_base`.
        score: ``"softmax"`` (Quantus), ``"logit"``... (see ``SCORES``).

    Returns:
        :class:`FlippingResult` with ``T = ceil(F / features_in_step)``.

    Cost:
        ``B * (T + 1)`` forwards, batched.

    Example:
        >>> res = xt.metrics.pixel_flipping(model, x, attr, features="pixel", features_in_step=64)
        >>> res.auc
    """
    x4, _ = check_input(x)
    f, t = _steps(x4, features, features_in_step)
    fill = fill_images(baseline, x4.detach())
    x4, scorer, attr = _prepare(model, x4, attribution, target, score, batch_size, progress, "pixel_flipping")
    rank = order_ranks(feature_relevance(attr, scorer.x, features, reduce, absolute), descending=True)
    curve = _cumulative(scorer, scorer.x, fill.to(scorer.device), rank, f, features_in_step, t, "pixel_flipping")
    return FlippingResult(to_result(curve, x4), to_result(trapezoid(curve), x4), to_result(scorer.clean, x4),
                          scorer.calls)


@dataclass
class MonotonicityResult:
    """What :func:`monotonicity_arya` returns (tensors on ``x.device``).

    Attributes:
        monotonic: ``(B,)`` bool, whether ``curve`` never decreases.
        fraction: ``(B,)`` float64, the fraction of steps where the score does not decrease.
        curve: ``(B, T)`` the score after each step of insertion (least relevant first).
        model_calls: images forwarded, ``B * (T + 1)``.
    """

    monotonic: torch.Tensor
    fraction: torch.Tensor
    curve: torch.Tensor
    model_calls: int


def monotonicity_arya(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *,
                      features_in_step: int = 1, baseline: Union[str, float, torch.Tensor] = "black",
                      features: str = "element", absolute: bool = True, score: str = "softmax", reduce: str = "sum",
                      batch_size: Optional[int] = None, progress: Optional[bool] = None) -> MonotonicityResult:
    """Monotonicity (Arya et al. 2019, AIX360's ``monotonicity_metric``): starting from the
    baseline image, the features of ``x`` are put back from the least to the most relevant,
    ``features_in_step`` at a time; the explanation is monotonic when the class score never
    decreases along the way.

    Quantus 0.6 ``Monotonicity`` has the same defaults (one element per step, ``"black"``
    baseline, ``abs=True``, softmax) but never puts ``x``'s values back: it "perturbs" the
    baseline image with the baseline value, so every step scores the same image and every
    explanation is reported monotonic (``tests/test_metrics_quantus_faithfulness.py`` shows it).
    This is the paper's definition; there is no Quantus-compatible mode.

    Args:
        features_in_step, baseline, features, absolute, score: as :func:`pixel_flipping`
            (``absolute=True`` here).

    Returns:
        :class:`MonotonicityResult` with ``T = ceil(F / features_in_step)``.

    Cost:
        ``B * (T + 1)`` forwards, batched.

    Example:
        >>> xt.metrics.monotonicity_arya(model, x, attr, features="pixel", features_in_step=16).fraction
    """
    x4, _ = check_input(x)
    f, t = _steps(x4, features, features_in_step)
    fill = fill_images(baseline, x4.detach())
    x4, scorer, attr = _prepare(model, x4, attribution, target, score, batch_size, progress, "monotonicity_arya")
    rank = order_ranks(feature_relevance(attr, scorer.x, features, reduce, absolute), descending=False)
    curve = _cumulative(scorer, fill.to(scorer.device), scorer.x, rank, f, features_in_step, t, "monotonicity_arya")
    ok = curve.diff(dim=1) >= 0
    frac = ok.double().mean(1) if t > 1 else torch.ones(curve.shape[0], dtype=torch.float64, device=curve.device)
    return MonotonicityResult(ok.all(1).to(x4.device), to_result(frac, x4), to_result(curve, x4), scorer.calls)


@dataclass
class RegionPerturbationResult:
    """What :func:`region_perturbation` returns (float64 tensors on ``x.device``).

    Attributes:
        drops: ``(B, L)`` ``F(x) - F(x with the first k regions perturbed)``, k = 1..L
            (Quantus's ``RegionPerturbation`` output).
        aopc: ``(B,)`` Samek's AOPC ``1/(L+1) sum_{k=0}^{L} (F(x) - F(x_k))`` (the k = 0 term is 0).
        order: ``(B, L)`` long, the patches perturbed, in order (raster index of the patch).
        model_calls: images forwarded, ``B * (L + 1)``.
    """

    drops: torch.Tensor
    aopc: torch.Tensor
    order: torch.Tensor
    model_calls: int


ORDERS = ("morf", "lerf", "random")


def region_perturbation(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, patch_size: int = 8,
                        order: str = "morf", regions: int = 100, baseline: Union[str, float, torch.Tensor] = "black",
                        absolute: bool = False, score: str = "softmax", seed: Optional[int] = 0,
                        batch_size: Optional[int] = None, progress: Optional[bool] = None) -> RegionPerturbationResult:
    """Region perturbation (Samek et al. 2017): non-overlapping ``patch_size`` squares, ordered by
    their summed relevance (``"morf"``: most relevant first, ``"lerf"``: least relevant first,
    ``"random"``), are replaced by the baseline one after the other; the curve is the score drop.
    With MoRF a faithful map gives large drops early (high AOPC is good); with LeRF small ones.

    Defaults are Quantus 0.6's ``RegionPerturbation``: 8 x 8 patches, MoRF, 100 regions (fewer
    when the image has fewer patches), ``"black"`` baseline, ``abs=False``, softmax. ``drops``
    equals Quantus to 1e-6. Differences: the patch size must divide the image (Quantus pads the
    image symmetrically, which shifts the grid); Samek's paper fills regions with uniform noise,
    Quantus (and the default here) with the baseline; ``aopc`` is the paper's formula (Quantus
    only returns the curve).

    Args:
        patch_size: side of the square regions, in pixels; must divide H and W.
        order: ``"morf"``, ``"lerf"`` or ``"random"`` (a seeded permutation per image).
        regions: how many regions to perturb (at most the number of patches).
        baseline, absolute: see :mod:`xai_torch.metrics.faithfulness_base`.
        seed: seed of the ``"random"`` order.

    Returns:
        :class:`RegionPerturbationResult`.

    Cost:
        ``B * (L + 1)`` forwards, batched, ``L = min(regions, number of patches)``.

    Example:
        >>> xt.metrics.region_perturbation(model, x, attr, patch_size=16, order="morf").aopc
    """
    x4, _ = check_input(x)
    b, _, h, w = x4.shape
    p = check_positive_int(patch_size, "patch_size")
    if p > min(h, w) or h % p or w % p:
        raise XaiError(f"patch_size={p} must divide the image height and width ({h} x {w}); choose a divisor.")
    check_choice(order, "order", ORDERS)
    regions = check_positive_int(regions, "regions")
    seed = check_seed(seed)
    fill = fill_images(baseline, x4.detach())
    x4, scorer, attr = _prepare(model, x4, attribution, target, score, batch_size, progress, "region_perturbation")
    dev = scorer.device
    gw = w // p
    npatch = (h // p) * gw
    cell = ((torch.arange(h, device=dev) // p)[:, None] * gw + (torch.arange(w, device=dev) // p)[None, :])
    rel = feature_relevance(attr, scorer.x, "element", "sum", absolute)
    sums = grouped_sums(rel, cell.expand_as(rel), npatch)                            # (B, P)
    if order == "random":
        gen = make_generator(seed, dev)
        ranks = torch.stack([torch.randperm(npatch, generator=gen, device=dev) for _ in range(b)])
    else:
        ranks = order_ranks(sums, descending=order == "morf")                        # (B, P) position of patch
    pixel_rank = ranks[:, cell][:, None]                                             # (B, 1, H, W)
    n = min(regions, npatch)
    changed = torch.arange(1, n + 1, device=dev).repeat(b)
    image = torch.arange(b, device=dev).repeat_interleave(n)
    scores = curve_scores(scorer, scorer.x, fill.to(dev), pixel_rank, image, changed, "region_perturbation")
    drops = scorer.clean[:, None] - scores.view(b, n)
    perm = torch.argsort(ranks, dim=1)[:, :n]
    return RegionPerturbationResult(to_result(drops, x4), to_result(drops.sum(1) / (n + 1), x4),
                                    perm.to(x4.device), scorer.calls)


__all__ = ["FlippingResult", "MonotonicityResult", "RegionPerturbationResult", "ORDERS", "pixel_flipping",
           "monotonicity_arya", "region_perturbation"]
