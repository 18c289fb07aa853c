"""The batched path-integration engine shared by the IG family.

A path method evaluates ``N`` samples: sample ``n`` is a point ``z_n`` on a path (one path per
image x target x baseline), scored by target row ``r_n``. :func:`integrate` runs them through
the :class:`~xai_torch.runner.ModelRunner` in chunks of at most its chunk size (one forward and
one backward per chunk) and adds ``w_n * scale_n * dF/dz(z_n)`` into a float64 accumulator per
slot (a path, or a piece of one). Peak memory is one chunk plus the ``(slots, C, H, W)``
accumulators: it does not depend on the number of steps.

Per sample it also records the target score, the target's softmax probability (class
targets) and the mean ``|dF/dz|``: the path curve of the IG chapter (score and gradient
magnitude against alpha), at no extra model cost.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from ..runner import ModelRunner


class PathSamples(NamedTuple):
    """The samples ``[start, stop)`` of a path method, as its ``points(start, stop)`` gives them.

    Attributes:
        z: ``(n, C, H, W)`` model inputs.
        rows: ``(n,)`` target rows.
        slots: ``(n,)`` accumulator indices, grouped in runs (samples of a slot come together).
        weights: ``(n,)`` float64 quadrature weights.
        scale: ``None``, or ``(n, C, H, W)`` float64 factors applied to each gradient before the
            weight (Blur IG's ``dL/dsigma``, Expected Gradients' ``x - b``).
    """

    z: torch.Tensor
    rows: torch.Tensor
    slots: torch.Tensor
    weights: torch.Tensor
    scale: Optional[torch.Tensor]


#: ``points(start, stop) -> PathSamples`` for samples ``[start, stop)``.
Points = Callable[[int, int], PathSamples]


@dataclass
class PathRun:
    """What :func:`integrate` returns.

    Attributes:
        acc: ``(paths, C, H, W)`` float64, ``sum_n coef_n * dF/dz(z_n)`` per path.
        scores: ``(N,)`` target score at every sample.
        probs: ``(N,)`` softmax probability of the target class, or ``None`` for targets
            that are not classes.
        grad_abs: ``(N,)`` mean ``|dF/dz|`` at every sample.
        totals: ``(N,)`` float64, ``sum(coef_n * dF/dz(z_n))``: what each sample adds to the
            sum of its path's accumulator (for IG, its share of the completeness sum).
    """

    acc: torch.Tensor
    scores: torch.Tensor
    probs: Optional[torch.Tensor]
    grad_abs: torch.Tensor
    totals: torch.Tensor


def integrate(runner: ModelRunner, points: Points, n: int, n_slots: int, shape: tuple[int, ...],
              acc: Optional[torch.Tensor] = None, post: Optional[Callable[[int], torch.Tensor]] = None) -> PathRun:
    """Evaluate ``n`` samples and add ``weight * scale * dF/dz`` into their slot's float64
    accumulator (``acc`` when given, ``(n_slots, *shape)``, updated in place).

    ``post(slot)``, when given, is a factor the caller will multiply the slot's accumulator
    by afterwards (IG's ``x - b``); the per-sample ``totals`` include it.
    """
    device = runner.device
    if acc is None:
        acc = torch.zeros((n_slots, *shape), dtype=torch.float64, device=device)
    out = acc
    # per-sample records go into buffers allocated up front: small tensors kept from every
    # chunk would pin the heap between the large freed ones, and glibc's peak memory would
    # then grow with the number of steps
    record = torch.full((4, n), float("nan"), dtype=torch.float64, device=device)
    has_probs = []

    def chunk(start: int, stop: int) -> None:
        z, rows, slots, weights, scale = points(start, stop)
        g, s, p, _ = runner.grad(z, rows)
        flat = g.flatten(1)
        # samples come grouped by slot, so a chunk holds a few runs of one slot: reduce each
        # run (a weighted sum, deterministic, unlike index_add_ with atomics on CUDA)
        for a, b in runs(slots):
            slot = int(slots[a])
            if scale is None:  # a (1 x n) @ (n x D) product in the gradient's dtype
                w = weights[a:b].to(g.dtype)
                out[slot] += (w @ flat[a:b]).view(shape).to(torch.float64)
                per = flat[a:b] @ post(slot).flatten().to(g.dtype) if post is not None else flat[a:b].sum(1)
                record[3, start + a:start + b] = weights[a:b] * per.to(torch.float64)
            else:
                contrib = g[a:b].to(torch.float64) * (weights[a:b].view(-1, *[1] * len(shape)) * scale[a:b])
                out[slot] += contrib.sum(0)
                if post is not None:
                    contrib = contrib * post(slot)
                record[3, start + a:start + b] = contrib.flatten(1).sum(1)
        record[0, start:stop] = s
        record[2, start:stop] = flat.abs().mean(1)
        if p is not None:
            record[1, start:stop] = p
            has_probs.append(True)

    runner.map(chunk, n)
    dtype = runner.dtype
    probs = record[1].to(dtype) if has_probs else None
    return PathRun(out, record[0].to(dtype), probs, record[2].to(dtype), record[3])


def runs(slots: torch.Tensor) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of equal values in ``slots``."""
    bounds = torch.nonzero(slots[1:] != slots[:-1]).flatten().add(1).tolist()
    edges = [0, *bounds, slots.shape[0]]
    return list(zip(edges[:-1], edges[1:]))
