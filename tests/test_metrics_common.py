"""What the metrics share: channel reduction and the Scorer's pinned classes and class checks."""
import math

import pytest
import torch

import xai_torch as xt
from xai_torch.metrics._common import Scorer, coerce_attribution, descending_order, reduce_channels


def test_reduce_channels():
    a = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]], dtype=torch.float64)
    got = {k: float(reduce_channels(a, k)) for k in ("sum", "abs", "max_abs", "max", "l2", "mean")}
    assert got == {"sum": 0.0, "abs": 6.0, "max_abs": 3.0, "max": 2.0, "l2": math.sqrt(14), "mean": 0.0}


def test_model_free_helpers_refuse_wrong_ranks_and_non_tensors():
    """A wrong rank or a non-tensor is an XaiError that names the shape taken, not a raw
    IndexError / AttributeError / unpacking ValueError (descending_order(torch.rand(3)) was one)."""
    x = torch.rand(2, 3, 4, 4)
    bad = [
        (lambda: descending_order(torch.rand(3)), r"\(B, H, W\) or \(B, 1, H, W\)"),
        (lambda: descending_order(torch.rand(2, 12)), r"\(B, H, W\)"),
        (lambda: descending_order(torch.rand(2, 3, 4, 4)), r"reduce_channels"),  # channels not reduced
        (lambda: descending_order([[1.0, 2.0]]), r"got list"),
        (lambda: descending_order(torch.zeros(1, 2, 2, dtype=torch.complex64)), r"real"),
        (lambda: reduce_channels(torch.rand(3)), r"\(B, C, H, W\)"),
        (lambda: reduce_channels(torch.rand(3, 4, 4)), r"\(B, C, H, W\)"),
        (lambda: reduce_channels([1.0]), r"got list"),
        (lambda: coerce_attribution(torch.rand(2, 4, 4), x[0]), r"x as a \(B, C, H, W\)"),
        (lambda: coerce_attribution(torch.rand(2, 4, 4), [1.0]), r"got list"),
        (lambda: coerce_attribution(torch.rand(3), x), r"attribution must have shape"),
    ]
    for call, match in bad:
        with pytest.raises(xt.XaiError, match=match):
            call()
    # the shapes they take still work: (B, H, W) and (B, 1, H, W) give the same order
    rel = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(descending_order(rel), descending_order(rel[:, None]))
    assert descending_order(rel).shape == (2, 16)
    assert reduce_channels(x).shape == (2, 4, 4)


def test_scorer_pins_argmax_and_checks_class_range(small, small_x):
    s = Scorer(small, small_x, None, score="logit")
    with torch.no_grad():
        out = small(small_x)
    assert torch.equal(s.classes, out.argmax(1))
    torch.testing.assert_close(s.clean, out.max(1).values.double())
    with pytest.raises(xt.XaiError, match="lie in"):
        Scorer(small, small_x, 7)
