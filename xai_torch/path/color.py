"""Colour paths for Integrated Gradients: the luminosity and saturation paths of the IG chapter's
box "Other baselines for images" (``xt.IntegratedGradients(..., path="luminosity" |
"saturation")``).

Both paths run in CIE L*a*b* (sRGB primaries and transfer curve, D65 white, L* in
``[0, 100]``), the colour space whose L* channel is perceived lightness, so that stepping
along the path changes perceived brightness evenly (scaling RGB does not):

* ``"luminosity"``: L* goes from the baseline's L* (black: 0) to the image's, the chroma
  (a*, b*) stays the image's: ``lab(a) = (L_b + a (L_x - L_b), a*_x, b*_x)``. Its start is
  the image's chroma at zero lightness, which for coloured pixels is not an RGB colour (sRGB
  values a little below 0 or above 1: the path leaves the gamut near its start).
* ``"saturation"``: from grey (the image's own lightness, no chroma) to the image:
  ``lab(a) = (L_x, a a*_x, a b*_x)``. No baseline.

The conversion is differentiable torch (float64, no OpenCV round trip), extended to values
outside ``[0, 1]`` by the linear segments of the sRGB and L*a*b* curves. A model-space image is
taken to pixels through the explainer's ``normalize`` / ``input_range`` (``p = (x - lo) /
(hi - lo)``, without either each image's own min and max), moved along the path and taken
back, and the integrand is ``dF/dz (z(a)) * dz/da``, with ``dz/da`` from forward-mode
autodiff of the whole chain, so that the attributions sum to ``F(x) - F(z(0))`` up to the
quadrature error (completeness along the curved path).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch.func import jvp

from ..errors import XaiError
from ..runner import ModelRunner
from ..space import value_range
from .base import Paths
from .engine import PathSamples, integrate
from .line import baseline_scores

_F64 = torch.float64
#: the colour paths (``"line"`` is IG's straight line).
COLOR_PATHS = ("luminosity", "saturation")

# linear sRGB -> XYZ (D65, Lindbloom's matrix) and its white point
_RGB2XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]], dtype=_F64)
_WHITE = _RGB2XYZ.sum(1)  # D65 as the matrix has it (RGB white), so that greys have a* = b* = 0 exactly
_DELTA = 6 / 29


def _mix(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``m @ t`` over the channel axis of ``t`` ``(..., 3, H, W)``."""
    return torch.einsum("ij,...jhw->...ihw", m.to(t.device, t.dtype), t)


