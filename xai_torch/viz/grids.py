"""Layout and files: panels tiled into a captioned grid, pictures written as PNG."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..errors import XaiError, describe
from .inputs import ArrayLike, as_image


def _put_text(canvas: np.ndarray, text: str, x: int, y: int, width: int, height: int) -> None:
    """Draw ``text`` in black, centred in the box ``(x, y, width, height)``, shrunk (then cut) to fit."""
    import cv2

    font, text = cv2.FONT_HERSHEY_SIMPLEX, str(text).encode("ascii", "replace").decode()  # Hershey fonts are ASCII
    scale = min(0.5, max(0.3, height / 40))

    def size(t: str, sc: float) -> tuple[int, int]:
        (w, h), _ = cv2.getTextSize(t, font, sc, 1)
        return int(w), int(h)

    while scale > 0.3 and size(text, scale)[0] > width:
        scale = round(scale - 0.05, 2)
    while len(text) > 1 and size(text, scale)[0] > width:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    tw, th = size(text, scale)
    cv2.putText(canvas, text, (x + max(0, (width - tw) // 2), y + (height + th) // 2), font, scale, (0, 0, 0), 1,
                cv2.LINE_AA)


def labelled_grid(rows: Sequence[Sequence[ArrayLike]], labels: Sequence[str] = (), pad: int = 4, *,
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


def save_png(path: Union[str, Path], rgb: ArrayLike) -> Path:
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
