"""The pixel side of PIC (:mod:`xai_torch.metrics.pic`): random seed masks, "bokeh" images
re-interpolated from a few known pixels, WebP entropy, photos <-> model inputs, and the thread
pool that runs the CPU work.

All of it is model-free and works on uint8 photos ``(H, W, C)`` as PAIR's
``saliency/metrics/pic.py`` does (ALGORITHMS.md §7.2).
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, TypeVar, Union

import numpy as np
import numpy.typing as npt
import torch

from ..batching import progress_bar
from ..errors import XaiError, describe
from ..threads import one_blas_thread
from ._common import check_fraction

Array = npt.NDArray[Any]
R = TypeVar("R")


def generate_random_mask(height: int, width: int, fraction: float = 0.01, *, batch: Optional[int] = None,
                         seed: Union[None, int, torch.Generator] = None) -> torch.Tensor:
    """Random pixel masks that seed the fully blurred image: exactly ``int(H * W * fraction)``
    pixels are True (as PAIR's ``generate_random_mask``, drawn with torch).

    Args:
        height, width: the image size.
        fraction: the fraction of pixels to keep, in [0, 1].
        batch: ``None`` for one ``(H, W)`` mask, else the number of masks (one per image,
            drawn independently).
        seed: ``None`` (fresh randomness), an int, or a ``torch.Generator`` (advanced).

    Returns:
        A bool tensor on the CPU.

    Shape:
        ``(H, W)``, or ``(batch, H, W)`` when ``batch`` is given.

    Example:
        >>> m = generate_random_mask(224, 224, 0.01, batch=4, seed=0)    # 501 True per mask
    """
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise XaiError(f"{name} must be an integer >= 1; got {describe(v)}.")
    fraction = check_fraction(fraction, "fraction")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise XaiError(f"batch must be None or an integer >= 1; got {describe(batch)}.")
    gen = _generator(seed)
    n, k = int(height) * int(width), int(int(height) * int(width) * fraction)
    masks = torch.zeros(1 if batch is None else int(batch), n, dtype=torch.bool)
    for row in masks:
        row[torch.randperm(n, generator=gen)[:k]] = True
    masks = masks.reshape(-1, int(height), int(width))
    return masks[0] if batch is None else masks


def _generator(seed: object) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise XaiError(f"seed must be None, an int or a torch.Generator; got {describe(seed)}.")
    else:
        gen.manual_seed(int(seed))
    return gen


def as_numpy(a: object, name: str) -> Array:
    """A numpy array or a tensor as numpy (tensors copied to the CPU)."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise XaiError(f"{name} must be a numpy array or a torch tensor; got {describe(a)}.")


def _bokeh(img: Array, known: Array) -> Array:
    """The work of :func:`bokeh_image` on checked numpy input (``known`` is a fresh copy)."""
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import Delaunay

    h, w = known.shape
    known[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]] = True
    if known.all():
        return np.copy(img)
    img3 = img if img.ndim == 3 else img[..., None]
    work = np.result_type(img.dtype, np.float32)  # PAIR's ``img * mask.astype(float32)``
    # One triangulation serves every channel (PAIR re-triangulates per channel: same values).
    tri = Delaunay(np.argwhere(known).astype(np.float64))
    values = LinearNDInterpolator(tri, img3[known].astype(np.float64), fill_value=np.nan)(
        np.argwhere(~known).astype(np.float64))
    mean = img3.mean(axis=(0, 1))
    values = np.where(np.isnan(values), mean, values)  # never used: the corners span the frame
    out = img3.astype(work)
    out[~known] = values.astype(work)
    if np.issubdtype(img.dtype, np.integer):
        out = np.round(out)
    out = out.astype(img.dtype)
    return out if img.ndim == 3 else out[..., 0]