def _channels(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return v.to(t.device, t.dtype).view(3, 1, 1)


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """The sRGB decoding curve (its linear segment extended below 0)."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """The sRGB encoding curve (its linear segment extended below 0)."""
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB pixels ``(..., 3, H, W)`` (``[0, 1]``) -> CIE L*a*b* (D65; L* in ``[0, 100]``)."""
    xyz = _mix(_RGB2XYZ, srgb_to_linear(rgb)) / _channels(_WHITE, rgb)
    f = torch.where(xyz > _DELTA**3, xyz.clamp(min=_DELTA**3) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], -3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* ``(..., 3, H, W)`` -> sRGB pixels (values outside ``[0, 1]`` for colours
    outside the sRGB gamut)."""
    big_l, a, b = lab.unbind(-3)
    fy = (big_l + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], -3)
    xyz = torch.where(f > _DELTA, f.clamp(min=_DELTA) ** 3, 3 * _DELTA**2 * (f - 4 / 29)) * _channels(_WHITE, lab)
    return linear_to_srgb(_mix(torch.linalg.inv(_RGB2XYZ), xyz))


def check_color_path(x: torch.Tensor, path: str, baseline: Any) -> None:
    """Raise unless the images can take a colour path (3 channels; no ``baseline`` for
    ``"saturation"``, which starts at the image's own grey)."""
    if x.shape[1] != 3:
        raise XaiError(f"path={path!r} needs RGB images (3 channels); got {x.shape[1]} channel(s). "
                       f"Use path='line' for other images.")
    if path == "saturation" and baseline is not None:
        raise XaiError("path='saturation' starts at the image's own grey and takes no baseline; drop baseline=, "
                       "or use path='luminosity' / 'line'.")


def pixel_span(x: torch.Tensor, normalize: Any = None, input_range: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lo, hi - lo)`` float64, each ``(B, C, 1, 1)``: pixels are ``(x - lo) / (hi - lo)``."""
    lo, hi = (t.to(_F64).expand(x.shape[0], x.shape[1], 1, 1) for t in value_range(x, normalize, input_range))
    return lo, (hi - lo).clamp(min=torch.finfo(_F64).tiny)  # a constant image: its own range is empty


def color_line(x: torch.Tensor, base: torch.Tensor, path: str, lo: torch.Tensor,
               span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour path of each row as a line in L*a*b*: ``lab(a) = lab0 + a * step``.

    Args:
        x: ``(n, 3, H, W)`` model-space images.
        base: ``(n, 3, H, W)`` model-space baselines (their L* starts the luminosity path;
            unused for saturation).
        path: ``"luminosity"`` or ``"saturation"``.
        lo, span: ``(n, 3, 1, 1)`` model-space black and white minus black (:func:`pixel_span`).

    Returns:
        ``(lab0, step)``, each ``(n, 3, H, W)`` float64.
    """
    lab_x = rgb_to_lab((x.to(_F64) - lo) / span)
    zero = torch.zeros_like(lab_x[:, 1:])
    if path == "luminosity":
        start = rgb_to_lab((base.to(_F64) - lo) / span)[:, :1]  # L* of the baselines
        return torch.cat([start, lab_x[:, 1:]], 1), torch.cat([lab_x[:, :1] - start, zero], 1)
    return torch.cat([lab_x[:, :1], zero], 1), torch.cat([torch.zeros_like(lab_x[:, :1]), lab_x[:, 1:]], 1)


def color_points(lab0: torch.Tensor, step: torch.Tensor, alphas: torch.Tensor, lo: torch.Tensor,
                 span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``z(a)`` and derivatives ``dz/da`` (forward-mode autodiff) of colour paths
    (:func:`color_line`), one per row at ``alphas`` ``(n,)``: each ``(n, 3, H, W)`` float64, in
    model space (``lo``, ``span``: :func:`pixel_span`)."""
    a = alphas.to(device=lab0.device, dtype=_F64).view(-1, 1, 1, 1)
    out = jvp(lab_to_rgb, (lab0 + a * step,), (step,))  # (value, derivative along the path)
    rgb, drgb = out[0], out[1]
    return lo + rgb * span, drgb * span


def color_paths(runner: ModelRunner, x: torch.Tensor, k: int, base: torch.Tensor, path: str, alphas: torch.Tensor,
                weights: torch.Tensor, details: bool, normalize: Any = None, input_range: Any = None) -> Paths:
    """IG along the colour ``path`` for every row (image x target) and baseline: samples
    ``z(a_s)`` weighted ``w_s * dz/da(a_s)`` on the shared engine, one slot per path
    (``p = row * J + j``), attributions averaged over the ``J`` baselines; ``details``: also
    the score of each path's start ``z(0)`` (for completeness)."""
    j_count, b_count = base.shape[:2]
    r_count, steps = b_count * k, alphas.shape[0]
    n_paths = r_count * j_count
    dev = x.device
    nodes, w = alphas.to(dev, _F64), weights.to(dev, _F64)
    lo, span = pixel_span(x, normalize, input_range)
    # every (baseline, image) path as a line in L*a*b*, once: (J, B, 3, H, W)
    jj, ii = (t.flatten() for t in torch.meshgrid(torch.arange(j_count, device=dev),
                                                   torch.arange(b_count, device=dev), indexing="ij"))
    lines = color_line(x[ii], base[jj, ii], path, lo[ii], span[ii])
    lab0, step = (t.view(j_count, b_count, *x.shape[1:]) for t in lines)

    def points(start: int, stop: int) -> PathSamples:
        n = torch.arange(start, stop, device=dev)
        p, s = n // steps, n % steps
        row, j = p // j_count, p % j_count
        i = row // k
        z, scale = color_points(lab0[j, i], step[j, i], nodes[s], lo[i], span[i])
        return PathSamples(z.to(x.dtype), row, p, w[s], scale)

    run = integrate(runner, points, n_paths * steps, n_paths, tuple(x.shape[1:]))
    attr = run.acc.view(r_count, j_count, *x.shape[1:]).mean(1)
    fb: Optional[torch.Tensor] = None
    if details:  # the start of every path, z(0), scored once per image and baseline
        z0 = lo + lab_to_rgb(lab0) * span
        fb = baseline_scores(runner, z0.to(x.dtype), k)
    view = (r_count, j_count, steps)
    probs = None if run.probs is None else run.probs.view(view)
    return Paths(attr, fb, nodes, run.scores.view(view), probs, run.grad_abs.view(view))
