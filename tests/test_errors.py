"""The one exception type and the boundary checks: messages that name the argument, what was
expected and what was given; attached mode refused with the explainers that support it."""
import math

import pytest
import torch

import xai_torch as xt
from xai_torch.errors import (
    XaiError,
    check_choice,
    check_fill,
    check_input,
    check_positive_int,
    closest_names,
    describe,
)

from conftest import SmallNet, assert_no_trace, snapshot


def test_xai_error_is_a_value_error():
    assert issubclass(xt.XaiError, ValueError) and xt.XaiError is XaiError
    assert issubclass(xt.XaiWarning, UserWarning)


def test_describe():
    assert describe(torch.zeros(2, 3)) == "tensor of shape (2, 3) and dtype torch.float32"
    assert describe("abc") == "str 'abc'"
    assert describe("x" * 100).endswith("...") and len(describe("x" * 100)) < 70


@pytest.mark.parametrize("x,match", [
    ([1.0, 2.0], "torch.Tensor of shape"),
    (torch.zeros(3, 4), r"got shape \(3, 4\) \(2 dims\)"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "floating-point.*uint8"),
    (torch.zeros(0, 3, 4, 4), "empty"),
    (torch.tensor([[[[math.nan, 1.0]]]]), "1 NaN or infinite"),
])
def test_check_input_rejects(x, match):
    with pytest.raises(XaiError, match=match):
        check_input(x)


def test_check_input_adds_the_batch_dim_as_a_view():
    x = torch.randn(3, 4, 5)
    x4, unbatched = check_input(x)
    assert unbatched and x4.shape == (1, 3, 4, 5) and x4.data_ptr() == x.data_ptr()
    x = torch.randn(2, 3, 4, 5)
    assert check_input(x) == (x, False)


def test_small_checks():
    assert check_positive_int(3, "steps") == 3
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(XaiError, match="steps must be an integer >= 1"):
            check_positive_int(bad, "steps")
    assert check_fill(1, "value") == 1.0 and isinstance(check_fill(1, "value"), float)
    assert check_fill(torch.ones(3, 1, 1, requires_grad=True), "value").requires_grad is False
    with pytest.raises(XaiError, match="value must be finite"):
        check_fill(math.inf, "value")
    with pytest.raises(XaiError, match="value must be a number or a tensor"):
        check_fill("0", "value")
    assert check_choice("mean", "variant", ("mean", "var")) == "mean"
    with pytest.raises(XaiError, match=r"variant must be one of \['mean', 'var'\]; got 'max'"):
        check_choice("max", "variant", iter(("mean", "var")))


def test_closest_names():
    names = ["layer1.0.conv1", "layer4", "layer4.1.conv2", "fc"]
    assert closest_names("layer_4", names)[0] == "layer4"
    assert "layer4.1.conv2" in closest_names("conv2", iter(names))  # shares the last part


def explainers(model):
    return [xt.Gradient(model), xt.InputXGradient(model), xt.Occlusion(model, window=4),
            xt.RISE(model, masks=4, cell=4, seed=0), xt.SmoothGrad(xt.Gradient(model), samples=2),
            xt.IntegratedGradients(model, steps=2)]


def test_from_output_is_refused_with_the_explainers_that_support_it(small, small_x):
    out = small(small_x)
    for e in explainers(small):
        with pytest.raises(XaiError, match=f"{type(e).__name__} has no attached mode.*GradCAM") as info:
            e.from_output(out)
        listed = str(info.value).rsplit("attached mode: ", 1)[1].rstrip(".").split(", ")
        # public explainers only: no shared bases, and not GuidedGradCAM (it needs its own guided forward)
        assert listed == ["AblationCAM", "CAM", "EigenCAM", "EigenGradCAM", "FullGrad", "GradCAM", "GradCAMPlusPlus",
                          "HiResCAM", "LayerCAM", "ScoreCAM", "XGradCAM"]


def test_bad_input_to_every_explainer_is_an_xai_error_and_changes_nothing(small):
    x = torch.randn(2, 4, 8, 8)  # the model takes 3 channels
    before = snapshot(small, x)
    for e in explainers(small):
        with pytest.raises(XaiError, match=r"cannot take x with images of shape \(4, 8, 8\)") as info:
            e(x)
        assert isinstance(info.value.__cause__, RuntimeError), type(e).__name__
    assert_no_trace(before, snapshot(small, x))


def test_model_errors_unrelated_to_the_input_are_not_wrapped(small_x):
    torch.manual_seed(0)
    model = SmallNet().eval()
    error = RuntimeError("boom")
    model.fail_with = error
    for e in explainers(model):
        with pytest.raises(RuntimeError) as info:
            e(small_x)
        assert info.value is error, type(e).__name__
