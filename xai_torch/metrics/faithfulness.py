"""Causal faithfulness: deletion and insertion curves (Petsiuk et al. 2018), completeness.

Deletion removes the most relevant pixels first and watches the class probability fall (a
faithful map makes it fall fast: low AUC is good). Insertion starts from a blurred image and
puts the most relevant pixels back first (high AUC is good). Both follow RISE's
``evaluation.py::CausalMetric``: the map is reduced over channels, pixels are ordered from most
to least relevant, ``step`` pixels (all channels together) change per step, the curve has
``n + 1 = ceil(H*W / step) + 1`` points including both ends, and the AUC is the trapezoid rule
over ``[0, 1]`` with ``n`` equal intervals. Differences from RISE, on purpose:

* ties are broken in raster order by a stable sort (RISE's ``flip(argsort)`` is unstable, and
  ties are common in XRAI, LIME and CAM maps), so a map always gives the same curve;
* every point of every curve of every image is one sample of one batched evaluation (RISE
  loops over steps and edits a CPU copy in place); the images for a chunk of points are made on
  the model's device by one ``where`` against each pixel's rank.

See :mod:`xai_torch.metrics._common` for ``model``, ``x``, ``attribution``, ``target``,
``reduce``, ``batch_size`` and ``progress``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import XaiError, check_input, check_positive_int, describe
from ..imageops import rise_blur
from ..space import NAMES as BASELINE_NAMES
from ..space import check_baselines, check_space, make_baselines, value_range
from ._common import Scorer, coerce_attribution, descending_order, is_explainer, to_result

#: the substrate names understood besides the path baselines (``"black"``, ``"blur"``...).
SUBSTRATES = ("zeros", "rise_blur") + BASELINE_NAMES


@dataclass
class CausalCurve:
    """Result of :func:`deletion` / :func:`insertion`.

    Attributes:
        curve: ``(B, n + 1)`` scores of the target after ``0, step, 2*step, ...`` pixels were
            changed (the last point has every pixel changed).
        auc: ``(B,)`` area under the curve, trapezoid rule on ``n`` equal intervals of [0, 1].
        fractions: ``(n + 1,)`` fraction of pixels changed at each point.
        targets: ``(B,)`` the class scored (the clean argmax unless given).
        mode: ``"deletion"`` or ``"insertion"``.
        step: pixels changed per step.
        model_calls: images forwarded (``B`` clean + ``B * (n + 1)`` curve points).
    """

    curve: torch.Tensor
    auc: torch.Tensor
    fractions: torch.Tensor
    targets: Optional[torch.Tensor]
    mode: str
    step: int
    model_calls: int


def causal_auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under curves sampled at ``n + 1`` equally spaced points of [0, 1]:
    ``(sum(s) - s_0 / 2 - s_n / 2) / n`` (RISE's ``auc``).

    Shape:
        ``(..., n + 1) -> (...)``.
    """
    if curve.shape[-1] < 2:
        raise XaiError(f"a curve needs at least 2 points; got {curve.shape[-1]}.")
    n = curve.shape[-1] - 1
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / n


