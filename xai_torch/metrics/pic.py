"""Performance Information Curves (PIC) of the XRAI paper: SIC and AIC.

Kapishnikov et al., "XRAI: Better Attributions Through Regions" (ICCV 2019), as PAIR
``saliency/metrics/pic.py`` computes them (ALGORITHMS.md §7.2).

Start from a "bokeh" image: the photo re-interpolated (Delaunay, linear) from a random 1 % of
its pixels. Reveal the most salient pixels (the top fraction ``t`` of the map, for each
threshold ``t``) and re-interpolate the rest. For each image, plot the model's normalised
score against the normalised information it contains, where information is the byte size of
a lossless WebP encoding:

* x = ``clip((H_t - H_blur) / (H_orig - H_blur), 0, 1)``;
* y = ``clip((p_t - p_blur) / (p_orig - p_blur), 0, 1)``, as a running max (monotone) by default.

SIC scores the softmax probability of the target class; AIC scores 1 when the model's top-1
is the target, else 0. A good attribution reveals the pixels that restore the prediction
with little information: the higher the area under the curve, the better.

PIC works on uint8 photos, because WebP sizes and the interpolation are defined on pixels.
``pic`` takes the model-space ``x`` as every metric does, plus how pixels map to model inputs:
``normalize=(mean, std)`` (for pixels in [0, 1]), ``input_range=(lo, hi)``, or any
``preprocess`` callable. ``image=`` gives the photos when ``x`` cannot be mapped back exactly.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, check_choice, check_input, describe
from ..runner import model_device
from ..targets import ClassTarget, as_target, score_classes
from ..threads import small_ops
from ._common import Scorer, check_fraction, coerce_attribution, is_explainer, to_result
from .pic_curve import PicResult, check_num_points, pic_curve, points
from .pic_images import (
    Array,
    blur_measure,
    check_image,
    check_random_mask,
    check_webp,
    generate_random_mask,
    photo2d,
    pixel_space,
    run_pool,
    webp_size,
)

#: the thresholds of PAIR's documentation and notebook: fractions of the most salient pixels.
DEFAULT_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)
KINDS = ("sic", "aic", "both")


def _check_thresholds(thresholds: object) -> tuple[float, ...]:
    try:
        t = np.asarray(thresholds.detach().cpu() if isinstance(thresholds, torch.Tensor) else thresholds,
                       dtype=np.float64)
    except (TypeError, ValueError):
        t = None
    if t is None or t.ndim != 1 or t.size == 0:
        raise XaiError(f"thresholds must be a non-empty 1-D sequence of fractions in (0, 1); got "
                       f"{describe(thresholds)}.")
    if not bool(((t > 0) & (t < 1)).all()):
        raise XaiError(f"thresholds must lie in (0, 1) (fractions of the most salient pixels; 0 and 1 are "
                       f"the fully blurred and the original image); got {t.tolist()}.")
    if t.size > 1 and not bool((np.diff(t) > 0).all()):
        raise XaiError(f"thresholds must be strictly ascending; got {t.tolist()}.")
    return tuple(float(v) for v in t)


class _BothScorer(Scorer):
    """A Scorer that also records top-1 correctness, so SIC and AIC share the same forwards."""

    def __init__(self, model: Any, x: torch.Tensor, target: Any, *, batch_size: Optional[int],
                 progress: Optional[bool], name: str) -> None:
        self._hits: list[torch.Tensor] = []
        super().__init__(model, x, target, score="softmax", batch_size=batch_size, progress=progress, name=name)
        self.clean_hits = self.take_hits()

    def _scores(self, out: Any, rows: torch.Tensor, first: bool) -> torch.Tensor:
        p = super()._scores(out, rows, first)  # checks the output, pins argmax targets
        assert self.classes is not None  # class targets only (checked by pic)
        self._hits.append(score_classes(out.detach(), self.classes[rows], "accuracy").double())
        return p

    def take_hits(self) -> torch.Tensor:
        hits = torch.cat(self._hits) if self._hits else torch.empty(0, dtype=torch.float64, device=self.device)
        self._hits = []
        return hits


def pic(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, kind: str = "sic", image: Any = None,
        normalize: Optional[Sequence[Any]] = None, input_range: Optional[Sequence[Any]] = None,
        preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS, random_mask: Any = None, fraction: float = 0.01,
        seed: Union[None, int, torch.Generator] = 0, min_pred_value: float = 0.8,
        keep_monotonous: bool = True, num_points: int = 1000, reduce: str = "sum",
        workers: Optional[int] = None, batch_size: Optional[int] = None,
        progress: Optional[bool] = None) -> Union[PicResult, tuple[PicResult, PicResult]]:
    """Softmax / Accuracy Information Curves (SIC / AIC) of an attribution, per image.

    For each threshold ``t``, the pixels whose relevance is at least the ``1 - t`` quantile
    (``np.quantile``, linear; ties reveal more than ``t``) and the random seed pixels are kept,
    and the rest re-interpolated (:func:`bokeh_image`). Entropy is :func:`webp_entropy`. The
    curve is :func:`pic_curve`. The numbers equal PAIR's ``compute_pic_metric`` with the same
    random mask (``np.trapz`` era): a parity test checks curves and AUC to 1e-9.

    Pixels and model inputs. PIC works on uint8 photos; the model sees ``model_input(photo)``:

    * ``preprocess(u)`` if given: ``u`` is a uint8 ``(N, H, W, C)`` tensor on the model's device,
      the result the model's input ``(N, ...)``;
    * else ``(u / 255 - mean) / std`` with ``normalize=(mean, std)``, ``lo + u / 255 * (hi - lo)``
      with ``input_range=(lo, hi)``, or ``u / 255`` (then ``x`` must lie in [0, 1]).

    The photos are ``image`` if given, else ``x`` mapped back through ``normalize`` /
    ``input_range`` and rounded. Without ``preprocess``, ``image`` must match ``x`` to within
    one grey level. The original image's score is that of ``model_input(photo)`` (not of ``x``),
    so every point of the curve is scored the same way.

    Skipped images. As PAIR, an image is skipped when its score is below ``min_pred_value``,
    when the fully blurred image is not smaller than the original as WebP, or when it scores at
    least the original. Its ``auc`` and ``curve_y`` are NaN and ``skipped`` says why; the batch
    goes on (PAIR raises ``ComputePicMetricError``). Skipped images cost no further forwards and
    no threshold images.

    Args:
        model, x, attribution, target, reduce, batch_size, progress: see
            :mod:`xai_torch.metrics._common`. The relevance (after ``reduce``) orders pixels,
            most relevant first (PAIR leaves taking ``|.|`` to the caller: ``reduce="abs"`` ranks
            signed pixel attributions by magnitude). ``kind="both"`` and ``"aic"`` need class
            targets.
        kind: ``"sic"`` (softmax of the target), ``"aic"`` (1 if the top-1 is the target) or
            ``"both"`` (one set of forwards, two results). A one-logit model ``z`` scores
            ``sigmoid(z)`` and ``z > 0`` (see :data:`xai_torch.targets.SCORES`).
        image: uint8 photos ``(B, H, W, 3)`` (or ``(B, H, W)`` greyscale), an array, a tensor or a
            list of ``(H, W, C)`` photos, at ``x``'s height and width.
        normalize: ``(mean, std)`` of the model's normalisation of pixels in [0, 1] (scalars or
            one value per channel), e.g. ``xt.zoo.NORMALIZE``.
        input_range: ``(lo, hi)``: model-space values of black and white.
        preprocess: callable uint8 ``(N, H, W, C)`` tensor -> model input.
        thresholds: strictly ascending fractions in (0, 1).
        random_mask: bool ``(H, W)`` (all images) or ``(B, H, W)``: the seed pixels of the fully
            blurred image. ``None``: ``generate_random_mask(H, W, fraction, batch=B, seed=seed)``.
            Compare methods on the same masks (same seed and batch, or pass them).
        fraction: the fraction of random seed pixels.
        seed: seed of the random masks (int, ``torch.Generator`` or ``None`` for fresh ones).
        min_pred_value: images whose original score is below it are skipped (AIC: a wrong
            clean top-1 scores 0).
        keep_monotonous: scores as their running max (the paper's choice).
        num_points: curve samples in [0, 1), plus x = 1.
        workers: threads for the CPU work (interpolation and WebP), ``None``: up to 8.

    Returns:
        :class:`PicResult` for ``"sic"`` / ``"aic"``; a tuple ``(sic, aic)`` for ``"both"``.
        Aggregate over images with :func:`aggregate`.

    Shape:
        ``auc`` ``(B,)``; ``curve_x``, ``curve_y`` ``(B, num_points + 1)``; ``entropy``,
        ``scores`` ``(B, len(thresholds) + 2)``.

    Cost:
        ``B`` forwards for the originals, one per fully blurred image that passes the first two
        checks, and ``len(thresholds)`` per image that passes all three: ``len(thresholds) + 2``
        per image, batched. The CPU work (a Delaunay interpolation and a WebP encoding per
        image and threshold) usually dominates.

    Example:
        >>> model, x = xt.zoo.efficientnet_lite0(), xt.zoo.preprocess(xt.zoo.image("chelsea"))
        >>> res = pic(model, x, xt.Gradient(model), normalize=xt.zoo.NORMALIZE, reduce="abs",
        ...           min_pred_value=0.3)
        >>> res.auc, res.skipped
    """
    check_choice(kind, "kind", KINDS)
    x4, _ = check_input(x)
    b, c, h, w = x4.shape
    thr = _check_thresholds(thresholds)
    fraction = check_fraction(fraction, "fraction")
    min_pred_value = check_fraction(min_pred_value, "min_pred_value")
    num_points = check_num_points(num_points)
    if not isinstance(keep_monotonous, bool):
        raise XaiError(f"keep_monotonous must be True or False; got {describe(keep_monotonous)}.")
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise XaiError(f"workers must be None or an integer >= 1; got {describe(workers)}.")
    if preprocess is not None and not callable(preprocess):
        raise XaiError(f"preprocess must be a callable uint8 (N, H, W, C) tensor -> model input; got "
                       f"{describe(preprocess)}.")
    if kind != "sic" and not isinstance(as_target(target, b), ClassTarget):
        raise XaiError(f"kind={kind!r} scores top-1 correctness and needs class targets (None, an int or one "
                       "class per image); a callable target only works with kind='sic'.")
    check_webp()
    if min(h, w) < 2:
        raise XaiError(f"PIC interpolates images of at least 2 x 2 pixels; x is {h} x {w}.")

    # Pixels <-> model inputs.
    scale, offset = pixel_space(normalize, input_range, c)
    xd = x4.detach().double().cpu()
    pixels01 = (xd - offset) / scale
    if image is None:
        if normalize is None and input_range is None and (pixels01.min() < -1e-6 or pixels01.max() > 1 + 1e-6):
            raise XaiError(
                f"x has values in [{float(xd.min()):.3g}, {float(xd.max()):.3g}], outside [0, 1]: PIC works on uint8 "
                "photos, so say how x maps to pixels: normalize=(mean, std) (e.g. xt.zoo.NORMALIZE), "
                "input_range=(lo, hi), or pass the photos as image=."
            )
        if c not in (1, 3):
            raise XaiError(f"PIC encodes RGB or greyscale photos; x has {c} channels. Pass image= (B, H, W, 3) "
                           "photos and preprocess= to make the model's input from them.")
        photos = (pixels01 * 255).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().copy()
    else:
        photos = check_image(image, b, h, w)
        if preprocess is None:
            if photos.shape[3] != c:
                raise XaiError(f"image has {photos.shape[3]} channels but x has {c}; pass preprocess= to map them.")
            gap = float((pixels01 * 255 - torch.from_numpy(photos).permute(0, 3, 1, 2).double()).abs().max())
            if gap > 1.0 + 1e-6:
                how = "normalize" if normalize is not None else "input_range" if input_range is not None else "u / 255"
                raise XaiError(
                    f"image does not match x (up to {gap:.3g} grey levels apart) under the mapping {how}; pass the "
                    "right normalize= / input_range=, or preprocess= for any other mapping."
                )
    if random_mask is None:
        masks = generate_random_mask(h, w, fraction, batch=b, seed=seed).numpy()
    else:
        masks = check_random_mask(random_mask, b, h, w)
    device = model_device(model, x4.device)
    sc, off = scale.to(device, x4.dtype), offset.to(device, x4.dtype)

    def model_input(u: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(u).to(device)
        if preprocess is not None:
            z = preprocess(t)
            if not isinstance(z, torch.Tensor) or z.ndim < 1 or z.shape[0] != t.shape[0]:
                raise XaiError(f"preprocess must return the model input, a tensor with {t.shape[0]} rows for "
                               f"{t.shape[0]} images; got {describe(z)}.")
            return z
        return t.permute(0, 3, 1, 2).to(x4.dtype) / 255 * sc + off

    x_clean = model_input(photos)
    relevance = None
    if is_explainer(attribution):
        pass  # an explainer is called with the clean classes, after the first forward
    else:
        relevance = coerce_attribution(attribution, x4.detach(), reduce=reduce, name="pic")

    # Clean scores (B forwards).
    kinds = ["sic", "aic"] if kind == "both" else [kind]
    scorer: Scorer
    if kind == "both":
        both = _BothScorer(model, x_clean, target, batch_size=batch_size, progress=progress, name="pic")
        scorer, clean = both, {"sic": both.clean, "aic": both.clean_hits}
    else:
        scorer = Scorer(model, x_clean, target, score="softmax" if kind == "sic" else "accuracy",
                        batch_size=batch_size, progress=progress, name="pic")
        clean = {kind: scorer.clean}
    if relevance is None:
        relevance = coerce_attribution(attribution, x4.detach().to(device), scorer.classes, reduce=reduce,
                                       name="pic")
    saliency = relevance.detach().cpu().numpy()

    t_count = len(thr)
    entropy = np.full((b, t_count + 2), np.nan)
    scores = {k: torch.full((b, t_count + 2), float("nan"), dtype=torch.float64, device=device) for k in kinds}
    skipped: dict[str, list[Optional[str]]] = {k: [None] * b for k in kinds}
    for k in kinds:
        scores[k][:, -1] = clean[k]
        for i, p in enumerate(clean[k].tolist()):
            if p < min_pred_value:
                skipped[k][i] = (f"the score on the original image ({p:.4g}) is below min_pred_value "
                                 f"({min_pred_value:.4g})")

    def alive() -> list[int]:
        return [i for i in range(b) if any(skipped[k][i] is None for k in kinds)]

    # Fully blurred images and the entropies of the originals (CPU).
    idx = alive()
    originals = run_pool(lambda i: (webp_size(photo2d(photos[i])), blur_measure(photos[i], masks[i])),
                         [(i,) for i in idx], workers, progress, "pic: blurring")
    blurred = {}
    for i, (h_orig, (img_blur, h_blur)) in zip(idx, originals):
        entropy[i, -1], entropy[i, 0] = h_orig, h_blur
        blurred[i] = img_blur
        if h_blur >= h_orig:
            for k in kinds:
                if skipped[k][i] is None:
                    skipped[k][i] = (f"the fully blurred image is not smaller than the original as WebP ({h_blur} >= "
                                     f"{h_orig} bytes): too little detail to measure")

    def forward(imgs: list[Array], owner: list[int]) -> dict[str, torch.Tensor]:
        if not imgs:
            return {k: torch.empty(0, dtype=torch.float64, device=device) for k in kinds}
        stack = np.stack(imgs)
        rows = torch.as_tensor(owner, dtype=torch.long)
        out = scorer.evaluate(len(imgs), lambda s, e: (model_input(stack[s:e]), rows[s:e]))
        if kind == "both":
            return {"sic": out, "aic": both.take_hits()}
        return {kind: out}

    idx = alive()
    res = forward([blurred[i] for i in idx], idx)
    for k in kinds:
        for n, i in enumerate(idx):
            p_blur = float(res[k][n])
            scores[k][i, 0] = res[k][n]
            p_orig = float(clean[k][i])
            if skipped[k][i] is None and p_blur >= p_orig:
                skipped[k][i] = (f"the fully blurred image scores {p_blur:.4g}, not below the original's "
                                 f"{p_orig:.4g}")

    # Threshold images (CPU), then one batched evaluation.
    idx = alive()
    tasks = []
    levels = 1 - np.asarray(thr)
    for i in idx:
        quant = np.quantile(saliency[i], levels)
        for q in quant:
            tasks.append((photos[i], np.logical_or(saliency[i] >= q, masks[i])))
    done = run_pool(blur_measure, tasks, workers, progress, "pic: blurring")
    owner = [i for i in idx for _ in thr]
    res = forward([d[0] for d in done], owner)
    if idx:
        rows = torch.as_tensor(idx, device=device)
        entropy[idx, 1:-1] = np.asarray([d[1] for d in done], dtype=np.float64).reshape(len(idx), t_count)
        for k in kinds:
            scores[k][rows, 1:-1] = res[k].reshape(len(idx), t_count)

    # the curves: many small ops, one thread each (no oversubscription on a busy machine)
    with small_ops():
        ent = torch.from_numpy(entropy).to(device)
        out = []
        thr_t = torch.tensor((0.0, *thr, 1.0), dtype=torch.float64)
        for k in kinds:
            ok = torch.tensor([s is None for s in skipped[k]], dtype=torch.bool, device=device)
            cx, cy, auc = pic_curve(ent, scores[k], keep_monotonous=keep_monotonous, num_points=num_points)
            px, py = points(ent, scores[k], keep_monotonous)
            nan = float("nan")
            out.append(PicResult(
                kind=k,
                auc=to_result(auc.masked_fill(~ok, nan), x4),
                curve_x=to_result(cx, x4),
                curve_y=to_result(cy.masked_fill(~ok[:, None], nan), x4),
                thresholds=to_result(thr_t, x4),
                entropy=to_result(ent, x4),
                scores=to_result(scores[k], x4),
                points_x=to_result(px.masked_fill(~ok[:, None], nan), x4),
                points_y=to_result(py.masked_fill(~ok[:, None], nan), x4),
                skipped=skipped[k],
                targets=None if scorer.classes is None else scorer.classes.to(x4.device).clone(),
                random_mask=torch.from_numpy(masks.copy()).to(x4.device),
            ))
    return (out[0], out[1]) if kind == "both" else out[0]


__all__ = ["pic", "DEFAULT_THRESHOLDS", "KINDS"]
