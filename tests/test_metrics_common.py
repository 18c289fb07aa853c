"""What the metrics share: channel reduction and the Scorer's pinned classes and class checks."""
import math

import pytest
import torch

import xai_torch as xt
from xai_torch.metrics._common import Scorer, reduce_channels


def test_reduce_channels():
    a = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]], dtype=torch.float64)
    got = {k: float(reduce_channels(a, k)) for k in ("sum", "abs", "max_abs", "max", "l2", "mean")}
    assert got == {"sum": 0.0, "abs": 6.0, "max_abs": 3.0, "max": 2.0, "l2": math.sqrt(14), "mean": 0.0}


def test_scorer_pins_argmax_and_checks_class_range(small, small_x):
    s = Scorer(small, small_x, None, score="logit")
    with torch.no_grad():
        out = small(small_x)
    assert torch.equal(s.classes, out.argmax(1))
    torch.testing.assert_close(s.clean, out.max(1).values.double())
    with pytest.raises(xt.XaiError, match="lie in"):
        Scorer(small, small_x, 7)