def bokeh_image(image: Union[Array, torch.Tensor], mask: Union[Array, torch.Tensor]) -> Union[Array, torch.Tensor]:
    """The image re-interpolated from the pixels where ``mask`` is True (PAIR's
    ``create_blurred_image``, method "linear").

    The four corners always count as known. If every pixel is known the image comes back
    unchanged; otherwise each channel is interpolated linearly on the Delaunay triangulation of
    the known pixels (scipy ``griddata`` semantics), the values pass through float32 and are
    rounded (half to even) for integer images.

    Args:
        image: a numpy array or tensor ``(H, W, C)`` or ``(H, W)``, any real dtype.
        mask: ``(H, W)`` bool (or 0/1) array or tensor: True where the pixel is known.

    Returns:
        The interpolated image, same shape, dtype and container (tensors on their device).

    Shape:
        ``(H, W, C)`` or ``(H, W)`` as given.

    Example:
        >>> blurred = bokeh_image(photo, generate_random_mask(*photo.shape[:2], 0.01, seed=0))
    """
    img = as_numpy(image, "image")
    m = as_numpy(mask, "mask")
    if img.ndim not in (2, 3) or img.dtype.kind not in "uif" or min(img.shape[:2]) < 1:
        raise XaiError(f"image must be a real (H, W, C) or (H, W) array; got {describe(image)}.")
    if m.shape != img.shape[:2] or not (m.dtype == bool or bool(np.isin(m, (0, 1)).all())):
        raise XaiError(f"mask must be a bool (H, W) = {img.shape[:2]} array; got {describe(mask)}.")
    out = _bokeh(img, m.astype(bool, copy=True))
    return torch.from_numpy(out).to(image.device) if isinstance(image, torch.Tensor) else out


def webp_size(img: Array) -> int:
    """Bytes of ``img`` (uint8 ``(H, W, 3)`` or ``(H, W)``) as lossless WebP, unchecked."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="webp", lossless=True, quality=100)
    return buf.tell()


def webp_entropy(image: Union[Array, torch.Tensor]) -> int:
    """PIC's information estimate: the byte size of the image encoded as lossless WebP
    (quality 100, Pillow), as PAIR's ``estimate_image_entropy``.

    Args:
        image: uint8 array or tensor ``(H, W, 3)``, ``(H, W, 1)`` or ``(H, W)``.

    Returns:
        The size in bytes (int).

    Example:
        >>> webp_entropy(xt.zoo.image("chelsea"))
    """
    img = as_numpy(image, "image")
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise XaiError(f"image must be uint8 (H, W, 3), (H, W, 1) or (H, W); got {describe(image)}.")
    check_webp()
    return webp_size(np.ascontiguousarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img))


def check_webp() -> None:
    """Raise unless Pillow can encode WebP."""
    from PIL import features

    if not features.check("webp"):
        raise XaiError("PIC measures information as WebP sizes, but this Pillow has no WebP support; "
                       "install a Pillow wheel built with libwebp (pip install --force-reinstall pillow).")


def photo2d(img: Array) -> Array:
    """An ``(H, W, 1)`` photo as ``(H, W)`` (what WebP encodes); ``(H, W, 3)`` unchanged."""
    return img[..., 0] if img.shape[2] == 1 else img


def blur_measure(img: Array, known: Array) -> tuple[Array, int]:
    """The bokeh image of a ``(H, W, C)`` photo from the ``known`` pixels, and its WebP size."""
    out = _bokeh(img, known.copy())
    return out, webp_size(photo2d(out))


# --------------------------------------------------------------------------------------------
# Photos and model inputs
def _channel_param(value: object, c: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() not in (1, c) or not bool(torch.isfinite(t).all()):
        raise XaiError(f"{name} needs 1 or {c} finite values (one per channel); got {describe(value)}.")
    return t.reshape(1, -1, 1, 1).expand(1, c, 1, 1)


def pixel_space(normalize: Optional[Sequence[Any]], input_range: Optional[Sequence[Any]],
                c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, offset)`` with model input = pixel01 * scale + offset, each ``(1, C, 1, 1)`` float64."""
    if normalize is not None and input_range is not None:
        raise XaiError("give normalize=(mean, std) or input_range=(lo, hi), not both.")
    for name, value in (("normalize", normalize), ("input_range", input_range)):
        if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
                                  or len(value) != 2):
            raise XaiError(f"{name} must be a pair; got {describe(value)}.")
    if normalize is not None:
        mean, std = _channel_param(normalize[0], c, "normalize mean"), _channel_param(normalize[1], c, "normalize std")
        if bool((std <= 0).any()):
            raise XaiError(f"normalize std must be > 0; got {normalize[1]!r}.")
        return 1.0 / std, -mean / std
    if input_range is not None:
        lo = _channel_param(input_range[0], c, "input_range lo")
        hi = _channel_param(input_range[1], c, "input_range hi")
        if bool((hi <= lo).any()):
            raise XaiError(f"input_range needs hi > lo; got {input_range!r}.")
        return hi - lo, lo
    return torch.ones(1, c, 1, 1, dtype=torch.float64), torch.zeros(1, c, 1, 1, dtype=torch.float64)