def causal_images(start: torch.Tensor, finish: torch.Tensor, rank: torch.Tensor, changed: torch.Tensor,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Curve points: each image with its ``changed`` most relevant pixels taken from ``finish``.

    Args:
        start, finish: ``(m, C, H, W)`` the images at the start and the end of the curve, or
            ``(C, H, W)`` / ``(1, C, H, W)`` for one image shared by all ``m`` points.
        rank: ``(m, H, W)`` or ``(H, W)``: each pixel's position in the relevance order (0 =
            most relevant).
        changed: ``(m,)`` how many pixels are changed in each image.
        out: where to write the ``(m, C, H, W)`` result (no intermediate copies).

    Shape:
        ``(m, C, H, W)``.
    """
    take = rank < changed.reshape(-1, 1, 1)
    return torch.where(take[:, None], finish, start, out=out)


def _substrate(spec: Any, x: torch.Tensor, normalize: Any, input_range: Any, name: str) -> torch.Tensor:
    if isinstance(spec, str) and spec == "zeros":
        return torch.zeros_like(x)
    if isinstance(spec, str) and spec == "rise_blur":
        return rise_blur(x)
    if isinstance(spec, str) and spec not in BASELINE_NAMES:
        raise XaiError(f"{name} must be one of {list(SUBSTRATES)}, an xt.Baseline, a number, a tensor or a "
                       f"callable x -> tensor; got {spec!r}.")
    if isinstance(spec, (list, tuple)):
        raise XaiError(f"{name} must be one substrate, not a list; got {describe(spec)}.")
    specs = check_baselines(spec)
    lo, hi = value_range(x, normalize, input_range)
    return make_baselines(specs, x, lo, hi, torch.Generator(x.device).manual_seed(0))[0]


def _causal(mode: str, model: Any, x: torch.Tensor, attribution: Any, target: Any, step: Optional[int], substrate: Any,
            score: str, reduce: str, normalize: Any, input_range: Any, batch_size: Optional[int],
            progress: Optional[bool]) -> CausalCurve:
    x4, _ = check_input(x)
    b, _, h, w = x4.shape
    hw = h * w
    step = check_positive_int(step, "step") if step is not None else max(1, math.ceil(hw / 224))
    if step > hw:
        raise XaiError(f"step={step} changes more pixels than the image has ({h}x{w} = {hw}).")
    check_space(normalize, input_range)
    name = mode
    given = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=reduce, name=name)
    base = _substrate(substrate, x4.detach(), normalize, input_range, "substrate")  # fails before any model call
    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress, name=name)
    relevance = scorer.attributions(attribution, reduce) if given is None else given.to(scorer.device)
    base = base.to(scorer.device)
    start, finish = (scorer.x, base) if mode == "deletion" else (base, scorer.x)

    order = descending_order(relevance)                               # (B, HW)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hw, device=order.device).expand(b, hw))
    rank = rank.reshape(b, h, w)
    n = math.ceil(hw / step)
    changed = (torch.arange(n + 1, device=scorer.device) * step).clamp(max=hw)

    def make(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        # samples lo..hi-1 are (image, point) pairs, image-major: each image's run of points is
        # made by one broadcast `where` straight into the chunk (no gathered copies of x)
        z = torch.empty((hi - lo, *start.shape[1:]), dtype=start.dtype, device=scorer.device)
        for i in range(lo // (n + 1), (hi - 1) // (n + 1) + 1):
            a, e = max(lo, i * (n + 1)), min(hi, (i + 1) * (n + 1))
            points = changed[a - i * (n + 1):e - i * (n + 1)]
            causal_images(start[i], finish[i], rank[i], points, out=z[a - lo:e - lo])
        return z, torch.arange(lo, hi, device=scorer.device) // (n + 1)

    curve = scorer.evaluate(b * (n + 1), make, desc=name).reshape(b, n + 1)
    return CausalCurve(
        curve=to_result(curve, x4),
        auc=to_result(causal_auc(curve), x4),
        fractions=to_result(changed.double() / hw, x4),
        targets=None if scorer.classes is None else scorer.classes.to(x4.device),
        mode=mode,
        step=step,
        model_calls=scorer.calls,
    )


def deletion(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, step: Optional[int] = None,
             substrate: Any = "zeros", score: str = "softmax", reduce: str = "sum", normalize: Any = None,
             input_range: Any = None,
             batch_size: Optional[int] = None, progress: Optional[bool] = None) -> CausalCurve:
    """Deletion curve and AUC (lower is better): the target's score as the most relevant
    pixels are replaced by the substrate, ``step`` at a time.

    Args:
        step: pixels changed per step (``None``: ``ceil(H*W / 224)``, i.e. 224 as in RISE's
            notebooks at 224 x 224, giving a curve of 225 points).
        substrate: what deleted pixels become: ``"zeros"`` (model-space zeros, RISE's choice:
            the dataset-mean colour for normalised inputs), ``"rise_blur"`` (RISE's 11 x 11
            blur), a path baseline name (``"black"``, ``"blur"``, ``"uniform"``...; black and
            white need ``normalize`` or ``input_range``), an ``xt.Baseline``, a number or
            tensor in model space, or a callable ``x -> tensor``.
        score: ``"softmax"`` (RISE), ``"logit"``, ``"log_softmax"`` or ``"accuracy"``. On a
            one-logit model the probability kinds are the sigmoid's (``sigmoid(z)``,
            ``logsigmoid(z)``, ``z > 0``; see :data:`xai_torch.targets.SCORES`).
        normalize, input_range: the model's input space, for pixel-space substrates.

    Returns:
        :class:`CausalCurve`.

    Shape:
        ``curve (B, n + 1)``, ``auc (B,)`` with ``n = ceil(H*W / step)``.

    Example:
        >>> g = xt.Gradient(model)
        >>> res = xt.metrics.deletion(model, x, g, step=224 * 8)
        >>> res.auc           # one value per image; compare methods on the same images
    """
    return _causal("deletion", model, x, attribution, target, step, substrate, score, reduce, normalize,
                   input_range, batch_size, progress)


def insertion(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, step: Optional[int] = None,
              substrate: Any = "rise_blur", score: str = "softmax", reduce: str = "sum", normalize: Any = None,
              input_range: Any = None,
              batch_size: Optional[int] = None, progress: Optional[bool] = None) -> CausalCurve:
    """Insertion curve and AUC (higher is better): the most relevant pixels of ``x`` are put
    back into the substrate (by default RISE's blurred image), ``step`` at a time.

    Args: as :func:`deletion`; the default substrate is ``"rise_blur"``.

    Returns:
        :class:`CausalCurve`.

    Example:
        >>> res = xt.metrics.insertion(model, x, xt.GradCAM(model, layer="layer4"))
    """
    return _causal("insertion", model, x, attribution, target, step, substrate, score, reduce, normalize,
                   input_range, batch_size, progress)


@dataclass
class Completeness:
    """Result of :func:`completeness`.

    Attributes:
        delta: ``(B,)`` ``sum(attribution) - (F(x) - F(baseline))``.
        relative: ``(B,)`` ``|delta| / |F(x) - F(baseline)|``.
        attribution_sum: ``(B,)``.
        score_difference: ``(B,)`` ``F(x) - F(baseline)``.
        targets: ``(B,)`` class scored.
    """

    delta: torch.Tensor
    relative: torch.Tensor
    attribution_sum: torch.Tensor
    score_difference: torch.Tensor
    targets: Optional[torch.Tensor]


def completeness(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, baseline: Any = 0.0,
                 score: str = "logit", normalize: Any = None, input_range: Any = None,
                 batch_size: Optional[int] = None) -> Completeness:
    """Completeness (Sundararajan et al. 2017): attributions should sum to the score difference
    between the image and the baseline. Exact for IG up to quadrature error (its ``delta``),
    for gradient x input on linear models; a check for any attribution.

    Args:
        baseline: the reference the attribution was computed against: a number or tensor in
            model space, a path baseline name (``"black"`` needs ``normalize`` /
            ``input_range``), an ``xt.Baseline`` or a callable ``x -> tensor``.
        score: ``"logit"`` (what IG integrates by default) or ``"softmax"`` / ``"log_softmax"``.

    Returns:
        :class:`Completeness`. Costs two forwards per image.

    Example:
        >>> ig = xt.IntegratedGradients(model, normalize=xt.zoo.NORMALIZE)
        >>> xt.metrics.completeness(model, x, ig(x, baseline="black"), baseline="black",
        ...                         normalize=xt.zoo.NORMALIZE).relative
    """
    x4, _ = check_input(x)
    check_space(normalize, input_range)
    if score == "accuracy":
        raise XaiError("completeness compares scores: score must be 'logit', 'softmax' or 'log_softmax'.")
    given = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=None)
    base = _substrate(baseline, x4.detach(), normalize, input_range, "baseline")
    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, name="completeness")
    attr = scorer.attributions(attribution, reduce=None) if given is None else given.to(scorer.device)
    base = base.to(scorer.device)
    f_base = scorer.evaluate(x4.shape[0], lambda a, b: (base[a:b].clone(), torch.arange(a, b)))
    diff = scorer.clean - f_base
    total = attr.flatten(1).sum(1)
    delta = total - diff
    return Completeness(
        delta=to_result(delta, x4),
        relative=to_result(delta.abs() / diff.abs(), x4),
        attribution_sum=to_result(total, x4),
        score_difference=to_result(diff, x4),
        targets=None if scorer.classes is None else scorer.classes.to(x4.device),
    )
