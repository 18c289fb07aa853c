"""Seeds of the stochastic methods: one checked ``seed`` argument and a fresh generator per call.

Every stochastic method (noise baselines, SmoothGrad, RISE, LIME / KernelSHAP coalitions,
Expected Gradients, robustness metrics) takes ``seed``: the same seed repeats bit-for-bit on
the same device; ``None`` uses torch's global RNG.
"""
from __future__ import annotations

from typing import Optional

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
