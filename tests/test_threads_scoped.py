"""Scoped thread counts (xai_torch/threads.py): restored, nested, never raised, safe in two
Python threads at once, BLAS limited through threadpoolctl and restored."""
from __future__ import annotations

import threading

import pytest
import torch

import xai_torch as xt
from xai_torch.threads import one_blas_thread, small_ops, threads


@pytest.fixture
def two_threads():
    """The user's setting is 2 intra-op threads for the test (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def blas_counts() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_restores_nests_never_raises_and_limits_blas(two_threads):
    import scipy.linalg  # noqa: F401 - loads scipy's OpenBLAS, so there is a BLAS to limit

    blas = blas_counts()
    with small_ops() as count:
        assert count == 1 and torch.get_num_threads() == 1
        assert blas_counts() == [1] * len(blas)
        with threads(2) as inner:  # never above the enclosing scope
            assert inner == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2 and blas_counts() == blas
    with threads(8) as count:  # never above the user's setting
        assert count == 2 and torch.get_num_threads() == 2
    with threads(1, blas=False):
        assert blas_counts() == blas
    with one_blas_thread():
        assert torch.get_num_threads() == 2 and blas_counts() == [1] * len(blas)
    assert blas_counts() == blas
    # restored after an exception, and a count set inside the scope is kept
    with pytest.raises(RuntimeError), small_ops():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with small_ops():
        torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    # as a decorator, and bad input before anything changes
    seen = []
    small_ops()(lambda: seen.append(torch.get_num_threads()))()
    assert seen == [1] and torch.get_num_threads() == 2
    with pytest.raises(xt.XaiError, match="n"):
        threads(0)
    assert torch.get_num_threads() == 2


def test_two_python_threads_in_overlapping_scopes(two_threads):
    """A enters, B (a fresh thread, seeded while A's scope runs) enters, A leaves, B still runs
    with 1 thread, B leaves: both get the user's 2 back, and a thread started afterwards too."""
    steps = [threading.Event() for _ in range(4)]
    seen: dict[str, int] = {}
    errors: list[BaseException] = []

    def a() -> None:
        try:
            with small_ops():
                steps[0].set()
                steps[1].wait(5)
                seen["a in"] = torch.get_num_threads()
            steps[2].set()
            seen["a out"] = torch.get_num_threads()
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)
            for s in steps:
                s.set()

    def b() -> None:
        try:
            steps[0].wait(5)
            with small_ops():
                steps[1].set()
                steps[2].wait(5)
                x = torch.randn(64, 64)
                (x @ x).sum()  # a parallel op after A restored the process's seed
                seen["b in"] = torch.get_num_threads()
            seen["b out"] = torch.get_num_threads()
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)

    workers = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    if errors:
        raise errors[0]
    assert seen == {"a in": 1, "a out": 2, "b in": 1, "b out": 2}
    later: list[int] = []
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [2] and torch.get_num_threads() == 2
