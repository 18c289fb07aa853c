"""Scoped thread counts for code made of many small operations.

A loop of small tensor ops (XRAI's greedy ranking, PIC's bookkeeping, a LIME design, the glue
around a segmentation) gains nothing from intra-op threads, and on a machine whose cores are
busy (several ``torchrun`` ranks per node, DataLoader workers, a shared node) every op then
waits for threads that are not scheduled: measured 2-10x slower than one thread. The same
holds for BLAS (scipy's OpenBLAS spins its threads between tiny LAPACK calls).

:func:`threads` lowers torch's intra-op thread count, and optionally every BLAS library's, for
the duration of a ``with`` block (or a decorated function), and restores them afterwards.
:func:`small_ops` is ``threads(1)``.

How it behaves with several Python threads (a web service, a thread-pool evaluation):

* torch keeps the count **per thread** once a thread has run its first parallel op (OpenMP),
  and uses the last value any thread set as the seed for threads that have not; BLAS libraries
  keep one count per process. The scopes are therefore reference-counted under one lock: the
  count a thread had when the *first* scope of the process began is the user's setting, each
  thread gets its own count back when it leaves its scope (the user's setting when it entered
  while another thread's scope was active, since its own count may have been seeded lowered),
  and BLAS is lowered while any scope that asks for it runs and restored when the last exits.
* A scope never raises a count: ``threads(4)`` under a user setting of 2 runs with 2.
* Scopes nest; the inner one restores the outer one's count.
* If the code inside a scope sets torch's count itself, that count is kept at exit.

A thread that runs its very first torch op while another thread's scope is active starts
with the lowered count (torch seeds new threads with the last value set); call
``torch.set_num_threads`` in such a thread if it matters.

Example:
    >>> with xt.threads.small_ops():
    ...     ranking = rank_full(attr, masks)
    >>> @xt.threads.small_ops()
    ... def bookkeeping(...): ...
"""
from __future__ import annotations

import contextlib
import sys
import threading
from collections import Counter
from typing import Any, Optional

import torch

from .errors import check_positive_int

_LOCK = threading.Lock()
_TORCH: Counter[int] = Counter()  # the requested counts of every active scope, all threads
_BLAS: Counter[int] = Counter()  # the same, of the scopes that limit BLAS
_STATE: dict[str, Any] = {"user": None, "blas_original": None, "controller": None, "modules": -1}


class _Local(threading.local):
    def __init__(self) -> None:
        self.stack: list[tuple[int, int]] = []  # (count to restore, count this scope set)


_LOCAL = _Local()


def _blas_libraries() -> list[Any]:
    """threadpoolctl's BLAS controllers, rebuilt when modules were imported since the last
    look (a new extension module may have loaded a BLAS); [] without threadpoolctl."""
    if _STATE["modules"] != len(sys.modules):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            _STATE["controller"] = []
        else:
            _STATE["controller"] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        _STATE["modules"] = len(sys.modules)
    libs: list[Any] = _STATE["controller"]
    return libs


def _update_blas() -> None:
    """Set every BLAS library to the lowest active request (never above its own setting), or
    back to its setting when no scope asks any more. Runs under the lock."""
    original: Optional[list[tuple[Any, int]]] = _STATE["blas_original"]
    if not _BLAS:
        if original is not None:
            for lib, n in original:
                lib.set_num_threads(n)
            _STATE["blas_original"] = None
        return
    if original is None:
        original = [(lib, int(lib.num_threads)) for lib in _blas_libraries()]
        _STATE["blas_original"] = original
    low = min(_BLAS)
    for lib, n in original:
        lib.set_num_threads(min(low, n))


def _enter(n: int, blas: bool) -> int:
    with _LOCK:
        current = torch.get_num_threads()
        if not _TORCH:
            _STATE["user"] = current
        # a thread entering its first scope while another thread's scope runs may have been
        # seeded with the lowered count: it gets the user's setting back
        restore = _STATE["user"] if (_TORCH and not _LOCAL.stack) else current
        effective = max(1, min(n, current if _LOCAL.stack else restore))
        _TORCH[n] += 1
        if effective != current:
            torch.set_num_threads(effective)
        _LOCAL.stack.append((restore, effective))
        if blas:
            _BLAS[n] += 1
            _update_blas()
        return effective


def _exit(n: int, blas: bool) -> None:
    with _LOCK:
        restore, effective = _LOCAL.stack.pop()
        _TORCH[n] -= 1
        if not _TORCH[n]:
            del _TORCH[n]
        if torch.get_num_threads() == effective and restore != effective:  # else the code set its own
            torch.set_num_threads(restore)
        if not _TORCH:
            _STATE["user"] = None
        if blas:
            _BLAS[n] -= 1
            if not _BLAS[n]:
                del _BLAS[n]
            _update_blas()


class Scope(contextlib.ContextDecorator):
    """A thread-count scope: a context manager (yielding the count the block runs with) and a
    decorator. It holds no state of its own (each thread's is kept per thread), so one
    instance may be entered by several threads at once and nested."""

    def __init__(self, n: int, blas: bool, torch_threads: bool = True) -> None:
        self.n, self.blas, self.torch_threads = n, blas, torch_threads

    def __enter__(self) -> int:
        return _enter(self.n, self.blas) if self.torch_threads else _enter_blas(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.torch_threads:
            _exit(self.n, self.blas)
        else:
            _exit_blas(self.n)


def threads(n: int, *, blas: bool = True) -> Scope:
    """Run a block with at most ``n`` intra-op threads in torch (and in BLAS, with ``blas``).

    Args:
        n: the thread count for the block (>= 1); never raises the current count.
        blas: also limit the BLAS libraries threadpoolctl finds (OpenBLAS / MKL of numpy and
            scipy) while any such scope is active.

    Returns:
        A :class:`Scope`: a context manager that yields the count the block runs with, and a
        decorator.

    Example:
        >>> with xt.threads.threads(1) as count:
        ...     out = many_small_ops()
    """
    return Scope(check_positive_int(n, "n"), bool(blas))


def small_ops(*, blas: bool = True) -> Scope:
    """``threads(1)``: the scope for loops of small ops (see the module doc).

    Example:
        >>> with xt.threads.small_ops():
        ...     ranking = rank_full(attr, masks)
    """
    return threads(1, blas=blas)


def one_blas_thread() -> Scope:
    """BLAS limited to one thread (torch's count untouched) while the block runs: scipy's
    interpolator makes tiny LAPACK calls whose spinning OpenBLAS threads otherwise stall
    oversubscribed CPUs (10-100x on a loaded 2-core machine). Reference-counted with the other
    scopes of this module, so it is safe in several threads at once."""
    return Scope(1, True, torch_threads=False)


def _enter_blas(n: int) -> int:
    with _LOCK:
        _BLAS[n] += 1
        _update_blas()
    return n


def _exit_blas(n: int) -> None:
    with _LOCK:
        _BLAS[n] -= 1
        if not _BLAS[n]:
            del _BLAS[n]
        _update_blas()


__all__ = ["Scope", "threads", "small_ops", "one_blas_thread"]
