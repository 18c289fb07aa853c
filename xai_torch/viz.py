"""Pictures of attributions. Explainers return raw values; normalising happens only here.

* :func:`grayscale`: PAIR saliency's ``Σ_c |a|`` scaled by its 99th percentile, in [0, 1].
* :func:`diverging`: ``Σ_c a / p99(|Σ_c a|)`` clipped to [-1, 1] (PAIR's diverging form is
  centred wrongly; ALGORITHMS.md §0).
* :func:`minmax` / :func:`scaled`: per-map min-max scaling (CAMs).
* :func:`heatmap_overlay` / :func:`diverging_overlay`: colour maps blended onto the photo.
* :func:`save_png`, :func:`labelled_grid`.

Inputs are tensors or arrays ``(B, C, H, W)``, ``(C, H, W)`` or ``(H, W)``, any float dtype
(float16 / bfloat16 included); images are uint8 RGB ``(H, W, 3)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch

from .errors import XaiError, describe

ArrayLike = Union[torch.Tensor, np.ndarray]


def _maps(attr: ArrayLike) -> torch.Tensor:
    """-> float64 ``(B, C, H, W)`` on the CPU."""
    t = torch.as_tensor(attr) if not isinstance(attr, torch.Tensor) else attr
    t = t.detach().to("cpu", torch.float64)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise XaiError(f"attributions must be (B, C, H, W), (C, H, W) or (H, W); got {describe(attr)}.")
    return t


def _percentile(v: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(v.flatten(1), q / 100.0, dim=1)[:, None, None]


def grayscale(attr: ArrayLike, percentile: float = 99.0) -> np.ndarray:
    """``Σ_c |a|`` per image, mapped to [0, 1] by its min and ``percentile`` (PAIR saliency).

    Returns:
        float32 ``(B, H, W)``.
    """
    v = _maps(attr).abs().sum(1)
    lo = v.flatten(1).min(1).values[:, None, None]
    hi = _percentile(v, percentile)
    span = torch.where(hi - lo > 0, hi - lo, torch.ones_like(hi))
    return ((v - lo) / span).clamp(0, 1).float().numpy()


def diverging(attr: ArrayLike, percentile: float = 99.0) -> np.ndarray:
    """``Σ_c a`` per image divided by the ``percentile`` of its magnitude, clipped to [-1, 1].

    Returns:
        float32 ``(B, H, W)``: positive evidence > 0, negative < 0, an all-zero map stays 0.
    """
    v = _maps(attr).sum(1)
    scale = _percentile(v.abs(), percentile)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (v / scale).clamp(-1, 1).float().numpy()


def minmax(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per map (last two dims): ``(m - min) / (max(m - min) + eps)``; a constant map gives 0.

    ``eps=1e-7`` is pytorch-grad-cam's ``scale_cam_image``.
    """
    m = maps - maps.flatten(-2).min(-1).values[..., None, None]
    top = m.flatten(-2).max(-1).values[..., None, None] + eps
    return m / torch.where(top > 0, top, torch.ones_like(top))


def scaled(maps: ArrayLike) -> np.ndarray:
    """Non-negative maps (CAMs) min-max scaled per image to [0, 1]: ``(B, H, W)`` float32."""
    return minmax(_maps(maps).sum(1)).float().numpy()


def _check_image(image: np.ndarray, shape) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise XaiError(f"image must be uint8 RGB (H, W, 3); got {describe(image)}.")
    if image.shape[:2] != tuple(shape):
        raise XaiError(f"image is {image.shape[:2]} but the map is {tuple(shape)}; resize one of them.")
    return image


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, colormap: int | None = None) -> np.ndarray:
    """Blend an OpenCV colour map of ``heat`` (values in [0, 1], ``(H, W)``) onto ``image``."""
    import cv2

    heat = np.asarray(heat, dtype=np.float32)
    image = _check_image(image, heat.shape)
    cmap = cv2.COLORMAP_JET if colormap is None else colormap
    colored = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cmap)[..., ::-1]
    return np.uint8(np.clip((1 - alpha) * image + alpha * colored, 0, 255))


def diverging_overlay(image: np.ndarray, signed: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Green where ``signed`` (in [-1, 1]) is positive, red where negative, over a grey photo."""
    signed = np.asarray(signed, dtype=np.float32)
    image = _check_image(image, signed.shape)
    grey = image.mean(2, keepdims=True).repeat(3, 2)
    pos, neg = np.clip(signed, 0, 1)[..., None], np.clip(-signed, 0, 1)[..., None]
    color = pos * np.array([0, 255, 0]) + neg * np.array([255, 0, 0])
    weight = alpha * np.maximum(pos, neg)
    return np.uint8(np.clip((1 - weight) * grey + weight * color, 0, 255))


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str] = (), pad: int = 4) -> np.ndarray:
    """Tile equally sized uint8 RGB panels into rows, with a caption over each column."""
    import cv2

    if not rows or not rows[0]:
        raise XaiError("labelled_grid needs at least one row with one panel.")
    h, w = rows[0][0].shape[:2]
    band = 22 if labels else 0
    ncol = max(len(r) for r in rows)
    out = np.full((band + len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for j, text in enumerate(labels):
        cv2.putText(out, str(text)[: max(4, w // 8)], (pad + j * (w + pad), 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            if panel.shape[:2] != (h, w):
                raise XaiError(f"grid panels must all be {(h, w)}; panel ({i}, {j}) is {panel.shape[:2]}.")
            y, x = band + pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = panel
    return out


def save_png(path: Union[str, Path], rgb: np.ndarray) -> Path:
    """Write a uint8 RGB (or greyscale) array as PNG, creating folders; returns the path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise XaiError(f"save_png writes uint8 images; got {describe(arr)}.")
    if arr.ndim == 3:
        arr = arr[..., ::-1]
    if not cv2.imwrite(str(path), np.ascontiguousarray(arr)):
        raise XaiError(f"could not write {path}.")
    return path