def check_image(image: object, b: int, h: int, w: int) -> Array:
    """User photos -> uint8 ``(B, H, W, C)`` numpy (a copy), C in (1, 3)."""
    if isinstance(image, (list, tuple)):
        if len(image) != b:
            raise XaiError(f"image has {len(image)} photos for {b} images in x.")
        arrays = [as_numpy(i, "image") for i in image]
        if any(a.dtype != np.uint8 for a in arrays):
            bad = next(a for a in arrays if a.dtype != np.uint8)
            raise XaiError(f"image must hold uint8 photos (0..255); got dtype {bad.dtype}.")
        try:
            arr = np.stack(arrays)
        except ValueError:
            raise XaiError(f"image photos differ in shape: {[a.shape for a in arrays][:4]}.") from None
    else:
        arr = as_numpy(image, "image")
    if arr.dtype != np.uint8:
        raise XaiError(f"image must be uint8 photos (0..255), as PIC measures WebP sizes of pixels; got "
                       f"{describe(image)}. Convert with (x * 255).round().astype(np.uint8).")
    if arr.ndim == 3 and b == 1 and arr.shape[:2] == (h, w):
        arr = arr[None]
    if arr.ndim == 3 and arr.shape == (b, h, w):
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[:3] != (b, h, w) or arr.shape[3] not in (1, 3):
        raise XaiError(f"image must be uint8 (B, H, W, 3) or (B, H, W) = ({b}, {h}, {w}, ...) photos matching x; "
                       f"got {describe(image)}.")
    return np.array(arr, dtype=np.uint8, copy=True)


def check_random_mask(random_mask: object, b: int, h: int, w: int) -> Array:
    """Seed pixels ``(H, W)`` or ``(B, H, W)`` -> bool ``(B, H, W)`` numpy (a copy)."""
    m = as_numpy(random_mask, "random_mask")
    if m.shape == (h, w):
        m = np.broadcast_to(m, (b, h, w))
    if m.shape != (b, h, w) or not (m.dtype == bool or bool(np.isin(m, (0, 1)).all())):
        raise XaiError(f"random_mask must be bool (H, W) or (B, H, W) = ({b}, {h}, {w}); got "
                       f"{describe(random_mask)}. Make one with generate_random_mask(H, W, batch=B).")
    return np.array(m, dtype=bool, copy=True)


# --------------------------------------------------------------------------------------------
# The CPU work
def run_pool(fn: Callable[..., R], tasks: list[tuple[Any, ...]], workers: int, progress: Optional[bool],
             desc: str) -> list[R]:
    """``[fn(*t) for t in tasks]`` on a thread pool (scipy's qhull and Pillow's WebP encoder
    release the GIL), in order."""
    bar = progress_bar(len(tasks), len(tasks), progress, desc) if tasks else None
    try:
        out: list[R] = []
        if workers <= 1 or len(tasks) <= 1:
            with one_blas_thread():
                for t in tasks:
                    out.append(fn(*t))
                    if bar is not None:
                        bar.update(1)
            return out
        with one_blas_thread(), ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            futures = [pool.submit(fn, *t) for t in tasks]
            for f in futures:
                out.append(f.result())
                if bar is not None:
                    bar.update(1)
            return out
    finally:
        if bar is not None:
            bar.close()


__all__ = ["generate_random_mask", "bokeh_image", "webp_entropy", "webp_size", "check_webp", "blur_measure",
           "photo2d", "pixel_space", "check_image", "check_random_mask", "one_blas_thread", "run_pool", "as_numpy"]
