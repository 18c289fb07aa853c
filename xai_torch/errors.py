"""The one exception type and the boundary checks every public entry point runs.

Checks run before any model call where possible, so a rejected input costs nothing and
changes nothing. Each message names the argument, what was expected and what was given.
"""
from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from typing import Any, Union

import torch


class XaiError(ValueError):
    """Raised for any input xai_torch cannot explain; the message says how to fix it."""


class XaiWarning(UserWarning):
    """Warnings about results that are computed but may not mean what the user expects."""


def closest_names(name: str, available: Iterable[str], n: int = 5) -> list[str]:
    """The up to ``n`` names in ``available`` that look most like ``name``."""
    names = [a for a in available if a]
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
    if len(close) < n:  # also offer names that contain the query or share its last part
        tail = name.rsplit(".", 1)[-1]
        for a in names:
            if len(close) >= n:
                break
            if a not in close and (name in a or a.endswith("." + tail)):
                close.append(a)
    return close


def describe(value: Any) -> str:
    """Short description of a value for error messages (type, and shape/dtype for tensors)."""
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_input(x: Any, name: str = "x") -> tuple[torch.Tensor, bool]:
    """Validate an image batch and return it as ``(B, C, H, W)``.

    Returns:
        ``(x4, unbatched)``: the 4-D tensor (a view, never a copy or a modification) and
        whether a ``(C, H, W)`` tensor was given.
    """
    if not isinstance(x, torch.Tensor):
        raise XaiError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W) or (C, H, W); got {describe(x)}. "
            "Convert with torch.as_tensor(...) and normalise it as the model expects."
        )
    if x.ndim not in (3, 4):
        raise XaiError(
            f"{name} must have shape (B, C, H, W) or (C, H, W); got shape {tuple(x.shape)} "
            f"({x.ndim} dims)."
        )
    if not x.is_floating_point():
        raise XaiError(
            f"{name} must be a floating-point tensor in the model's input space; got dtype {x.dtype}. "
            "For uint8 images use x.float() / 255 and the model's normalisation."
        )
    if x.numel() == 0:
        raise XaiError(f"{name} is empty (shape {tuple(x.shape)}); give at least one image.")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise XaiError(f"{name} has {bad} NaN or infinite values; attributions need finite inputs.")
    if x.ndim == 3:
        return x.unsqueeze(0), True
    return x, False


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer argument that must be at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise XaiError(f"{name} must be an integer >= {minimum}; got {describe(value)}.")
    return value


def check_fill(value: Any, name: str) -> Union[float, torch.Tensor]:
    """A fill value in the model's input space: a finite number (returned as float) or a
    finite real tensor (returned detached; its shape is checked where it is used)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise XaiError(f"{name} must be finite; got {value!r}.")
        return float(value)
    if isinstance(value, torch.Tensor) and not value.is_complex() and value.dtype != torch.bool:
        if not bool(torch.isfinite(value).all()):
            raise XaiError(f"{name} has NaN or infinite values.")
        return value.detach()
    raise XaiError(f"{name} must be a number or a tensor of model-space values; got {describe(value)}.")


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices`` (else an XaiError listing them)."""
    allowed = list(choices)
    if value not in allowed:
        raise XaiError(f"{name} must be one of {allowed}; got {value!r}.")
    return str(value)
