"""Seeds of the stochastic methods: one checked ``seed`` argument and a fresh generator per call.

Every stochastic method (noise baselines, SmoothGrad, RISE, LIME / KernelSHAP coalitions,
Expected Gradients, robustness metrics) takes ``seed``: the same seed repeats bit-for-bit on
the same device; ``None`` uses torch's global RNG. Methods that draw per image derive the seed
of image ``i`` with :func:`derive_seed`, so that an image's draws depend on ``(seed, i)`` alone,
not on the other images of the batch nor on ``batch_size``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .errors import XaiError, describe


def check_seed(seed: object) -> Optional[int]:
    """Validate a ``seed`` argument: ``None`` or an int (not a bool); returns it."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise XaiError(f"seed must be None or an int; got {describe(seed)}.")
    return seed


def make_generator(seed: Optional[int], device: torch.device) -> Optional[torch.Generator]:
    """A fresh generator seeded with ``seed`` on ``device`` (``None``: torch's global RNG)."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def derive_seed(seed: int, stream: int, index: int) -> int:
    """The seed of draw ``index`` of ``stream`` under ``seed``:
    ``numpy.random.SeedSequence(seed % 2**64, spawn_key=(stream, index)).generate_state(1,
    numpy.uint64)[0] >> 1`` (a 63-bit int; distinct streams and indices are independent).

    Example:
        >>> g = make_generator(derive_seed(0, 1, 3), torch.device("cpu"))   # image 3's noise
    """
    state = np.random.SeedSequence(seed % 2**64, spawn_key=(stream, index)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))
