import numpy as np
import pytest
import torch

import xai_torch as xt


def scores(target, output, batch):
    t = xt.as_target(target, batch)
    return t.scores(output, torch.arange(output.shape[0]))


def test_coercion_forms():
    out = torch.arange(12.0).reshape(3, 4)
    assert scores(None, out, 3)[1].tolist() == [3, 3, 3]
    assert scores(2, out, 3)[0].tolist() == [2.0, 6.0, 10.0]
    assert scores(np.int64(1), out, 3)[1].tolist() == [1, 1, 1]
    assert scores([0, 1, 2], out, 3)[0].tolist() == [0.0, 5.0, 10.0]
    assert scores(torch.tensor([3, 2, 1]), out, 3)[1].tolist() == [3, 2, 1]
    assert scores(np.array([1, 1, 0]), out, 3)[1].tolist() == [1, 1, 0]
    two = xt.as_target([[0, 1], [2, 3], [1, 1]], 3)
    assert two.k == 2
    expanded = out.repeat_interleave(2, 0)
    assert two.scores(expanded, torch.arange(6))[1].tolist() == [0, 1, 2, 3, 1, 1]
    # a chunk of rows 2..4 of the expanded batch
    assert two.scores(expanded[2:5], torch.arange(2, 5))[1].tolist() == [2, 3, 1]


def test_score_kinds():
    out = torch.randn(2, 5)
    p = scores(xt.ClassTarget([1, 4], score="softmax"), out, 2)[0]
    torch.testing.assert_close(p, out.softmax(1)[[0, 1], [1, 4]])
    lp = scores(xt.ClassTarget(None, score="log_softmax"), out, 2)[0]
    torch.testing.assert_close(lp, out.log_softmax(1).max(1).values)
    with pytest.raises(xt.XaiError, match="score must be one of"):
        xt.ClassTarget(1, score="prob")


def test_callable_targets():
    out = torch.randn(4, 3)
    torch.testing.assert_close(scores(lambda o: o[:, 1], out, 4)[0], out[:, 1])
    torch.testing.assert_close(scores(lambda o: o[:, 1:2], out, 4)[0], out[:, 1])
    with pytest.raises(xt.XaiError, match="shape \\(4,\\).*shape \\(4, 3\\)"):
        scores(lambda o: o, out, 4)
    with pytest.raises(xt.XaiError, match="float scores"):
        scores(lambda o: o.argmax(1), out, 4)
    with pytest.raises(xt.XaiError, match="must return a tensor"):
        scores(lambda o: 3.0, out, 4)


def test_custom_target_subclass_gets_rows():
    class PerImageWeights(xt.Target):
        def __init__(self, w):
            self.w = w

        def scores(self, output, rows):
            return (output * self.w[rows]).sum(1), None

    w = torch.randn(3, 4)
    out = torch.randn(2, 4)
    t = xt.as_target(PerImageWeights(w), 3)
    torch.testing.assert_close(t.scores(out, torch.tensor([1, 2]))[0], (out * w[1:]).sum(1))
    torch.testing.assert_close(t(out, torch.tensor([1, 2])), (out * w[1:]).sum(1))


def test_range_checked_against_output():
    with pytest.raises(xt.XaiError, match=r"\[7\] out of range.*4 classes"):
        scores([0, 7], torch.randn(2, 4), 2)
    with pytest.raises(xt.XaiError, match="shape \\(B, num_classes\\)"):
        scores(1, torch.randn(2, 4, 3, 3), 2)
