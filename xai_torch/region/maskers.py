"""Image maskers of :class:`~xai_torch.region.PartitionSHAP`: what a hidden pixel shows.

The strings mean what they mean in ``shap.maskers.Image``, computed on the image as shap lays
it out (``(H, W, C)``, shap's ``x`` axis is the image height):

* ``"blur(kx,ky)"``: OpenCV's box filter ``cv2.blur(image, (kx, ky))``: the mean over a ``ky``
  rows x ``kx`` columns window anchored at its centre (``k // 2`` before, the rest after),
  borders reflected without repeating the edge (``BORDER_REFLECT_101``). It is linear, so it
  is computed in torch on the model-space images, on their device (:func:`box_blur`), and
  equals shap's blur of the same images.
* ``"inpaint_telea"`` / ``"inpaint_ns"``: ``cv2.inpaint`` (radius 3) of every masked image,
  on the CPU, one image per task in a thread pool (OpenCV releases the GIL). OpenCV inpaints
  8-bit images: shap casts the image it is given with ``astype(uint8)``, so a model-space
  image (normalised floats) would be destroyed. Here the images go to pixel space first
  (``normalize=(mean, std)``: ``255 (x std + mean)``; ``input_range=(lo, hi)``: ``255 (x - lo)
  / (hi - lo)``; neither: each image's own min and max become 0 and 255), are **rounded** and
  clamped to ``0..255`` (shap truncates), inpainted, and mapped back. A pixel is inpainted
  when any of its channels is hidden, and all its channels are (as shap does); the kept
  pixels are the 8-bit round trip of the image, also in the whole image ``F(x)`` is scored
  on. With every pixel hidden the image is filled with its per-channel mean (shap's rule).
  Photos whose pixels are integers (as loaded) come back exactly, so the values equal shap's
  run on the 0..255 photo.
* a number or a tensor broadcastable to ``(B, C, H, W)`` (``(C, 1, 1)`` per channel...): that
  model-space value.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, check_fill, describe
from ..space import broadcast_to_images, value_range

#: the masker names (``blur(kx,ky)`` takes two kernel sizes)
MASKERS = ("inpaint_telea", "inpaint_ns", "blur(kx,ky)")
_BLUR = re.compile(r"^blur\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
#: inpainting radius shap uses
INPAINT_RADIUS = 3


def check_masker(masker: Any) -> Union[str, float, torch.Tensor]:
    """Validate ``masker``: a name of :data:`MASKERS` (``"blur(16,16)"``...), a number or a
    float tensor; returns it (names stripped of spaces)."""
    if isinstance(masker, str):
        name = masker.replace(" ", "")
        m = _BLUR.match(name)
        if name in MASKERS[:2] or (m is not None and int(m.group(1)) >= 1 and int(m.group(2)) >= 1):
            return name
        raise XaiError(f"unknown masker {masker!r}; choose one of {list(MASKERS)} (kx, ky >= 1 pixels, e.g. "
                       "'blur(16,16)'), a number or a tensor of model-space values.")
    if isinstance(masker, torch.Tensor) and not masker.is_floating_point():
        raise XaiError(f"masker must be one of {list(MASKERS)}, a number or a float tensor; got {describe(masker)}.")
    return check_fill(masker, f"masker (one of {list(MASKERS)}, or a model-space value)")


def _reflect101(index: torch.Tensor, n: int) -> torch.Tensor:
    """Indices folded into ``0..n-1`` as OpenCV's ``BORDER_REFLECT_101`` does (``dcb|abcd|cba``)."""
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * n - 2
    i = index.remainder(period)
    return torch.where(i >= n, period - i, i)


def box_blur(x: torch.Tensor, kx: int, ky: int) -> torch.Tensor:
    """``cv2.blur`` of every channel of ``x`` ``(B, C, H, W)`` with ``ksize=(kx, ky)`` (``kx``
    columns, ``ky`` rows), ``BORDER_REFLECT_101``; float64 sums, ``x``'s dtype out."""
    h, w = x.shape[-2:]
    out = x.detach().to(torch.float64)
    for dim, k, n in ((-2, ky, h), (-1, kx, w)):
        base = torch.arange(n, device=x.device) - k // 2
        acc = torch.zeros_like(out)
        for o in range(k):
            acc += out.index_select(dim, _reflect101(base + o, n))
        out = acc / k
    return out.to(x.dtype)


