"""Decoding one image file right, whatever its kind, or saying why it cannot be used.

:func:`decode_image` turns the bytes of an image file into RGB pixels scaled to ``[0, 1]``:

* 8-bit images (``RGB``, ``L``, ``1``, palette ``P``, ``CMYK``, ``YCbCr``...) stay ``uint8``
  (values / 255), decoded as torchvision's ``ImageFolder`` does (``convert("RGB")``), so runs
  on ordinary photos are unchanged.
* High-depth images are scaled, never clipped: 16-bit grey (PNG / TIFF ``I;16*``) by 65535,
  32-bit integer grey (``I``) by 65535 when its values fit 16 bits, float grey (``F``) used as is
  when in ``[0, 1]`` or divided by 255 when in ``[0, 255]``, and 16-bit RGB / RGBA PNG or TIFF
  (which PIL reduces to their high byte) decoded again with OpenCV at full 16-bit precision.
  ``convert("RGB")`` would clip all of these to a white image.
* Transparency is dropped (``RGBA``, ``LA``, ``PA``, palettes with a transparent colour): the
  colour under the alpha is used, as ``convert("RGB")`` does.
* EXIF orientation is applied (a photo taken sideways is explained upright).
* A file that cannot be used raises :class:`BadImage` with the reason: empty (0 bytes), not an
  image (e.g. a macOS ``._name.jpg`` resource file), truncated or corrupt, too many pixels (a
  decompression bomb: more than ``max_pixels``, PIL's ``Image.MAX_IMAGE_PIXELS`` = 89.5 MP by
  default), or pixel values this module cannot scale (float outside ``[0, 255]``, NaN).
"""
from __future__ import annotations

import io
import warnings
from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

from ..errors import XaiError


class BadImage(XaiError):
    """An image that cannot be used: ``id`` names it, ``reason`` says why (empty file, not an
    image, truncated, decompression bomb, ...).

    Example:
        >>> try:
        ...     decode_image(b"", "a.png")
        ... except BadImage as err:
        ...     print(err.id, "-", err.reason)
        a.png - empty file (0 bytes)
    """

    def __init__(self, id: str, reason: str) -> None:
        super().__init__(f"image {id!r} cannot be used: {reason}.")
        self.id, self.reason = id, reason


def _pixels_limit(max_pixels: Optional[int]) -> Optional[int]:
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels


def decode_image(data: bytes, id: str, max_pixels: Optional[int] = None) -> NDArray[Any]:
    """The RGB pixels of an image file's bytes.

    Args:
        data: the file's bytes.
        id: the image's name, for :class:`BadImage`.
        max_pixels: refuse images with more pixels (default PIL's ``Image.MAX_IMAGE_PIXELS``,
            89,478,485); ``0`` or a negative value: no limit of ours. PIL itself refuses
            twice its ``Image.MAX_IMAGE_PIXELS`` whatever this says: raise that global for
            genuine giant images.

    Returns:
        ``(H, W, 3)``: ``uint8`` for 8-bit images (pixel = value / 255), ``float32`` in
        ``[0, 1]`` for high-depth ones.

    Raises:
        BadImage: the file cannot be used (the reason says why).

    Example:
        >>> rgb = decode_image(open("photo.png", "rb").read(), "photo.png")
        >>> rgb.shape, rgb.dtype
        ((480, 640, 3), dtype('uint8'))
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadImage(id, "empty file (0 bytes)")
    limit = _pixels_limit(max_pixels)
    try:
        with warnings.catch_warnings():  # the size is checked below, with the reason named
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise BadImage(id, f"too many pixels, a possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        what = "a macOS resource-fork file (._name), " if id.rsplit("/", 1)[-1].startswith("._") else ""
        raise BadImage(id, f"not an image ({what}{len(data)} bytes PIL cannot identify)") from None
    except Exception as err:  # noqa: BLE001 - any header PIL chokes on
        raise BadImage(id, f"truncated or corrupt header ({type(err).__name__}: {err})") from None
    with im:
        w, h = im.size
        if limit and limit > 0 and w * h > limit:
            raise BadImage(id, f"too many pixels ({w} x {h} = {w * h / 1e6:.1f} MP > {limit / 1e6:.1f} MP), a "
                               "possible decompression bomb; raise max_pixels if the image is genuine")
        if w * h == 0:
            raise BadImage(id, f"no pixels ({w} x {h})")
        rawmode = _rawmode(im)  # before load(), which clears the tiles
        try:
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            upright = ImageOps.exif_transpose(im) if orientation != 1 else im
            rgb = _to_rgb(upright, id)
        except BadImage:
            raise
        except Exception as err:  # noqa: BLE001 - truncated data, bad chunks, codec errors
            raise BadImage(id, f"truncated or corrupt ({type(err).__name__}: {err})") from None
    if rgb.dtype == np.uint8 and im.mode in ("RGB", "RGBA") and ";16" in rawmode:
        return _rgb16(data, orientation, rgb)
    return rgb


def _rawmode(im: Any) -> str:
    """The raw mode of the image's first tile (``"RGB;16B"`` for a 16-bit RGB PNG), or ``""``."""
    tile = getattr(im, "tile", None) or []
    if not tile:
        return ""
    args = tile[0][3] if len(tile[0]) > 3 else None
    return str(args[0] if isinstance(args, tuple) else args)


