"""Colour maps and overlays: heat maps blended onto the photo, signed maps in two colours."""
from __future__ import annotations

from typing import Union

import numpy as np

from ..errors import XaiError
from .inputs import ArrayLike, Color, _check_alpha, _color, _one_map, as_image


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
        return int(cv2.COLORMAP_JET)
    if isinstance(colormap, str) and colormap.lower() in names:
        return int(names[colormap.lower()])
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
    bgr: np.ndarray = cv2.applyColorMap(levels, colormap_id(colormap))
    return np.ascontiguousarray(bgr[..., ::-1])


def heatmap_overlay(image: ArrayLike, heat: ArrayLike, alpha: float = 0.5,
                    colormap: Union[str, int, None] = None) -> np.ndarray:
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
    return np.clip((1 - alpha) * image + alpha * colored, 0, 255).astype(np.uint8)


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
    pic: np.ndarray = np.round(out).astype(np.uint8)
    return pic


def diverging_overlay(image: ArrayLike, signed: ArrayLike, alpha: float = 0.6, positive: Color = (0, 255, 0),
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
    pic: np.ndarray = np.clip((1 - weight) * grey + weight * color, 0, 255).astype(np.uint8)
    return pic
