"""Gaussian blur as the Blur IG reference computes it, on the model's device.

PAIR's Blur IG blurs with ``scipy.ndimage.gaussian_filter(image, [s, s, 0], mode="constant")``:
zero padding, a kernel truncated at ``int(4 s + 0.5)`` pixels and normalised over that
truncated support. Here the blur is separable and written as two banded matrices, one per
spatial axis (``K_H @ x @ K_W^T``): one batched matrix product per axis, exact zero padding
whatever the radius, and a different ``sigma`` per sample in the same call.
"""
from __future__ import annotations

import torch

from ..errors import XaiError

TRUNCATE = 4.0


def gaussian_matrix(size: int, sigma: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    """``(n, size, size)`` matrices that blur one axis of length ``size`` with zero padding.

    Args:
        size: length of the axis.
        sigma: ``(n,)`` standard deviations in pixels (0 gives the identity).
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


def gaussian_blur(x: torch.Tensor, sigma) -> torch.Tensor:
    """Blur the two spatial axes of ``x`` with a zero-padded, truncated Gaussian.

    Args:
        x: ``(n, C, H, W)`` images.
        sigma: a number, or ``(n,)`` one per image, in pixels.

    Returns:
        ``(n, C, H, W)`` in ``x``'s dtype, equal to scipy's
        ``gaussian_filter(x, [0, 0, s, s], mode="constant")`` per image.

    Example:
        >>> soft = xt.path.gaussian_blur(x, 5.0)
    """
    if x.ndim != 4:
        raise XaiError(f"gaussian_blur needs (n, C, H, W) images; got shape {tuple(x.shape)}.")
    n, _, h, w = x.shape
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1).expand(n)
    if bool((sigma < 0).any()):
        raise XaiError(f"blur sigma must be >= 0; got {sigma.min().item()}.")
    kh = gaussian_matrix(h, sigma).to(x.dtype)
    kw = kh if w == h else gaussian_matrix(w, sigma).to(x.dtype)
    return kh[:, None] @ x @ kw[:, None].transpose(-1, -2)