def _to_rgb(im: Any, id: str) -> NDArray[Any]:
    """PIL image -> ``(H, W, 3)`` uint8, or float32 in [0, 1] for high-depth grey modes."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        grey = _scale_grey(a.astype(np.float64) if mode != "F" else a.astype(np.float64), mode, id)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL asks for this step before RGB
    return np.asarray(im.convert("RGB"))


def _scale_grey(a: NDArray[Any], mode: str, id: str) -> NDArray[Any]:
    """A high-depth grey image scaled to [0, 1] float32."""
    if not np.isfinite(a).all():
        raise BadImage(id, f"{mode} image with NaN or infinite pixels")
    lo, hi = float(a.min()), float(a.max())
    if mode.startswith("I;16"):
        scale = 65535.0
    elif mode == "I":
        if lo < 0 or hi > 65535:
            raise BadImage(id, f"32-bit integer pixels in [{lo:g}, {hi:g}], outside the 16-bit range this "
                               "decoder scales; save it with 8 or 16 bits per channel")
        scale = 65535.0
    elif lo >= 0 and hi <= 1:
        scale = 1.0
    elif lo >= 0 and hi <= 255:
        scale = 255.0
    else:
        raise BadImage(id, f"float pixels in [{lo:g}, {hi:g}], neither [0, 1] nor [0, 255]; rescale it")
    return (a / scale).astype(np.float32)


def _rgb16(data: bytes, orientation: int, high: NDArray[Any]) -> NDArray[Any]:
    """A 16-bit RGB(A) PNG or TIFF at full precision: PIL keeps only the high byte (``high``,
    right in scale), OpenCV decodes all 16 bits; OpenCV's pixels are used when their high
    bytes are PIL's, else PIL's 8 bits are (scaled right, less precise)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return high
    rgb16 = _orient(arr[:, :, 2::-1], orientation)
    if rgb16.shape != high.shape or not np.array_equal((rgb16 >> 8).astype(np.uint8), high):
        return high
    full: NDArray[Any] = np.ascontiguousarray(rgb16, dtype=np.float32) / np.float32(65535.0)
    return full


def _orient(a: NDArray[Any], orientation: int) -> NDArray[Any]:
    """Apply an EXIF orientation (1-8) to ``(H, W, C)`` pixels, as ``ImageOps.exif_transpose``."""
    ops = {2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
           5: lambda x: x.transpose(1, 0, 2), 6: lambda x: x.transpose(1, 0, 2)[:, ::-1],
           7: lambda x: x.transpose(1, 0, 2)[::-1, ::-1], 8: lambda x: x.transpose(1, 0, 2)[::-1]}
    op = ops.get(orientation)
    return op(a) if op is not None else a
