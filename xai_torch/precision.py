"""Mixed precision: the ``precision=`` of the model-bound explainers.

``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: the model's passes run under
``torch.autocast(device_type, dtype)`` (the backward follows autocast's casts, so gradients with
respect to a float32 input are float32); half-precision outputs are widened before they are
scored, and everything built from the scores accumulates as with float32. The model is never
converted. autocast leaves float64 tensors alone: a float64 model with a float64 ``x`` runs in
float64 whatever the precision.
"""
from __future__ import annotations

import contextlib
import warnings
from contextlib import AbstractContextManager
from typing import Any, Optional

import torch

from .errors import XaiError

#: ``precision=`` of the model-bound explainers: the autocast dtype of the model's passes.
PRECISIONS: dict[str, Optional[torch.dtype]] = {"float32": None, "bfloat16": torch.bfloat16,
                                                "float16": torch.float16}


def check_precision(precision: Any) -> str:
    """``precision`` checked: one of :data:`PRECISIONS`' names."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise XaiError(f"precision must be one of {list(PRECISIONS)} (the dtype of the model's passes under "
                       f"torch.autocast; 'float32': no autocast); got {precision!r}.")
    return precision


def autocast(precision: str, device: torch.device, name: str = "") -> AbstractContextManager[Any]:
    """The context of the model's passes for ``precision`` on ``device``: ``torch.autocast``
    with its dtype, or nothing for ``"float32"``.

    Raises:
        XaiError: autocast does not run on ``device`` in that dtype.
    """
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return contextlib.nullcontext()
    kind = device.type
    available = torch.amp.autocast_mode.is_autocast_available(kind)
    if available:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                context = torch.autocast(kind, dtype=dtype)
            except (RuntimeError, ValueError):  # a dtype the device's autocast refuses (it raises, or warns)
                caught.append(None)  # type: ignore[arg-type]
        if not any(w is None or "not supported" in str(w.message) for w in caught):
            return context
    raise XaiError(f"{name + ': ' if name else ''}precision={precision!r} needs torch.autocast in {dtype} on "
                   f"{kind}, which this torch ({torch.__version__}) does not support there; use "
                   "precision='float32' or another device.")


def widen(out: Any, z: torch.Tensor) -> Any:
    """A half-precision tensor output of an autocast forward in the dtype of the input ``z``
    (float32 for a half-precision input); anything else unchanged. Differentiable."""
    if isinstance(out, torch.Tensor) and out.dtype in (torch.bfloat16, torch.float16):
        wide = z.is_floating_point() and z.dtype not in (torch.bfloat16, torch.float16)
        return out.to(z.dtype if wide else torch.float32)
    return out


__all__ = ["PRECISIONS", "autocast", "check_precision", "widen"]
