"""Straight-line paths from baselines to the images: what IG's fixed rules and its adaptive
rule share (samples on the lines, the ``x - b`` factor, the baselines' scores).

Paths are numbered ``p = row * J + j`` for the ``R = B * K`` rows (image ``row // K``, target
column ``row % K``) and the ``J`` baselines of each image.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..runner import ModelRunner, repeat_rows
from .engine import PathSamples, Points, runs

_F64 = torch.float64


def baseline_scores(runner: ModelRunner, base: torch.Tensor, k: int) -> torch.Tensor:
    """``(R, J)`` target scores of the ``J`` baselines ``base`` ``(J, B, C, H, W)`` of every row,
    one forward per image and baseline (its K targets share it)."""
    j_count, b_count = base.shape[:2]
    dev = base.device
    scores = torch.empty(b_count, j_count, k, dtype=_F64, device=dev)
    cols = torch.arange(k, device=dev)
    target = runner.target
    assert target is not None

    def chunk(start: int, stop: int) -> None:
        q = torch.arange(start, stop, device=dev)
        i, j = q // j_count, q % j_count
        out = runner.forward(base[j, i], images=i)
        s, _ = target.scores(repeat_rows(out, k), (i[:, None] * k + cols).reshape(-1))
        scores[i, j] = s.detach().view(-1, k).to(_F64)

    runner.map(chunk, b_count * j_count)
    return scores.permute(0, 2, 1).reshape(b_count * k, j_count).to(runner.dtype)


def line_points(x: torch.Tensor, base: torch.Tensor, k: int, paths: torch.Tensor, alphas: torch.Tensor,
                weights: torch.Tensor, slots: Optional[torch.Tensor] = None) -> Points:
    """Path samples on straight lines: sample ``n`` is ``b + alphas[n] (x - b)`` on path
    ``paths[n]`` (row ``p // J``, baseline ``p % J``) with weight ``weights[n]``, accumulated
    into ``slots[n]`` (default: the path). Samples must come grouped by path."""
    j_count = base.shape[0]
    slot_of = paths if slots is None else slots
    a = alphas.to(x.dtype)

    def points(start: int, stop: int) -> PathSamples:
        p = paths[start:stop]
        z = torch.empty((stop - start, *x.shape[1:]), dtype=x.dtype, device=x.device)
        for lo, hi in runs(p):  # one path per run: broadcast, no per-sample copies of x and b
            path = int(p[lo])
            i, j = path // j_count // k, path % j_count
            # b + a * (x - b) in two roundings, as Captum (a fused multiply-add rounds differently,
            # and a ReLU network's gradient can jump on a one-ulp change of its input)
            torch.mul(a[start + lo:start + hi].view(-1, *[1] * (x.ndim - 1)), x[i] - base[j, i], out=z[lo:hi])
            z[lo:hi] += base[j, i]
        return PathSamples(z, p // j_count, slot_of[start:stop], weights[start:stop], None)

    return points


def line_factor(x: torch.Tensor, base: torch.Tensor, k: int, path: int) -> torch.Tensor:
    """``x - b`` of a path, in float64: what IG multiplies the integrated gradient by."""
    j_count = base.shape[0]
    i, j = path // j_count // k, path % j_count
    return x[i].to(_F64) - base[j, i].to(_F64)
