"""Inputs of the pictures: attributions as maps, photos as uint8 RGB, colours and weights checked."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, describe

#: maps, images and weights: a tensor (any device, any float dtype) or a NumPy array
ArrayLike = Union[torch.Tensor, np.ndarray]
#: an RGB colour, each of 0..255
Color = tuple[int, int, int]


def _channels_last(shape: Sequence[int]) -> bool:
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


def as_image(image: ArrayLike, shape: Optional[Sequence[int]] = None) -> np.ndarray:
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


def _one_map(m: ArrayLike, what: str = "map", reduce: str = "sum") -> np.ndarray:
    """One ``(H, W)`` float64 map from ``(H, W)``, ``(1, H, W)``, ``(1, 1, H, W)`` (channels summed)."""
    t = as_maps(m)
    if t.shape[0] != 1:
        raise XaiError(f"{what} must be one image's map; got a batch of {t.shape[0]} ({describe(m)}). Index it.")
    t = t[0].abs().sum(0) if reduce == "abs" else t[0].sum(0)
    return t.numpy()


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise XaiError(f"{name} must be a number in [0, 1]; got {alpha!r}.")


def _color(c: Any, name: str) -> np.ndarray:
    arr = np.asarray(c, dtype=np.float64)
    if arr.shape != (3,) or not ((arr >= 0) & (arr <= 255)).all():
        raise XaiError(f"{name} must be an (R, G, B) triple of 0..255; got {c!r}.")
    return arr
