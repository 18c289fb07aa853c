"""Image operations that the method families share: blurs, min-max scaling, resizing, top fractions.

Pure tensor functions on the caller's device, imported from below by ``path``, ``region``,
``cam``, ``metrics`` and ``viz`` (this module imports only :mod:`xai_torch.errors`):

* :func:`gaussian_blur`: the Blur IG reference's zero-padded, truncated Gaussian (scipy's
  ``gaussian_filter(mode="constant")``), a different ``sigma`` per image;
* :func:`rise_blur`: RISE's insertion substrate (its 11 x 11 ``gkern``, zero padding);
* :func:`minmax`: per-map min-max scaling to [0, 1] (CAMs, as pytorch-grad-cam), zeros for a
  map whose range is rounding noise;
* :func:`upsample_to`: bilinear resize of maps to the input size (OpenCV's ``INTER_LINEAR``);
* :func:`top_fraction`: the most important fraction of each map (XRAI's "top 30 %").
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F

from .errors import XaiError, describe

#: the Gaussian's radius in standard deviations (scipy's ``truncate``)
TRUNCATE = 4.0
#: :func:`minmax` returns zeros for a map whose range is at most this many units in the last
#: place of its largest magnitude (a constant map that rounding turned into noise)
MINMAX_ULPS = 8

_F64 = torch.float64


# --- blurs ---------------------------------------------------------------------------------------------
def gaussian_matrix(size: int, sigma: torch.Tensor, dtype: torch.dtype = _F64) -> torch.Tensor:
    """``(n, size, size)`` matrices that blur one axis of length ``size`` with zero padding.

    PAIR's Blur IG blurs with ``scipy.ndimage.gaussian_filter(image, [s, s, 0], mode="constant")``:
    zero padding, a kernel truncated at ``int(4 s + 0.5)`` pixels and normalised over that
    truncated support. Written as a banded matrix per axis (``K_H @ x @ K_W^T``), the padding is
    exact whatever the radius and every sample can have its own ``sigma``.

    Args:
        size: length of the axis.
        sigma: ``(n,)`` standard deviations in pixels (0 gives the identity).
        dtype: of the computation and the result.

    Returns:
        ``(n, size, size)`` matrices on ``sigma``'s device.

    Shape:
        ``sigma (n,)`` -> ``(n, size, size)``.

    Example:
        >>> k = gaussian_matrix(5, torch.tensor([0.0, 1.0]))   # k[0] is the identity
    """
    device = sigma.device
    sigma = sigma.to(dtype)
    idx = torch.arange(size, device=device, dtype=dtype)
    dist = (idx[:, None] - idx[None, :]).abs()  # (size, size)
    radius = torch.floor(TRUNCATE * sigma + 0.5)  # scipy: int(truncate * sd + 0.5)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))[:, None, None]
    kernel = torch.exp(-0.5 * (dist[None] / safe) ** 2)
    kernel = torch.where(dist[None] <= radius[:, None, None], kernel, torch.zeros_like(kernel))
    # normalise over the whole truncated kernel, taps that fall in the padding included
    taps = torch.arange(int(radius.max().item()) + 1, device=device, dtype=dtype)
    full = torch.exp(-0.5 * (taps[None] / safe[:, 0]) ** 2) * (taps[None] <= radius[:, None])
    norm = 2 * full.sum(1) - 1  # taps -r..r; the centre tap is exp(0) = 1
    matrix = kernel / norm[:, None, None]
    eye = torch.eye(size, device=device, dtype=dtype).expand_as(matrix)
    return torch.where((sigma > 0)[:, None, None], matrix, eye)


def gaussian_blur(x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
    """Blur the two spatial axes of ``x`` with a zero-padded, truncated Gaussian (see :func:`gaussian_matrix`).

    Args:
        x: ``(n, C, H, W)`` images.
        sigma: a number, or ``(n,)`` one per image, in pixels (>= 0).

    Returns:
        ``(n, C, H, W)`` in ``x``'s dtype, equal to scipy's
        ``gaussian_filter(x, [0, 0, s, s], mode="constant")`` per image.

    Shape:
        ``(n, C, H, W)`` -> ``(n, C, H, W)``.

    Example:
        >>> soft = xai_torch.imageops.gaussian_blur(x, 5.0)
    """
    if x.ndim != 4:
        raise XaiError(f"gaussian_blur needs (n, C, H, W) images; got shape {tuple(x.shape)}.")
    n, _, h, w = x.shape
    sigmas = torch.as_tensor(sigma, dtype=_F64, device=x.device).reshape(-1).expand(n)
    if bool((sigmas < 0).any()):
        raise XaiError(f"blur sigma must be >= 0; got {sigmas.min().item()}.")
    kh = gaussian_matrix(h, sigmas).to(x.dtype)
    kw = kh if w == h else gaussian_matrix(w, sigmas).to(x.dtype)
    return kh[:, None] @ x @ kw[:, None].transpose(-1, -2)


def _rise_taps(size: int, sigma: float) -> torch.Tensor:
    """The 1-D factor of :func:`rise_kernel`: scipy's ``gaussian_filter1d`` of a centred unit
    impulse of length ``size`` with its ``"reflect"`` border."""
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=_F64)
    g = torch.exp(-0.5 * (taps / sigma) ** 2)
    g = g / g.sum()
    # out[i] = sum_t g[t] * impulse[reflect(i + t)]: with half-sample symmetric reflection the
    # index pattern repeats every 2 * size.
    idx = (torch.arange(size)[:, None] + taps.long()[None, :]) % (2 * size)
    idx = torch.where(idx >= size, 2 * size - 1 - idx, idx)
    return (g[None, :] * (idx == size // 2)).sum(1)


def rise_kernel(size: int = 11, sigma: float = 5.0, dtype: torch.dtype = _F64) -> torch.Tensor:
    """RISE's blur kernel ``gkern(size, sigma)``: a centred unit impulse in a ``size x size``
    array smoothed by scipy's ``gaussian_filter(sigma)`` with its default ``"reflect"`` border,
    which folds the tails of the (radius ``int(4 sigma + 0.5)``) Gaussian back into the window.

    Args:
        size: the kernel's side in pixels.
        sigma: the Gaussian's standard deviation in pixels.
        dtype: of the result.

    Returns:
        ``(size, size)``, separable: ``outer(k, k)``.

    Shape:
        ``(size, size)``.

    Example:
        >>> rise_kernel().sum()   # 1 up to rounding
    """
    k1 = _rise_taps(size, sigma)
    return torch.outer(k1, k1).to(dtype)


def rise_blur(x: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: each channel convolved with :func:`rise_kernel` (zero
    padding, same size), computed as two 1-D passes in ``x``'s dtype since the kernel is separable.

    Args:
        x: ``(B, C, H, W)`` floating-point images.
        size: the kernel's side in pixels, an odd int >= 1 (the blur keeps ``H x W``).
        sigma: the Gaussian's standard deviation in pixels, a finite number > 0.

    Returns:
        the blurred images, ``x``'s dtype and device.

    Raises:
        XaiError: for any other ``x``, ``size`` or ``sigma``.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.

    Example:
        >>> start = xai_torch.imageops.rise_blur(x)   # where insertion starts
    """
    _check_rise_blur(x, size, sigma)
    size = int(size)
    c, pad = x.shape[1], size // 2
    k1 = _rise_taps(size, float(sigma)).to(device=x.device, dtype=x.dtype)
    rows = F.conv2d(x, k1.view(1, 1, size, 1).expand(c, 1, size, 1), padding=(pad, 0), groups=c)
    return F.conv2d(rows, k1.view(1, 1, 1, size).expand(c, 1, 1, size), padding=(0, pad), groups=c)


