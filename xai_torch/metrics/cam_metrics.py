"""The CAM papers' own metrics: Average Drop and Increase in Confidence (Chattopadhyay et al.
2018, "Grad-CAM++"; pytorch-grad-cam's ``DropInConfidence`` / ``IncreaseInConfidence``,
TorchCAM's ``ClassificationMetric``) and pytorch-grad-cam's ARCC.

The explanation map ``E`` (min-max scaled to [0, 1] per image by default) multiplies the
image, ``x * E``, and the model's score for the clean image's class is read on that "explanation
image". The common arguments (model, x, attribution, target, reduce, batch_size, progress) are
documented in :mod:`xai_torch.metrics._common`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import XaiError, check_choice, check_input, describe
from ..imageops import minmax
from ._common import SCORES, Scorer, coerce_attribution, is_explainer, to_result
from .road import road


@dataclass
class ConfidenceChange:
    """Scores on the explanation images ``x * E`` against the clean ones (float64, per image).

    Attributes:
        drop: ``(B,)`` ``max(0, clean - masked) / clean`` (``relative=True``, the paper's and
            TorchCAM's; TorchCAM adds 1e-7 to the denominator) or ``max(0, clean - masked)``
            (``relative=False``, pytorch-grad-cam's ``DropInConfidence``). Average Drop is
            ``100 * drop.mean()``.
        increase: ``(B,)`` 1.0 where ``masked > clean``, else 0.0. Increase in Confidence is
            ``100 * increase.mean()``.
        clean: ``(B,)`` the score of each clean image.
        masked: ``(B,)`` the score of each explanation image.
        targets: ``(B,)`` long, the class scored (``None`` for a callable target).
    """

    drop: torch.Tensor
    increase: torch.Tensor
    clean: torch.Tensor
    masked: torch.Tensor
    targets: Optional[torch.Tensor]


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise XaiError(f"{name} must be True or False; got {describe(value)}.")
    return value


def _explanation_map(scorer: Scorer, attribution: Any, reduce: str, normalize: bool) -> torch.Tensor:
    """``(B, 1, H, W)`` float64 map on the model's device, min-max scaled if asked."""
    m = scorer.attributions(attribution, reduce)[:, None]
    return minmax(m) if normalize else m


def confidence_change(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *,
                      score: str = "softmax", normalize: bool = True, relative: bool = True, reduce: str = "sum",
                      batch_size: Optional[int] = None, progress: Optional[bool] = None) -> ConfidenceChange:
    """Average Drop and Increase in Confidence, per image: the score for the clean image's
    class on ``x`` and on ``x * E``, where ``E`` is the explanation map.

    Args:
        model, x, attribution, target, reduce, batch_size, progress: see
            :mod:`xai_torch.metrics._common` (a CAM's ``(B, 1, H, W)`` maps, or the CAM itself).
        score: ``"softmax"`` (the paper's class probability, default), ``"logit"``
            (pytorch-grad-cam's ``ClassifierOutputTarget``) or ``"log_softmax"``.
        normalize: min-max scale each map to [0, 1] first (default; TorchCAM's extractors and
            pytorch-grad-cam's CAMs return scaled maps). ``False``: use the map as given (it
            should lie in [0, 1]).
        relative: divide the drop by the clean score (the paper, TorchCAM) or not
            (pytorch-grad-cam).

    Returns:
        :class:`ConfidenceChange`. Cost: ``2 B`` forwards, batched.

    Example:
        >>> res = xt.metrics.confidence_change(model, x, xt.GradCAM(model, layer="layer4"))
        >>> 100 * res.drop.mean(), 100 * res.increase.mean()      # Average Drop, Increase in Confidence
    """
    x4, _ = check_input(x)
    check_choice(score, "score", [s for s in SCORES if s != "accuracy"])
    _check_flag(normalize, "normalize")
    _check_flag(relative, "relative")
    if not is_explainer(attribution):  # fail before any model call
        coerce_attribution(attribution, x4, reduce=reduce, name="confidence_change")
    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress,
                    name="confidence_change")
    e = _explanation_map(scorer, attribution, reduce, normalize)
    b = x4.shape[0]
    masked = scorer.evaluate(b, lambda s, t: ((scorer.x[s:t] * e[s:t]).to(scorer.x.dtype), torch.arange(s, t)),
                             desc="confidence_change")
    clean = scorer.clean
    drop = torch.relu(clean - masked)
    if relative:
        drop = drop / torch.where(clean != 0, clean, torch.ones_like(clean))
    return ConfidenceChange(
        drop=to_result(drop, x4), increase=to_result((masked > clean).double(), x4), clean=to_result(clean, x4),
        masked=to_result(masked, x4), targets=None if scorer.classes is None else scorer.classes.to(x4.device))


def average_drop(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, **kwargs: Any) -> torch.Tensor:
    """Per-image drop in confidence on ``x * E`` (``100 * mean`` is the paper's Average Drop, lower
    is better): :attr:`ConfidenceChange.drop` of :func:`confidence_change` (same arguments).

    Returns:
        ``(B,)`` float64 on ``x.device``.

    Example:
        >>> 100 * xt.metrics.average_drop(model, x, cam_maps).mean()
    """
    return confidence_change(model, x, attribution, target, **kwargs).drop


def increase_in_confidence(model: Any, x: torch.Tensor, attribution: Any, target: Any = None,
                           **kwargs: Any) -> torch.Tensor:
    """Per image, 1.0 where the score rises on ``x * E`` (``100 * mean`` is the paper's Increase
    in Confidence, higher is better): :attr:`ConfidenceChange.increase` of
    :func:`confidence_change` (same arguments).

    Returns:
        ``(B,)`` float64 on ``x.device``.

    Example:
        >>> 100 * xt.metrics.increase_in_confidence(model, x, cam_maps).mean()
    """
    return confidence_change(model, x, attribution, target, **kwargs).increase


@dataclass
class ArccResult:
    """ARCC and its three parts, per image (float64).

    Attributes:
        arcc: ``(B,)`` ``3 / (1 / coherency + 1 / (1 - complexity) + 1 / road)`` (each term
            ``+ 1e-8``, as pytorch-grad-cam). Higher is better, in [0, 1].
        complexity: ``(B,)`` mean absolute value of the scaled map (lower: sparser).
        coherency: ``(B,)`` ``(r + 1) / 2`` with ``r`` the Pearson correlation of the map and
            the map the explainer gives on ``x * E``.
        road: ``(B,)`` ROAD's ``mean(LeRF - MoRF)`` of logits, clipped to [0, 1].
        targets: ``(B,)`` long, the class explained (``None`` for a callable target).
    """

    arcc: torch.Tensor
    complexity: torch.Tensor
    coherency: torch.Tensor
    road: torch.Tensor
    targets: Optional[torch.Tensor]


def _pearson_eps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's batch Pearson: ``cov / (std_a std_b + 1e-8)`` (0 for a constant map)."""
    a, b = a.flatten(1), b.flatten(1)
    n = a.shape[1] - 1
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    cov = (a * b).sum(1) / n
    return cov / ((a.pow(2).sum(1) / n).sqrt() * (b.pow(2).sum(1) / n).sqrt() + 1e-8)


def arcc(model: Any, x: torch.Tensor, explainer: Any, target: Any = None, *, attribution: Any = None,
         fractions: Sequence[float] = (0.8, 0.6, 0.4, 0.2), noise: float = 0.01, seed: int = 0,
         normalize: bool = True, reduce: str = "sum", batch_size: Optional[int] = None,
         progress: Optional[bool] = None) -> ArccResult:
    """ARCC (pytorch-grad-cam's ``metrics.arcc.ARCC``): the harmonic mean of coherency,
    ``1 - complexity`` and ROAD, per image.

    * complexity: the mean of ``|E|`` over the pixels of the scaled map ``E``;
    * coherency: ``(pearson(E, E') + 1) / 2``, ``E'`` the explainer's map on ``x * E``;
    * road: :func:`~xai_torch.metrics.road` with ``score="logit"``, ``combined`` (the mean of
      LeRF minus MoRF over ``fractions``) clipped to [0, 1]. pytorch-grad-cam's
      ``ROADCombined(percentiles=p)`` is half of ``combined``, which its ARCC doubles;
      ``fractions = 1 - p / 100`` (its default percentiles 20, 40, 60, 80).

    pytorch-grad-cam's docstring calls the combination a geometric mean; its formula (kept here)
    is the harmonic mean.

    Args:
        model, x, target, reduce, batch_size, progress: see :mod:`xai_torch.metrics._common`.
        explainer: the CAM (any ``explainer(x, target=classes) -> (B, 1|C, H, W)``); it is
            called on ``x * E`` for coherency, and on ``x`` unless ``attribution`` is given.
        attribution: the maps of ``explainer`` on ``x``, if you have them already.
        fractions, noise, seed: ROAD's (see :func:`~xai_torch.metrics.road`).
        normalize: min-max scale the maps to [0, 1] (default; pytorch-grad-cam's CAMs are).

    Returns:
        :class:`ArccResult`. Cost: the explainer on ``x`` (unless given) and on ``x * E``,
        ``2 B`` clean forwards, ``2 B len(fractions)`` ROAD forwards and linear solves.

    Example:
        >>> res = xt.metrics.arcc(model, x, xt.GradCAM(model, layer="layer4"))
        >>> res.arcc.mean()
    """
    x4, _ = check_input(x)
    if not is_explainer(explainer):
        raise XaiError(f"arcc needs the explainer (for coherency it explains x * E again); got {describe(explainer)}.")
    _check_flag(normalize, "normalize")
    if attribution is not None:
        coerce_attribution(attribution, x4, reduce=reduce, name="arcc")
    scorer = Scorer(model, x4, target, score="logit", batch_size=batch_size, progress=progress, name="arcc")
    e = _explanation_map(scorer, explainer if attribution is None else attribution, reduce, normalize)
    mixed = (scorer.x * e).to(scorer.x.dtype)
    e2 = coerce_attribution(explainer, mixed, scorer.classes, reduce=reduce, name="arcc")[:, None]
    e2 = minmax(e2) if normalize else e2
    complexity = e.abs().flatten(1).mean(1)
    coherency = (_pearson_eps(e2, e) + 1) / 2
    tgt = scorer.classes.cpu() if scorer.classes is not None else target
    r = road(model, x4, e[:, 0].to(x4.device), tgt, fractions=fractions, order="both", score="logit",
             noise=noise, seed=seed, reduce="sum", batch_size=batch_size, progress=progress)
    assert r.combined is not None
    rd = r.combined.to(e.device).clamp(0, 1)
    value = 3 / (1 / (coherency + 1e-8) + 1 / (1 - complexity + 1e-8) + 1 / (rd + 1e-8))
    return ArccResult(arcc=to_result(value, x4), complexity=to_result(complexity, x4),
                      coherency=to_result(coherency, x4), road=to_result(rd, x4),
                      targets=None if scorer.classes is None else scorer.classes.to(x4.device))


__all__ = ["ArccResult", "ConfidenceChange", "arcc", "average_drop", "confidence_change", "increase_in_confidence"]
