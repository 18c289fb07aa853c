"""Chunked evaluation: the batching plan, automatic sizes and the CUDA out-of-memory back-off."""
import pytest
import torch

import xai_torch as xt
from xai_torch.batching import auto_batch_size, map_chunks


def test_chunks_cover_the_range_in_order():
    seen = []
    out = map_chunks(lambda a, b: seen.append((a, b)) or (a, b), 10, 4, device=torch.device("cpu"))
    assert seen == out == [(0, 4), (4, 8), (8, 10)]


def test_out_of_memory_halves_the_chunk_and_retries():
    seen = []

    def fn(a, b):
        if b - a > 3:  # pretend anything above 3 samples does not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append((a, b))
        return b - a

    out = map_chunks(fn, 11, 8, device=torch.device("cuda"))
    assert sum(out) == 11 and max(out) <= 3
    assert seen == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 11)]  # 8 -> 4 -> 2, then kept


def test_out_of_memory_on_cpu_or_at_size_one_propagates():
    def fn(a, b):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        map_chunks(fn, 4, 4, device=torch.device("cpu"))
    with pytest.raises(torch.OutOfMemoryError):
        map_chunks(fn, 4, 1, device=torch.device("cuda"))
    with pytest.raises(ValueError, match="other"):  # other errors are never retried
        map_chunks(lambda a, b: (_ for _ in ()).throw(ValueError("other")), 4, 4, device=torch.device("cuda"))


def test_auto_batch_size_depends_on_sample_size_not_count():
    assert auto_batch_size(3 * 224 * 224, torch.device("cpu")) == 13
    assert auto_batch_size(3 * 64 * 64, torch.device("cpu")) == 170
    assert auto_batch_size(3 * 224 * 224, torch.device("cuda")) == 55
    assert auto_batch_size(10**9, torch.device("cpu")) == 1
    with pytest.raises(xt.XaiError, match="batch_size"):
        xt.GradCAM(torch.nn.Conv2d(3, 3, 1), layer="", batch_size=-2)
