"""Normalisations: attributions as float32 ``(B, H, W)`` maps in [0, 1] or [-1, 1]."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import XaiError, check_choice
from ..imageops import minmax
from .inputs import ArrayLike, as_maps

SIGNS = ("all", "positive", "negative", "absolute")
METHODS = ("pair", "captum")


def _percentile(v: torch.Tensor, q: float) -> torch.Tensor:
    """Per image ``q``-th percentile (NumPy's linear interpolation) of ``(B, H, W)``, as ``(B, 1, 1)``."""
    if not 0 <= q <= 100:
        raise XaiError(f"percentile must be in [0, 100]; got {q!r}.")
    return torch.from_numpy(np.percentile(v.flatten(1).numpy(), q, axis=1))[:, None, None]


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
