"""What every path explainer shares (xai_torch/path/base.py): seeds, checks before any model
call, no trace on the model or the input."""
import pytest
import torch

import xai_torch as xt

from conftest import Counting, assert_no_trace, snapshot


def test_seeded_methods_repeat_bit_for_bit(small, small_x):
    bg = torch.randn(6, 3, 12, 12)
    for make in (lambda: xt.ExpectedGradients(small, bg, samples=4, seed=3),
                 lambda: xt.IntegratedGradients(small, steps=4, seed=3)):
        a, b = make()(small_x), make()(small_x)
        assert torch.equal(a, b)
    ig = xt.IntegratedGradients(small, steps=4, seed=3)
    assert torch.equal(ig(small_x, baseline="uniform"), ig(small_x, baseline="uniform"))
    assert not torch.equal(xt.IntegratedGradients(small, steps=4, seed=4)(small_x, baseline="uniform"),
                           ig(small_x, baseline="uniform"))


def test_bad_inputs_raise_before_any_work(small, small_x):
    model = Counting(small)
    ig = xt.IntegratedGradients(model, steps=4)
    cases = [
        ({"baseline": torch.zeros(2, 3, 12, 12)}, "does not broadcast"),
        ({"baseline": torch.zeros(3, 5, 5)}, "does not broadcast"),
        ({"baseline": "grey"}, "unknown baseline"),
        ({"baseline": []}, "empty"),
        ({"baseline": object()}, "baseline must be"),
        ({"baseline": torch.full((1,), float("nan"))}, "NaN"),
    ]
    before = snapshot(small, small_x)
    for kwargs, match in cases:
        with pytest.raises(xt.XaiError, match=match):
            ig(small_x, **kwargs)
    assert_no_trace(before, snapshot(small, small_x))
    with pytest.raises(xt.XaiError, match="method"):
        xt.IntegratedGradients(small, method="simpson")
    for steps in (0, -1, 1.5):
        with pytest.raises(xt.XaiError, match="steps"):
            xt.IntegratedGradients(small, steps=steps)
    with pytest.raises(xt.XaiError, match="steps"):
        xt.IntegratedGradients(small, steps=1, method="riemann_trapezoid")
    with pytest.raises(xt.XaiError, match="steps"):
        xt.IntegratedGradients(small, steps=8, method="adaptive")
    with pytest.raises(xt.XaiError, match="not both"):
        xt.IntegratedGradients(small, normalize=(0.5, 0.5), input_range=(0, 1))
    with pytest.raises(xt.XaiError, match="std"):
        xt.IntegratedGradients(small, normalize=(0.5, 0.0))
    with pytest.raises(xt.XaiError, match="1 or 3 values"):
        xt.IntegratedGradients(small, normalize=((0.5, 0.5), (1, 1)))(small_x)
    with pytest.raises(xt.XaiError, match="unexpected call argument"):
        ig(small_x, steps=3)
    with pytest.raises(xt.XaiError, match="fraction"):
        xt.GuidedIG(small, fraction=1.5)
    with pytest.raises(xt.XaiError, match="max_sigma"):
        xt.BlurIG(small, max_sigma=0)
    with pytest.raises(xt.XaiError, match="sqrt"):
        xt.BlurIG(small, sqrt="yes")
    with pytest.raises(xt.XaiError, match="background"):
        xt.ExpectedGradients(small, torch.zeros(4, 3))
    with pytest.raises(xt.XaiError, match="must match"):
        xt.ExpectedGradients(small, torch.zeros(4, 3, 8, 8))(small_x)
    with pytest.raises(xt.XaiError, match="seed"):
        xt.IntegratedGradients(small, seed="0")
    assert model.sizes == []


def test_no_trace_on_model_and_input(small, small_x):
    small_x.requires_grad_(True)
    before = snapshot(small, small_x)
    bg = torch.randn(4, 3, 12, 12)
    explainers = (xt.IntegratedGradients(small, steps=4), xt.IntegratedGradients(small, steps=40, method="adaptive"),
                  xt.BlurIG(small, steps=4), xt.GuidedIG(small, steps=4), xt.ExpectedGradients(small, bg, samples=3),
                  xt.SmoothGrad(xt.IntegratedGradients(small, steps=4), samples=3))
    for explainer in explainers:
        explainer(small_x)
        assert_no_trace(before, snapshot(small, small_x))
    small.fail_with = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        xt.IntegratedGradients(small, steps=4)(small_x)
    small.fail_with = None
    assert_no_trace(before, snapshot(small, small_x))