def _check_rise_blur(x: object, size: object, sigma: object) -> None:
    """:func:`rise_blur`'s arguments, before oneDNN sees them."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise XaiError(f"rise_blur needs x as floating-point (B, C, H, W) images; got {describe(x)}.")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1 or size % 2 == 0:
        raise XaiError(f"rise_blur size (the kernel's side in pixels) must be an odd int >= 1, e.g. 11 (RISE's); "
                       f"got {describe(size)}.")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not 0 < float(sigma) < math.inf:
        raise XaiError(f"rise_blur sigma (the Gaussian's standard deviation in pixels) must be a finite number "
                       f"> 0, e.g. 5.0 (RISE's); got {describe(sigma)}.")


# --- scaling and resizing ------------------------------------------------------------------------------
def minmax(maps: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per map (last two dims): ``(m - min) / (max(m - min) + eps)``, each map in [0, 1].

    A map whose range is at most :data:`MINMAX_ULPS` units in the last place of its largest
    magnitude (``max - min <= 8 * finfo.eps * max(|min|, |max|)``) gives zeros, as a constant
    map does: such a range is rounding noise (e.g. a 1 x 1 CAM after bilinear upsampling), and
    stretching it would paint noise. Integer maps are compared exactly.

    Args:
        maps: tensor ``(..., H, W)`` of any real dtype.
        eps: added to the denominator; ``1e-7`` is pytorch-grad-cam's ``scale_cam_image``.

    Returns:
        tensor of the same shape (and dtype, for floating maps), each map in [0, 1].

    Shape:
        ``(..., H, W)`` -> ``(..., H, W)``.

    Example:
        >>> minmax(torch.tensor([[1.0, 3.0]]))
        tensor([[0., 1.]])
    """
    lo = maps.flatten(-2).min(-1).values[..., None, None]
    hi = maps.flatten(-2).max(-1).values[..., None, None]
    m = maps - lo
    top = hi - lo
    ulp = torch.finfo(maps.dtype).eps if maps.is_floating_point() else 0.0
    noise = top <= MINMAX_ULPS * ulp * torch.maximum(lo.abs(), hi.abs())
    top = top + eps
    scaled = m / torch.where(top > 0, top, torch.ones_like(top))
    return torch.where(noise, torch.zeros_like(scaled), scaled)


