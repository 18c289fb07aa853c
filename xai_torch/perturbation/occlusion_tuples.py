"""Occlusion over tuple inputs ``x = (x_1, ..., x_m)`` (an image and metadata...), as Captum's
Occlusion does it: each member has its own window and stride; the windows of all members are
enumerated in one sequence (member 1's positions, then member 2's...), and each occluded input
has one window of one member set to that member's baseline, the other members left as they
are. A member's attribution is, per element, the mean over its own windows that cover it of
``F(x) - F(x occluded)``.

The explainer sees the members packed into one ``(B, 1, 1, D)`` tensor
(:class:`~xai_torch.modelio.Packed`); this module occludes inside the packed rows and returns
the packed attributions, which the explainer base splits into a tuple.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, describe
from ..modelio import Packed
from ..runner import ModelRunner
from ..targets import Target
from .base import score_columns

Dims = tuple[int, ...]
#: a window / stride entry before it meets a member: an int or a tuple of positive ints
Spec = Union[int, Dims]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_per_member(spec: Any) -> bool:
    """Whether ``spec`` gives one window (or stride) per member: a tuple or list holding at
    least one tuple / list (a tuple of ints alone is one shape for every member)."""
    return isinstance(spec, (tuple, list)) and any(isinstance(v, (tuple, list)) for v in spec)


def check_member_specs(spec: Any, name: str, allow_none: bool = False) -> tuple[Optional[Spec], ...]:
    """Validate a per-member ``window`` / ``stride`` (each entry a positive int or a tuple of
    positive ints; ``None`` entries for strides mean "the window"). Raises :class:`XaiError`."""
    out: list[Optional[Spec]] = []
    for i, v in enumerate(spec):
        if v is None and allow_none:
            out.append(None)
        elif _is_int(v) and int(v) >= 1:
            out.append(int(v))
        elif isinstance(v, (tuple, list)) and v and all(_is_int(a) and int(a) >= 1 for a in v):
            out.append(tuple(int(a) for a in v))
        else:
            raise XaiError(f"{name} for member {i} must be a positive int or a tuple of positive ints (one per dim of "
                           f"the member after the batch dim); got {describe(v)}.")
    return tuple(out)


def _member_shape(spec: Spec, shape: Dims, name: str, i: int, channels: int) -> Dims:
    """``spec`` as a full shape for a member of ``shape`` (after the batch dim). An int covers
    every dim (an image member ``(C, H, W)``: ``(channels, w, w)``); ``(h, w)`` on an image
    member spans ``channels``."""
    r = len(shape)
    if isinstance(spec, int):
        return (channels, spec, spec) if r == 3 else (spec,) * r
    if len(spec) == r:
        return spec
    if r == 3 and len(spec) == 2:
        return (channels, *spec)
    raise XaiError(f"{name} {spec} has {len(spec)} dims but member {i} of x has shape {shape} ({r} dims after the "
                   f"batch dim); give {r} sizes{' or (h, w)' if r == 3 else ''} for it.")


def member_geometry(window: Spec, stride: Optional[Spec], shape: Dims, i: int) -> tuple[Dims, Dims, Dims]:
    """``(window, stride, positions)`` of member ``i`` of ``shape``, with Captum's count
    ``ceil((D - w) / s) + 1`` along each dim. Raises :class:`XaiError` naming the member."""
    win = _member_shape(window, shape, "window", i, shape[0])
    st = win if stride is None else _member_shape(stride, shape, "stride", i, win[0])
    if any(a > d for a, d in zip(win, shape)):
        raise XaiError(f"window {win} does not fit in member {i} of x, of shape {shape}; use a smaller window "
                       "for it (window=(..., ...) takes one shape per member).")
    if any(s > a and a < d for s, a, d in zip(st, win, shape)):
        raise XaiError(f"stride {st} of member {i} must not exceed its window {win} along any dim the window does "
                       "not fill (else some elements are never occluded).")
    return win, st, tuple(-(-(d - a) // s) + 1 for a, s, d in zip(win, st, shape))


def _per_member(spec: Any, m: int, name: str) -> tuple[Any, ...]:
    if not is_per_member(spec):  # one shape (checked by the explainer): an int comes as (w,)
        return (spec[0] if isinstance(spec, tuple) and len(spec) == 1 else spec,) * m
    if len(spec) != m:
        raise XaiError(f"{name} has {len(spec)} entries but x has {m} members; give one shape per member, "
                       "or one shape for all.")
    return tuple(spec)


def _intervals(n: int, size: int, step: int, length: int, device: torch.device) -> torch.Tensor:
    """``(n, size)`` bool: row ``i`` covers ``[i*step, i*step + length)``, cropped at the edge."""
    pos = torch.arange(size, device=device)
    start = torch.arange(n, device=device)[:, None] * step
    return (pos >= start) & (pos < start + length)


def tuple_geometry(packed: Packed, window: Any, stride: Any) -> list[tuple[Dims, Dims, Dims]]:
    """``(window, stride, positions)`` of every member of a packed tuple ``x``. Raises
    :class:`XaiError` naming the member (before any model call)."""
    shapes = [tuple(int(d) for d in s) for s in packed.shapes]
    wins, strides = _per_member(window, len(shapes), "window"), _per_member(stride, len(shapes), "stride")
    return [member_geometry(w, s, shape, i) for i, (w, s, shape) in enumerate(zip(wins, strides, shapes))]


def occlude_tuple(run: ModelRunner, xd: torch.Tensor, target: Target, k: int, fx: torch.Tensor, packed: Packed,
                  fill: Union[float, torch.Tensor], geo: list[tuple[Dims, Dims, Dims]],
                  ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[Dims, ...]]:
    """Occlusion of packed rows ``xd`` ``(B, 1, 1, D)``: ``fx`` ``(B, k)`` clean scores,
    ``fill`` a number or packed ``(B, 1, 1, D)`` baselines, ``geo`` from
    :func:`tuple_geometry`. Returns the packed attributions ``(B, k, 1, 1, D)``, each member's
    drops ``(B, k, *positions)`` and its positions."""
    device, b = xd.device, xd.shape[0]
    shapes = [tuple(int(d) for d in s) for s in packed.shapes]
    boxes = [[_intervals(n, d, s, a, device) for n, d, s, a in zip(counts, shape, st, win)]
             for (win, st, counts), shape in zip(geo, shapes)]
    n_wins = [math.prod(g[2]) for g in geo]
    n_all = sum(n_wins)
    starts = [sum(n_wins[:i]) for i in range(len(n_wins))]  # first window index of each member
    offsets = [sum(packed.sizes[:i]) for i in range(len(shapes))]  # first packed column of each member
    flat = xd.reshape(b, -1)
    fills = fill.to(device=device, dtype=xd.dtype).reshape(b, -1) if isinstance(fill, torch.Tensor) else None

    def occluded(lo: int, hi: int) -> torch.Tensor:
        idx = torch.arange(lo, hi, device=device)
        img, pos = idx // n_all, idx % n_all
        z = flat[img].clone()
        for m, (shape, (_, _, counts)) in enumerate(zip(shapes, geo)):
            rows = ((pos >= starts[m]) & (pos < starts[m] + n_wins[m])).nonzero().flatten()
            if not len(rows):
                continue
            local, mask = pos[rows] - starts[m], torch.ones(len(rows), 1, dtype=torch.bool, device=device)
            for dim in range(len(shape)):  # the box of a position: outer product of its intervals (C order)
                step = math.prod(counts[dim + 1:])
                mask = (mask[:, :, None] & boxes[m][dim][(local // step) % counts[dim]][:, None, :]).flatten(1)
            cols = slice(offsets[m], offsets[m] + packed.sizes[m])
            value = fill if fills is None else fills[img[rows], cols]
            z[rows, cols] = torch.where(mask, value, z[rows, cols])
        return score_columns(target, run.forward(z.view(len(idx), 1, 1, -1), images=img), img, k)[0]

    scores = run.map(occluded, b * n_all)
    drops = fx[:, None, :] - torch.cat(scores).reshape(b, n_all, k)  # (B, windows, k)
    attrs, member_drops = [], []
    for m, ((_, _, counts), box) in enumerate(zip(geo, boxes)):
        d = drops[:, starts[m]:starts[m] + n_wins[m]].permute(0, 2, 1).reshape(b * k, *counts)
        member_drops.append(d.reshape(b, k, *counts))
        r, dbox = len(counts), [t.double() for t in box]
        # sum of each window's drop over the elements it covers, then the mean per element
        operands: list[Any] = [d.double(), [0, *range(1, r + 1)]]
        for j, t in enumerate(dbox):
            operands += [t, [j + 1, r + 1 + j]]
        total = torch.einsum(*operands, [0, *range(r + 1, 2 * r + 1)])
        cover = functools.reduce(lambda acc, t: acc[..., None] * t.sum(0), dbox[1:], dbox[0].sum(0))
        attrs.append((total / cover).reshape(b, k, -1))
    return torch.cat(attrs, -1).reshape(b, k, 1, 1, -1), tuple(member_drops), tuple(g[2] for g in geo)