@dataclass
class Masking:
    """A masker bound to the images of one call: ``masking(keep, b)`` gives masked copies of
    image ``b``.

    Attributes:
        shown: ``(B, C, H, W)`` the images as the masker shows them with nothing hidden (the
            images, or their 8-bit round trip for inpainting): ``F`` of these is ``F(x)``.
        fill: ``(B, C, H, W)`` what hidden elements show (blur, value), or ``None`` (inpainting).
        pixels: ``(B, H, W, C)`` uint8 pixel images (inpainting), else ``None``.
        scale, shift: pixel = ``model * scale + shift`` per image and channel (inpainting).
        means: ``(B, C, 1, 1)`` per-channel means, the fill of a fully hidden image (inpainting).
        method: the OpenCV inpainting flag.
        workers: threads inpainting at once.
    """

    shown: torch.Tensor
    fill: Optional[torch.Tensor] = None
    pixels: Optional[np.ndarray] = None
    scale: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None
    means: Optional[torch.Tensor] = None
    method: int = 0
    workers: int = 1

    def __call__(self, keep: torch.Tensor, image: int) -> torch.Tensor:
        """Masked copies ``(n, C, H, W)`` of image ``image``: its elements where ``keep``
        ``(n, C, H, W)`` bool is True, the masker's fill elsewhere."""
        if self.fill is not None:
            return torch.where(keep, self.shown[image], self.fill[image])
        return self._inpaint(keep, image)

    def _inpaint(self, keep: torch.Tensor, image: int) -> torch.Tensor:
        import cv2

        assert self.pixels is not None and self.scale is not None and self.shift is not None
        assert self.means is not None
        hidden = (~keep).any(1).to(torch.uint8).cpu().numpy()  # (n, H, W): any channel hidden
        counts = hidden.reshape(hidden.shape[0], -1).sum(1)
        full = hidden.shape[1] * hidden.shape[2]
        todo = [i for i in range(len(counts)) if 0 < counts[i] < full]
        pixels, scale, shift = self.pixels[image], self.scale[image], self.shift[image]

        def one(i: int) -> np.ndarray:
            out: np.ndarray = cv2.inpaint(pixels, hidden[i], INPAINT_RADIUS, self.method)
            return out

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(todo)))) as pool:
            done = list(pool.map(one, todo))
        out = self.shown[image].expand(len(counts), *self.shown.shape[1:]).clone()
        if done:
            painted = torch.from_numpy(np.stack(done).reshape(len(done), *pixels.shape)).to(out.device)
            back = (painted.permute(0, 3, 1, 2).to(scale.dtype) - shift) / scale
            out[torch.tensor(todo, device=out.device)] = back.to(out.dtype)
        out[torch.from_numpy(counts == full).to(out.device)] = self.means[image].to(out.dtype)
        return out


def bind_masker(masker: Union[str, float, torch.Tensor], x: torch.Tensor, normalize: Any = None,
                input_range: Any = None, workers: Optional[int] = None) -> Masking:
    """The :class:`Masking` of ``masker`` (checked by :func:`check_masker`) for images ``x``
    ``(B, C, H, W)`` on the model's device (see the module doc)."""
    if isinstance(masker, float):
        return Masking(x, fill=torch.full_like(x, masker))
    if isinstance(masker, torch.Tensor):
        return Masking(x, fill=broadcast_to_images(masker, x, "masker"))
    m = _BLUR.match(masker)
    if m is not None:
        return Masking(x, fill=box_blur(x, int(m.group(1)), int(m.group(2))))
    import cv2

    lo, hi = value_range(x, normalize, input_range)  # model-space black and white
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    scale = 255.0 / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    shift = -lo * scale
    b = x.shape[0]
    scale, shift = scale.expand(b, *scale.shape[1:]), shift.expand(b, *shift.shape[1:])
    pix = (x.detach().to(torch.float64) * scale + shift).round().clamp(0, 255)
    shown = ((pix - shift) / scale).to(x.dtype)
    pixels = np.ascontiguousarray(pix.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    method = cv2.INPAINT_TELEA if masker == "inpaint_telea" else cv2.INPAINT_NS
    means = x.detach().to(torch.float64).mean((2, 3), keepdim=True).to(x.dtype)
    return Masking(shown, pixels=pixels, scale=scale, shift=shift, means=means, method=method,
                   workers=workers or os.cpu_count() or 1)


__all__ = ["MASKERS", "Masking", "bind_masker", "box_blur", "check_masker"]
