"""Chunked model evaluation: at most ``batch_size`` samples per model call.

Every method that evaluates the model on many samples (targets x images, steps x images, noise
draws, perturbations) goes through :func:`map_chunks`, so peak memory depends on
``batch_size`` and never on how many samples a user asks for. On CUDA an out-of-memory error
halves the chunk and retries.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, Optional, TypeVar

import torch

from .errors import XaiError, describe

T = TypeVar("T")

#: input elements per model call when ``batch_size=None`` (about 14 images of 3x224x224 on
#: CPU, 55 on CUDA, where an out-of-memory error halves the chunk).
AUTO_ELEMENTS = {"cpu": 2**21, "cuda": 2**23}
#: automatic progress bars appear from this many model calls on (and only on a terminal).
AUTO_PROGRESS_CALLS = 8


def check_batch_size(batch_size: Any) -> Optional[int]:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise XaiError(f"batch_size must be None (automatic) or an integer >= 1; got {describe(batch_size)}.")
    return batch_size


def auto_batch_size(sample_numel: int, device: torch.device) -> int:
    """Samples per model call for ``batch_size=None``, from the size of one sample."""
    budget = AUTO_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    return max(1, budget // max(1, int(sample_numel)))


def is_oom(err: BaseException) -> bool:
    oom: Any = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


def progress_bar(total: int, calls: int, progress: Optional[bool], desc: str) -> Any:
    """A tqdm bar when ``progress`` is True, or when None and the work is long on a terminal."""
    show = progress if progress is not None else (calls >= AUTO_PROGRESS_CALLS and sys.stderr.isatty())
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", leave=False)


def map_chunks(
    fn: Callable[[int, int], T],
    n: int,
    batch_size: int,
    *,
    device: torch.device,
    progress: Optional[bool] = None,
    desc: str = "",
) -> list[T]:
    """Call ``fn(start, stop)`` over ``[0, n)`` in chunks of at most ``batch_size`` samples.

    Returns:
        The list of ``fn`` results, in order. On a CUDA out-of-memory error the chunk is
        halved (down to 1) and the same range is retried; the smaller size is kept.
    """
    size = max(1, min(batch_size, n))
    bar = progress_bar(n, math.ceil(n / size), progress, desc)
    results: list[T] = []
    start = 0
    try:
        while start < n:
            stop = min(n, start + size)
            retry = False
            try:
                results.append(fn(start, stop))
            except BaseException as err:  # noqa: BLE001 - re-raised unless it is a CUDA OOM
                if device.type != "cuda" or size == 1 or not is_oom(err):
                    raise
                retry = True
            if retry:  # outside the except block, so the failed chunk's tensors are freed
                torch.cuda.empty_cache()
                size = max(1, (stop - start) // 2)
                continue
            if bar is not None:
                bar.update(stop - start)
            start = stop
    finally:
        if bar is not None:
            bar.close()
    return results