def upsample_to(maps: torch.Tensor, size: Sequence[int], *, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of the last two dims to ``size``; returned as is when already that size.

    ``align_corners=False`` is OpenCV's ``INTER_LINEAR`` (pytorch-grad-cam's resize).

    Args:
        maps: ``(B, C, h, w)`` maps, floating point.
        size: ``(H, W)``, e.g. ``x.shape[-2:]``.
        align_corners: as :func:`torch.nn.functional.interpolate`.

    Returns:
        ``(B, C, H, W)`` in ``maps``' dtype.

    Shape:
        ``(B, C, h, w)`` -> ``(B, C, H, W)``.

    Example:
        >>> upsample_to(cam_maps, x.shape[-2:])
    """
    target = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == target:
        return maps
    return F.interpolate(maps, size=target, mode="bilinear", align_corners=align_corners)


# --- masks ---------------------------------------------------------------------------------------------
def top_fraction(maps: torch.Tensor, fraction: float = 0.3, *, exact: bool = False) -> torch.Tensor:
    """Keep the most important ``fraction`` of each image (the IG chapter's "top 30 %" XRAI masks).

    Args:
        maps: ``(B, 1, H, W)`` (or ``(B, H, W)``) maps, e.g. XRAI's.
        fraction: in (0, 1] (``[0, 1]`` with ``exact``).
        exact: ``False``: ``maps >= quantile(1 - fraction)`` per image, as PAIR's notebook
            computes it (a tie at the threshold is kept whole, so XRAI regions are never cut and
            more than ``fraction`` can be kept). ``True``: exactly ``round(fraction * H * W)``
            pixels, ties broken in raster order by a stable sort.

    Returns:
        A bool tensor of the same shape.

    Shape:
        ``(B, ...)`` -> ``(B, ...)``.

    Example:
        >>> keep = xt.region.top_fraction(xrai(x), 0.3)
        >>> shown = x * keep
    """
    valid = "[0, 1]" if exact else "(0, 1]"
    number = isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
    if not number or not (0 < fraction <= 1 or (exact and fraction == 0)):
        raise XaiError(f"fraction must lie in {valid}; got {fraction!r}.")
    flat = maps.flatten(1).to(_F64)
    if exact:
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep.scatter_(1, order[:, :int(round(fraction * flat.shape[1]))], True)
        return keep.view(maps.shape)
    threshold = torch.quantile(flat, 1 - fraction, dim=1, keepdim=True)
    return (flat >= threshold).view(maps.shape)
