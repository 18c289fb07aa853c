"""Pictures of attributions. Explainers return raw values; normalising happens only here.

Normalisations (all return float32 ``(B, H, W)``):

* :func:`grayscale`: PAIR saliency's ``Σ_c |a|`` scaled by its min and 99th percentile, in
  [0, 1]; ``method="captum"`` uses Captum's outlier normalisation instead.
* :func:`diverging`: ``Σ_c a / p99(|Σ_c a|)`` clipped to [-1, 1]. PAIR's diverging form
  ``(v + s) / 2s`` with ``s = |p99(v)|`` is centred on 0.5 and collapses for mostly negative
  maps (ALGORITHMS.md §0); we keep 0 at 0 and the sign. ``method="captum"`` as above.
* :func:`captum_scale`: Captum's ``visualize_image_attr`` normalisation (a mass quantile:
  the value where the cumulative sum of the sorted ``|v|`` reaches ``100 - outlier_perc`` %).
* :func:`minmax` / :func:`scaled`: per-map min-max scaling (CAMs, as pytorch-grad-cam).

Pictures (all return uint8 RGB ``(H, W, 3)``):

* :func:`colorize` / :func:`heatmap_overlay`: an OpenCV colour map (by name or number),
  alone or blended onto the photo with ``alpha``.
* :func:`signed_colorize` / :func:`diverging_overlay`: signed maps, blue-white-red alone,
  green / red (or any two colours) over a grey photo.
* :func:`superpixel_overlay`: LIME's figure: positive superpixels green, negative red,
  boundaries drawn. :func:`top_fraction_overlay` / :func:`top_fraction_mask`: XRAI's
  "top 30 %".
* :func:`labelled_grid` (images x methods with captions) and :func:`save_png`.

Plots (matplotlib, an optional extra: ``pip install xai_torch[plots]``) live in
:mod:`xai_torch.plots` and are reachable here without importing matplotlib before use:
``plot_path_curve``, ``plot_causal_curves``, ``plot_randomization``, ``randomization_table``.

Inputs are tensors or arrays, any float dtype (float16 / bfloat16 included), on any device.
Maps are ``(B, C, H, W)``, ``(C, H, W)`` or ``(H, W)``; NumPy arrays may also be channels-last
``(H, W, C)`` / ``(B, H, W, C)`` (see :func:`as_maps`). Images are uint8 or float in [0, 1],
RGB ``(H, W, 3)``, grey ``(H, W)``, or a channels-first ``(3, H, W)`` / ``(1, 3, H, W)`` tensor
(see :func:`as_image`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .errors import XaiError, check_choice, describe

ArrayLike = Union[torch.Tensor, np.ndarray]
Color = tuple[int, int, int]

#: matplotlib-backed functions of :mod:`xai_torch.plots`, imported on first use
PLOTS = ("plot_path_curve", "plot_causal_curves", "plot_randomization", "randomization_table")
SIGNS = ("all", "positive", "negative", "absolute")
METHODS = ("pair", "captum")


def __getattr__(name: str):
    if name in PLOTS:
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(PLOTS))


# --- inputs -----------------------------------------------------------------------------------------
def _channels_last(shape: tuple) -> bool:
    return shape[-1] in (1, 3, 4) and shape[-3] not in (1, 3, 4)


def as_maps(attr: ArrayLike, layout: str = "auto") -> torch.Tensor:
    """Attributions as a float64 ``(B, C, H, W)`` CPU tensor (the common entry of this module).

    Args:
        attr: tensor or array, any float dtype (float16 / bfloat16 included), any device.
        layout: ``"chw"`` (channels first), ``"hwc"`` (channels last) or ``"auto"``: tensors
            are channels first; a 3-D / 4-D NumPy array is channels last when its last axis is
            1, 3 or 4 long and its third-from-last is not (PAIR's ``(H, W, C)`` layout).

    Returns:
        float64 ``(B, C, H, W)`` tensor; the input is never modified.

    Shape:
        ``(H, W)`` -> ``(1, 1, H, W)``; ``(C, H, W)`` / ``(H, W, C)`` -> ``(1, C, H, W)``;
        ``(B, C, H, W)`` / ``(B, H, W, C)`` -> ``(B, C, H, W)``.

    Example:
        >>> viz.as_maps(np.zeros((224, 224, 3))).shape
        torch.Size([1, 3, 224, 224])
    """
    if layout not in ("auto", "chw", "hwc"):
        raise XaiError(f"layout must be 'auto', 'chw' or 'hwc'; got {layout!r}.")
    was_numpy = not isinstance(attr, torch.Tensor)
    try:
        t = attr if isinstance(attr, torch.Tensor) else torch.as_tensor(np.asarray(attr))
    except (TypeError, ValueError, RuntimeError) as err:
        raise XaiError(f"attributions must be a tensor or a numeric array; got {describe(attr)} ({err}).") from None
    if t.dtype == torch.bool or t.is_complex():
        raise XaiError(f"attributions must be real numbers; got {describe(attr)}.")
    t = t.detach().to("cpu", torch.float64)
    if t.ndim not in (2, 3, 4) or t.numel() == 0:
        raise XaiError(f"attributions must be (B, C, H, W), (C, H, W) or (H, W); got {describe(attr)}.")
    hwc = t.ndim > 2 and (layout == "hwc" or (layout == "auto" and was_numpy and _channels_last(t.shape)))
    if hwc:
        t = t.movedim(-1, -3)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    if not torch.isfinite(t).all():
        raise XaiError(f"attributions contain NaN or infinity ({describe(attr)}); check the explainer's inputs.")
    return t


def as_image(image, shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """A picture as uint8 RGB ``(H, W, 3)``.

    Args:
        image: uint8 ``(H, W, 3)`` RGB (returned as is), ``(H, W)`` / ``(H, W, 1)`` grey, float
            in [0, 1] (scaled by 255 and rounded), or a channels-first ``(3, H, W)`` /
            ``(1, 3, H, W)`` tensor or array (one image only).
        shape: the ``(H, W)`` it must have (the map it is overlaid with), or ``None``.

    Returns:
        uint8 ``(H, W, 3)`` RGB array.

    Shape:
        ``(H, W, 3)`` / ``(H, W)`` / ``(3, H, W)`` / ``(1, 3, H, W)`` -> ``(H, W, 3)``.

    Example:
        >>> viz.as_image(torch.rand(3, 8, 8)).shape
        (8, 8, 3)
    """
    arr = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    ok = arr.ndim == 3 and arr.shape[2] == 3 and arr.size > 0
    if ok and arr.dtype != np.uint8:
        if arr.dtype.kind != "f":
            ok = False
        elif not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise XaiError(f"image must be uint8 RGB (H, W, 3) or floats in [0, 1]; got {describe(image)} with "
                           f"values in [{np.nanmin(arr):.3g}, {np.nanmax(arr):.3g}]. Undo the model's "
                           "normalisation, or pass uint8 pixels.")
        else:
            arr = np.round(arr * 255).astype(np.uint8)
    if not ok:
        raise XaiError(f"image must be uint8 RGB (H, W, 3) (or grey, or floats in [0, 1]); got {describe(image)}.")
    if shape is not None and arr.shape[:2] != tuple(shape):
        raise XaiError(f"image is {arr.shape[:2]} but the map is {tuple(shape)}; resize one of them.")
    return arr


def _one_map(m, what: str = "map", reduce: str = "sum") -> np.ndarray:
    """One ``(H, W)`` float64 map from ``(H, W)``, ``(1, H, W)``, ``(1, 1, H, W)`` (channels summed)."""
    t = as_maps(m)
    if t.shape[0] != 1:
        raise XaiError(f"{what} must be one image's map; got a batch of {t.shape[0]} ({describe(m)}). Index it.")
    t = t[0].abs().sum(0) if reduce == "abs" else t[0].sum(0)
    return t.numpy()


def _percentile(v: torch.Tensor, q: float) -> torch.Tensor:
    """Per image ``q``-th percentile (NumPy's linear interpolation) of ``(B, H, W)``, as ``(B, 1, 1)``."""
    if not 0 <= q <= 100:
        raise XaiError(f"percentile must be in [0, 100]; got {q!r}.")
    return torch.from_numpy(np.percentile(v.flatten(1).numpy(), q, axis=1))[:, None, None]


# --- normalisations ---------------------------------------------------------------------------------
def captum_scale(attr: ArrayLike, outlier_perc: float = 2.0, sign: str = "all") -> np.ndarray:
    """Captum's visualisation normalisation (``visualize_image_attr``), batched.

    ``v = Σ_c a`` per image; ``sign`` keeps all of it, its positive part, its negative part or
    ``|v|``; the scale is the value at which the cumulative sum of the sorted ``|v|`` first
    reaches ``100 - outlier_perc`` % of the total (a mass quantile, so the ``outlier_perc`` %
    of the mass held by the largest values saturates); ``v / scale`` clipped to [-1, 1]. For
    ``sign="negative"`` the scale is negated, as Captum does, so the result is in [0, 1].
    Captum asserts on a zero scale; here an all-zero map stays 0.

    Args:
        attr: attributions (see :func:`as_maps`).
        outlier_perc: percent of the attribution mass allowed to saturate, in [0, 100].
        sign: ``"all"``, ``"positive"``, ``"negative"`` or ``"absolute"``
            (``"absolute_value"`` is accepted too).

    Returns:
        float32 ``(B, H, W)``: in [-1, 1] for ``"all"``, in [0, 1] otherwise.

    Shape:
        ``(B, C, H, W)`` / ``(C, H, W)`` / ``(H, W)`` -> ``(B, H, W)``.

    Example:
        >>> norm = viz.captum_scale(ig_attributions, outlier_perc=2, sign="absolute")
    """
    sign = "absolute" if sign == "absolute_value" else sign
    check_choice(sign, "sign", SIGNS)
    if not 0 <= outlier_perc <= 100:
        raise XaiError(f"outlier_perc must be in [0, 100]; got {outlier_perc!r}.")
    v = as_maps(attr).sum(1)
    if sign == "positive":
        v = v.clamp(min=0)
    elif sign == "negative":
        v = v.clamp(max=0)
    elif sign == "absolute":
        v = v.abs()
    flat = torch.sort(v.abs().flatten(1), dim=1).values
    cum = torch.cumsum(flat, dim=1)
    reached = cum >= cum[:, -1:] * (0.01 * (100.0 - outlier_perc))
    scale = flat.gather(1, reached.double().argmax(1, keepdim=True))[:, :, None]  # first index that reaches
    scale = -scale if sign == "negative" else scale
    scale = torch.where(scale != 0, scale, torch.ones_like(scale))
    return (v / scale).clamp(-1, 1).float().numpy()


def grayscale(attr: ArrayLike, percentile: float = 99.0, *, method: str = "pair", outlier_perc: float = 2.0,
              layout: str = "auto") -> np.ndarray:
    """Unsigned attribution magnitude per image, in [0, 1].

    ``method="pair"`` (default) is PAIR saliency's ``VisualizeImageGrayscale``:
    ``v = Σ_c |a|``, then ``clip((v - min v) / (p(v) - min v), 0, 1)`` with ``p`` the
    ``percentile`` (NumPy's linear interpolation); a constant map gives 0 where PAIR divides by
    zero. ``method="captum"`` is :func:`captum_scale` with ``sign="absolute"`` (``Σ_c a`` first,
    then ``|.|``, as Captum does) and ``outlier_perc``.

    Args:
        attr: attributions (see :func:`as_maps`); ``layout`` as there.
        percentile: PAIR's upper percentile, in [0, 100].
        method: ``"pair"`` or ``"captum"``.
        outlier_perc: Captum's outlier percentage.

    Returns:
        float32 ``(B, H, W)`` in [0, 1].

    Shape:
        ``(B, C, H, W)`` / ``(C, H, W)`` / ``(H, W)`` -> ``(B, H, W)``.

    Example:
        >>> heat = viz.grayscale(xt.IntegratedGradients(model)(x))[0]
        >>> viz.save_png("ig.png", viz.heatmap_overlay(photo, heat))
    """
    check_choice(method, "method", METHODS)
    if method == "captum":
        return captum_scale(as_maps(attr, layout), outlier_perc, sign="absolute")
    v = as_maps(attr, layout).abs().sum(1)
    lo = v.flatten(1).min(1).values[:, None, None]
    hi = _percentile(v, percentile)
    span = torch.where(hi - lo > 0, hi - lo, torch.ones_like(hi))
    return ((v - lo) / span).clamp(0, 1).float().numpy()


def diverging(attr: ArrayLike, percentile: float = 99.0, *, method: str = "pair", outlier_perc: float = 2.0,
              layout: str = "auto") -> np.ndarray:
    """Signed attributions per image in [-1, 1], 0 kept at 0.

    ``method="pair"`` (default): ``Σ_c a / p(|Σ_c a|)`` clipped to [-1, 1], ``p`` the
    ``percentile``. This deliberately fixes PAIR's ``VisualizeImageDiverging``, which computes
    ``clip((v + s) / 2s, -1, 1)`` with ``s = |p(v)|``: centred on 0.5 rather than 0, and with
    ``s ≈ 0`` for maps that are mostly negative. On non-negative maps PAIR's result is exactly
    ``(ours + 1) / 2``. ``method="captum"`` is :func:`captum_scale` with ``sign="all"``.

    Args:
        attr: attributions (see :func:`as_maps`); ``layout`` as there.
        percentile: percentile of ``|Σ_c a|`` that maps to ±1.
        method: ``"pair"`` or ``"captum"``.
        outlier_perc: Captum's outlier percentage.

    Returns:
        float32 ``(B, H, W)``: positive evidence > 0, negative < 0; an all-zero map stays 0.

    Shape:
        ``(B, C, H, W)`` / ``(C, H, W)`` / ``(H, W)`` -> ``(B, H, W)``.

    Example:
        >>> signed = viz.diverging(xt.InputXGradient(model)(x))[0]
        >>> viz.save_png("ixg.png", viz.diverging_overlay(photo, signed))
    """
    check_choice(method, "method", METHODS)
    if method == "captum":
        return captum_scale(as_maps(attr, layout), outlier_perc, sign="all")
    v = as_maps(attr, layout).sum(1)
    scale = _percentile(v.abs(), percentile)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (v / scale).clamp(-1, 1).float().numpy()


def minmax(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per map (last two dims): ``(m - min) / (max(m - min) + eps)``; a constant map gives 0.

    Args:
        maps: tensor ``(..., H, W)`` of any float dtype.
        eps: added to the denominator; ``1e-7`` is pytorch-grad-cam's ``scale_cam_image``.

    Returns:
        tensor of the same shape and dtype, each map in [0, 1].

    Shape:
        ``(..., H, W)`` -> ``(..., H, W)``.

    Example:
        >>> viz.minmax(torch.tensor([[1.0, 3.0]]))
        tensor([[0., 1.]])
    """
    m = maps - maps.flatten(-2).min(-1).values[..., None, None]
    top = m.flatten(-2).max(-1).values[..., None, None] + eps
    return m / torch.where(top > 0, top, torch.ones_like(top))


def scaled(maps: ArrayLike) -> np.ndarray:
    """Non-negative maps (CAMs) min-max scaled per image to [0, 1], as pytorch-grad-cam shows them.

    Args:
        maps: ``(B, C, H, W)`` / ``(C, H, W)`` / ``(H, W)``; channels are summed first.

    Returns:
        float32 ``(B, H, W)`` in [0, 1]; a constant map gives 0.

    Shape:
        ``(B, C, H, W)`` -> ``(B, H, W)``.

    Example:
        >>> heat = viz.scaled(xt.GradCAM(model, layer="layer4")(x))[0]
    """
    return minmax(as_maps(maps).sum(1)).float().numpy()


# --- colour -----------------------------------------------------------------------------------------
def colormap_id(colormap: Union[str, int, None]) -> int:
    """OpenCV colour-map number for a name (``"jet"``, ``"viridis"``, ``"inferno"``, ...) or number.

    Args:
        colormap: a name as in ``cv2.COLORMAP_<NAME>`` (any case), an OpenCV number, or
            ``None`` (jet).

    Returns:
        the ``cv2.COLORMAP_*`` integer.

    Shape:
        no arrays.

    Example:
        >>> viz.colormap_id("viridis") == cv2.COLORMAP_VIRIDIS
        True
    """
    import cv2

    names = {n[len("COLORMAP_"):].lower(): getattr(cv2, n) for n in dir(cv2) if n.startswith("COLORMAP_")}
    if colormap is None:
        return cv2.COLORMAP_JET
    if isinstance(colormap, str) and colormap.lower() in names:
        return names[colormap.lower()]
    if isinstance(colormap, (int, np.integer)) and not isinstance(colormap, bool) and int(colormap) in names.values():
        return int(colormap)
    raise XaiError(f"unknown colormap {colormap!r}; use a cv2.COLORMAP_* number or one of {', '.join(sorted(names))}.")


def colorize(heat: ArrayLike, colormap: Union[str, int, None] = "jet") -> np.ndarray:
    """A map with values in [0, 1] through an OpenCV colour map (values outside are clipped).

    Args:
        heat: ``(H, W)`` (or one image's ``(1, H, W)`` / ``(1, 1, H, W)``), e.g. a row of
            :func:`grayscale` or :func:`scaled`.
        colormap: see :func:`colormap_id`.

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        ``(H, W)`` -> ``(H, W, 3)``.

    Example:
        >>> viz.colorize(viz.grayscale(attr)[0], "inferno").shape
        (224, 224, 3)
    """
    import cv2

    h = _one_map(heat, "heat")
    levels = np.uint8(np.clip(h, 0, 1) * 255)  # truncation, as before (and as pytorch-grad-cam)
    return np.ascontiguousarray(cv2.applyColorMap(levels, colormap_id(colormap))[..., ::-1])


def heatmap_overlay(image, heat: ArrayLike, alpha: float = 0.5, colormap: Union[str, int, None] = None) -> np.ndarray:
    """Blend an OpenCV colour map of ``heat`` (values in [0, 1]) onto ``image``.

    ``out = (1 - alpha) * image + alpha * colorize(heat)``, rounded down to uint8.

    Args:
        image: the photo (see :func:`as_image`), the same ``(H, W)`` as ``heat``.
        heat: ``(H, W)`` map in [0, 1] (or one image's ``(1, H, W)`` / ``(1, 1, H, W)``).
        alpha: weight of the colour map, in [0, 1].
        colormap: see :func:`colormap_id` (default jet).

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        image ``(H, W, 3)``, heat ``(H, W)`` -> ``(H, W, 3)``.

    Example:
        >>> over = viz.heatmap_overlay(photo, viz.scaled(cam)[0], alpha=0.4, colormap="viridis")
    """
    _check_alpha(alpha)
    h = _one_map(heat, "heat")
    image = as_image(image, h.shape)
    colored = colorize(h, colormap)
    return np.uint8(np.clip((1 - alpha) * image + alpha * colored, 0, 255))


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise XaiError(f"{name} must be a number in [0, 1]; got {alpha!r}.")


def _color(c, name: str) -> np.ndarray:
    arr = np.asarray(c, dtype=np.float64)
    if arr.shape != (3,) or not ((arr >= 0) & (arr <= 255)).all():
        raise XaiError(f"{name} must be an (R, G, B) triple of 0..255; got {c!r}.")
    return arr


def signed_colorize(signed: ArrayLike, negative: Color = (0, 0, 255), positive: Color = (255, 0, 0),
                    middle: Color = (255, 255, 255)) -> np.ndarray:
    """A signed map in [-1, 1] as a diverging picture: -1 blue, 0 white, +1 red (matplotlib's ``bwr``).

    Colours are interpolated linearly: ``middle + |s| * (end - middle)``; values outside
    [-1, 1] are clipped.

    Args:
        signed: ``(H, W)`` map in [-1, 1], e.g. a row of :func:`diverging`.
        negative, positive, middle: RGB colours of -1, +1 and 0.

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        ``(H, W)`` -> ``(H, W, 3)``.

    Example:
        >>> viz.save_png("signed.png", viz.signed_colorize(viz.diverging(attr)[0]))
    """
    s = np.clip(_one_map(signed, "signed"), -1, 1)[..., None]
    mid, pos, neg = _color(middle, "middle"), _color(positive, "positive"), _color(negative, "negative")
    out = mid + np.clip(s, 0, 1) * (pos - mid) + np.clip(-s, 0, 1) * (neg - mid)
    return np.uint8(np.round(out))


def diverging_overlay(image, signed: ArrayLike, alpha: float = 0.6, positive: Color = (0, 255, 0),
                      negative: Color = (255, 0, 0)) -> np.ndarray:
    """Tint a grey copy of the photo: ``positive`` colour where ``signed`` > 0, ``negative`` where < 0.

    ``out = (1 - α|s|) * grey + α|s| * |s| * colour`` with ``α = alpha``: 0 shows the grey
    photo, ±1 the colour at full ``alpha``, weak evidence a faint, darker tint. Pass
    ``positive=(255, 0, 0), negative=(0, 0, 255)`` for red / blue.

    Args:
        image: the photo (see :func:`as_image`), the same ``(H, W)`` as ``signed``.
        signed: ``(H, W)`` map in [-1, 1], e.g. a row of :func:`diverging`.
        alpha: the tint's weight at ``|signed| = 1``, in [0, 1].
        positive, negative: RGB colours (default green / red, as LIME).

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        image ``(H, W, 3)``, signed ``(H, W)`` -> ``(H, W, 3)``.

    Example:
        >>> over = viz.diverging_overlay(photo, viz.diverging(attr)[0])
    """
    _check_alpha(alpha)
    s = _one_map(signed, "signed")
    image = as_image(image, s.shape)
    grey = image.mean(2, keepdims=True).repeat(3, 2)
    pos, neg = np.clip(s, 0, 1)[..., None], np.clip(-s, 0, 1)[..., None]
    color = pos * _color(positive, "positive") + neg * _color(negative, "negative")
    weight = alpha * np.maximum(pos, neg)
    return np.uint8(np.clip((1 - weight) * grey + weight * color, 0, 255))


# --- regions ----------------------------------------------------------------------------------------
def _segment_weights(segments, weights) -> tuple[np.ndarray, np.ndarray]:
    seg = segments.detach().cpu().numpy() if isinstance(segments, torch.Tensor) else np.asarray(segments)
    while seg.ndim > 2 and seg.shape[0] == 1:
        seg = seg[0]
    if seg.ndim != 2 or seg.dtype.kind not in "iu" or seg.size == 0:
        raise XaiError(f"segments must be one image's integer labels (H, W); got {describe(segments)}.")
    if seg.min() < 0:
        raise XaiError(f"segment labels must be >= 0; got a minimum of {seg.min()}.")
    if isinstance(weights, Mapping):  # lime's local_exp pairs or {label: weight}
        w = np.zeros(int(seg.max()) + 1)
        for k, val in weights.items():
            if 0 <= int(k) < len(w):
                w[int(k)] = float(val)
    else:
        try:
            w = torch.as_tensor(weights).detach().to("cpu", torch.float64).numpy()
        except (TypeError, ValueError, RuntimeError):
            w = np.zeros((0, 0))
        w = w.reshape(-1) if w.ndim == 2 and w.shape[0] == 1 else w
    if w.ndim != 1 or len(w) <= seg.max():
        raise XaiError(f"weights need one value per segment label 0..{seg.max()}; got {describe(weights)}. "
                       "For a batched explanation pass res.segments[i] and res.weights[i].")
    return seg.astype(np.int64), w


def superpixel_overlay(image, segments, weights, *, top: Optional[int] = None, threshold: float = 0.0,
                       alpha: float = 0.5, boundaries: Optional[str] = "kept",
                       boundary_color: Color = (255, 255, 0)) -> np.ndarray:
    """LIME's picture (seed figure 4-27): positive superpixels green, negative red, boundaries drawn.

    Superpixels with ``|w| > threshold`` are kept; ``top=k`` keeps only the ``k`` largest
    ``|w|`` of those (ties: the lower label first). A kept superpixel is blended towards pure
    green (``w > 0``) or red (``w < 0``) with weight ``alpha * |w| / max |w_kept|``, so the
    most influential regions get the deepest colour; the rest of the photo is unchanged.
    Boundaries are skimage's ``find_boundaries(mode="outer")`` (``mark_boundaries``' default)
    painted in ``boundary_color``: of the kept superpixels (``"kept"``, as lime's
    ``mark_boundaries(temp, mask)`` but without merging neighbours), of all of them
    (``"all"``), or none (``None``).

    Args:
        image: the photo (see :func:`as_image`).
        segments: ``(H, W)`` integer labels >= 0 (``(1, H, W)`` accepted), e.g.
            ``res.segments[i]`` of :class:`xai_torch.region.LIME`.
        weights: one weight per label (``weights[label]``, extra entries ignored; e.g.
            ``res.weights[i]``) or a mapping ``{label: weight}``.
        top: keep at most this many superpixels (lime's ``num_features``); ``None``: all.
        threshold: keep ``|w| > threshold`` (lime's ``min_weight``).
        alpha: the tint's weight for the strongest superpixel, in [0, 1].
        boundaries: ``"kept"``, ``"all"`` or ``None``.
        boundary_color: RGB of the boundary pixels (default yellow, as ``mark_boundaries``).

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        image ``(H, W, 3)``, segments ``(H, W)``, weights ``(S,)`` with ``S > max label`` -> ``(H, W, 3)``.

    Example:
        >>> res = xt.LIME(model, seed=0).explain(x, image=pixels)
        >>> pic = viz.superpixel_overlay(photo, res.segments[0], res.weights[0], top=10)
    """
    from skimage.segmentation import find_boundaries

    _check_alpha(alpha)
    check_choice(boundaries, "boundaries", ("kept", "all", None))
    if top is not None and (not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 0):
        raise XaiError(f"top must be None or an integer >= 0; got {top!r}.")
    seg, w = _segment_weights(segments, weights)
    image = as_image(image, seg.shape).astype(np.float64)
    labels = np.unique(seg)
    lw = w[labels]
    keep = labels[np.abs(lw) > threshold]
    order = np.argsort(-np.abs(w[keep]), kind="stable")  # labels ascending, so ties keep the lower label
    keep = keep[order[:top] if top is not None else order]
    out = image.copy()
    if len(keep):
        strength = np.zeros(len(w))
        strength[keep] = alpha * np.abs(w[keep]) / max(np.abs(w[keep]).max(), 1e-300)
        s = strength[seg][..., None]
        target = np.where((w[seg] > 0)[..., None], [0.0, 255.0, 0.0], [255.0, 0.0, 0.0])
        out = (1 - s) * image + s * target
    if boundaries is not None:
        lab = seg + 1 if boundaries == "all" else np.where(np.isin(seg, keep), seg + 1, 0)
        edge = find_boundaries(lab, mode="outer", background=0) if lab.any() else np.zeros(seg.shape, bool)
        out[edge] = _color(boundary_color, "boundary_color")
    return np.uint8(np.clip(np.round(out), 0, 255))


def top_fraction_mask(heat: ArrayLike, fraction: float = 0.3) -> np.ndarray:
    """The ``round(fraction * H * W)`` highest pixels of a map (XRAI's "top 30 %"), exactly.

    Ties are broken by a stable order (the earlier pixel in raster order wins), so the count is
    exact even on flat maps; ``np.percentile`` thresholding (the seed's code) is not.

    Args:
        heat: one map ``(H, W)`` (``(1, H, W)`` / ``(1, C, H, W)`` accepted; channels summed).
        fraction: in [0, 1].

    Returns:
        bool ``(H, W)``.

    Shape:
        ``(H, W)`` -> ``(H, W)``.

    Example:
        >>> viz.top_fraction_mask(xrai_map, 0.3).mean()
        0.3
    """
    from .region.xrai import top_fraction

    return top_fraction(torch.from_numpy(_one_map(heat, "map"))[None], fraction, exact=True)[0].numpy()


def top_fraction_overlay(image, heat: ArrayLike, fraction: float = 0.3, dim: float = 0.3) -> np.ndarray:
    """The photo with every pixel outside the map's top ``fraction`` darkened (XRAI, seed figure 4-18).

    Pixels in :func:`top_fraction_mask` keep their value; the others are multiplied by ``dim``
    (``dim=0`` blacks them out, as the seed's code does).

    Args:
        image: the photo (see :func:`as_image`), the same ``(H, W)`` as ``heat``.
        heat: one map ``(H, W)`` (higher = more salient), e.g. XRAI's attributions.
        fraction: fraction of pixels kept, in [0, 1].
        dim: brightness factor of the other pixels, in [0, 1].

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        image ``(H, W, 3)``, heat ``(H, W)`` -> ``(H, W, 3)``.

    Example:
        >>> pic = viz.top_fraction_overlay(photo, xt.XRAI(model)(x)[0], fraction=0.3)
    """
    _check_alpha(dim, "dim")
    mask = top_fraction_mask(heat, fraction)
    image = as_image(image, mask.shape)
    out = np.where(mask[..., None], image.astype(np.float64), image * float(dim))
    return np.uint8(np.round(out))


# --- grids and files --------------------------------------------------------------------------------
def _put_text(canvas: np.ndarray, text: str, x: int, y: int, width: int, height: int) -> None:
    """Draw ``text`` in black, centred in the box ``(x, y, width, height)``, shrunk (then cut) to fit."""
    import cv2

    font, text = cv2.FONT_HERSHEY_SIMPLEX, str(text).encode("ascii", "replace").decode()  # Hershey fonts are ASCII
    scale = min(0.5, max(0.3, height / 40))
    size = lambda t, sc: cv2.getTextSize(t, font, sc, 1)[0]  # noqa: E731
    while scale > 0.3 and size(text, scale)[0] > width:
        scale = round(scale - 0.05, 2)
    while len(text) > 1 and size(text, scale)[0] > width:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    tw, th = size(text, scale)
    cv2.putText(canvas, text, (x + max(0, (width - tw) // 2), y + (height + th) // 2), font, scale, (0, 0, 0), 1,
                cv2.LINE_AA)


def labelled_grid(rows: Sequence[Sequence], labels: Sequence[str] = (), pad: int = 4, *,
                  row_labels: Sequence[str] = (), label_height: int = 22, row_label_width: int = 80,
                  column_labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Tile equally sized panels into a white grid, a caption over each column (e.g. images x methods).

    Args:
        rows: rows of panels (see :func:`as_image`: uint8 / float RGB or grey), all the same
            ``(H, W)``; rows may be shorter than the longest one.
        labels: column captions (e.g. ``["image", "gradcam", "ig"]``); text that does not fit
            is shrunk, then cut.
        pad: white pixels between and around panels.
        row_labels: captions left of each row (e.g. image names); none by default.
        column_labels: another name for ``labels`` (give one of them).
        label_height: height of the caption band; ``row_label_width``: width of the row band.

    Returns:
        uint8 RGB ``(band + R * (H + pad) + pad, left + C * (W + pad) + pad, 3)``.

    Shape:
        R rows of ``(H, W[, 3])`` panels -> one ``(H', W', 3)`` picture.

    Example:
        >>> grid = viz.labelled_grid([[photo, over_ig, over_cam]], ["image", "ig", "gradcam"], row_labels=["cat"])
        >>> viz.save_png("grid.png", grid)
    """
    if column_labels is not None:
        if len(labels):
            raise XaiError("give labelled_grid either labels or column_labels, not both.")
        labels = column_labels
    if not rows or not rows[0]:
        raise XaiError("labelled_grid needs at least one row with one panel.")
    if pad < 0:
        raise XaiError(f"pad must be >= 0; got {pad!r}.")
    first = as_image(rows[0][0])
    h, w = first.shape[:2]
    band = label_height if len(labels) else 0
    left = row_label_width if len(row_labels) else 0
    ncol = max(len(r) for r in rows)
    out = np.full((band + len(rows) * (h + pad) + pad, left + ncol * (w + pad) + pad, 3), 255, np.uint8)
    for j, text in enumerate(labels):
        _put_text(out, text, left + pad + j * (w + pad), 0, w, band)
    for i, text in enumerate(row_labels):
        _put_text(out, text, 2, band + pad + i * (h + pad), left - 4, h)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            panel = as_image(panel)
            if panel.shape[:2] != (h, w):
                raise XaiError(f"grid panels must all be {(h, w)}; panel ({i}, {j}) is {panel.shape[:2]}.")
            y, x = band + pad + i * (h + pad), left + pad + j * (w + pad)
            out[y:y + h, x:x + w] = panel
    return out


def save_png(path: Union[str, Path], rgb) -> Path:
    """Write a uint8 picture as PNG (RGB, RGBA or grey), creating parent folders.

    Args:
        path: file name ending in ``.png``.
        rgb: uint8 ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA, ``(H, W)`` / ``(H, W, 1)`` grey
            (array or tensor); written in that colour order (OpenCV's BGR is handled here).

    Returns:
        the ``Path`` written.

    Shape:
        ``(H, W[, 1 | 3 | 4])`` -> a PNG of ``W x H`` pixels.

    Example:
        >>> viz.save_png("out/cat_ig.png", viz.heatmap_overlay(photo, heat))
    """
    import cv2

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise XaiError(f"save_png writes PNG files; name it *.png (got {str(path)!r}).")
    arr = rgb.detach().cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise XaiError(f"save_png writes uint8 images; got {describe(arr)}. Use viz.as_image to convert floats.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or arr.size == 0:
        raise XaiError(f"save_png writes (H, W), (H, W, 3) or (H, W, 4) uint8 images; got {describe(arr)}.")
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(arr)):
        raise XaiError(f"could not write {path}.")
    return path
