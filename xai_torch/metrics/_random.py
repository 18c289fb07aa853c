"""What the random-perturbation metrics (infidelity, max-sensitivity, sensitivity-n) share: the
one way they draw random numbers (:class:`Blocks`) and the checks of their perturbation arguments.

The draw convention (per image): the rows of perturbations are image-major (all of image 0's
rows, then image 1's, ...), and they are drawn in fixed blocks, in row order, from one generator
seeded with ``seed`` on the model's device. A block never spans two images and its size does not
depend on B or ``batch_size``, so image i's draws depend only on ``(seed, i)`` (and the metric's
own settings): the same image at the same position gets the same perturbations bit-for-bit on the
same device whatever else is in the batch and whatever the chunk size. (A user's perturbation
callable receives the generator once per model chunk and is outside this convention.)
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from ..errors import XaiError, check_fill, describe
from ..space import broadcast_to_images


class Blocks:
    """Rows of random draws made in fixed blocks of ``per`` rows, in block order: the one
    drawing helper of the random metrics (see the module docstring for the convention).

    Block ``k`` is ``draw(k)``, rows ``k * per`` to ``(k + 1) * per - 1``. Callers order their rows
    image-major and choose ``per`` so that each image owns whole blocks (``per`` = the rows of one
    image, or a divisor of them fixed by the metric's settings): image i's draws are then the same
    whatever B and ``batch_size`` are.

    ``rows(start, stop)`` may be asked again for a range it already served (a CUDA
    out-of-memory retry in :func:`~xai_torch.batching.map_chunks`); blocks before ``start`` are
    dropped."""

    def __init__(self, draw: Callable[[int], torch.Tensor], per: int) -> None:
        self.draw, self.per, self.next = draw, per, 0
        self.cache: dict[int, torch.Tensor] = {}

    def rows(self, start: int, stop: int) -> torch.Tensor:
        first, last = start // self.per, (stop - 1) // self.per
        for k in [k for k in self.cache if k < first]:
            del self.cache[k]
        while self.next <= last:
            self.cache[self.next] = self.draw(self.next)
            self.next += 1
        parts = [self.cache[k] for k in range(first, last + 1)]
        t = parts[0] if len(parts) == 1 else torch.cat(parts)
        off = first * self.per
        return t[start - off:stop - off]


def check_positive(value: object, name: str) -> float:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise XaiError(f"{name} must be a finite number > 0; got {describe(value)}.")
    return float(value)


def fill_baseline(baseline: object, x: torch.Tensor) -> torch.Tensor:
    """A model-space value or tensor broadcast to the images ``x`` ``(B, C, H, W)``."""
    b = check_fill(baseline, "baseline (a model-space value)")
    if not isinstance(b, torch.Tensor):
        b = torch.tensor(b, dtype=x.dtype, device=x.device)
    return broadcast_to_images(b, x, "baseline")


def check_perturbed(out: object, like: torch.Tensor, what: str) -> torch.Tensor:
    """A user perturbation's output: a finite tensor of ``like``'s shape, detached on its device."""
    if not isinstance(out, torch.Tensor) or out.shape != like.shape:
        raise XaiError(f"{what} must be a tensor of shape {tuple(like.shape)} (one per perturbed image); "
                       f"got {describe(out)}.")
    if not bool(torch.isfinite(out).all()):
        raise XaiError(f"{what} has NaN or infinite values.")
    return out.detach().to(device=like.device)


__all__ = ["Blocks", "check_positive", "fill_baseline", "check_perturbed"]
