"""Guided backpropagation, DeconvNet and Guided Grad-CAM on real architectures (the rules
themselves: tests/test_rules.py)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import close, count_rectifier_ops, reference_gradient

RULES = {"guided": xt.GuidedBackprop, "deconvnet": xt.Deconvnet}


@pytest.mark.parametrize("kind", list(RULES))
def test_rule_matches_reference_on_torchvision(arch, kind):
    name, model, x, true_calls = arch
    target = [3, 7]
    res = RULES[kind](model).explain(x, target=target)
    close(res.attributions, reference_gradient(model, x, target, kind))
    assert res.rectifier_calls == true_calls == count_rectifier_ops(model, x)
    # the rule really changed something
    plain = reference_gradient(model, x, target)
    assert (res.attributions - plain).abs().max() > 1e-3 * plain.abs().max()


@pytest.mark.parametrize("kind", list(RULES))
def test_packaged_efficientnet_lite0(lite0, chelsea, kind):
    res = RULES[kind](lite0).explain(chelsea)
    assert res.rectifier_calls == 33  # 17 ReLU6 modules, called 33 times
    assert int(res.targets) == 282  # tiger cat
    close(res.attributions, reference_gradient(lite0, chelsea, res.targets, kind))


def test_guided_backprop_is_not_the_gradient_on_inception():
    from conftest import torchvision_model

    model = torchvision_model("inception_v3")  # only functional ReLU: Captum misses all 94
    x = torch.randn(1, 3, 80, 80, generator=torch.Generator().manual_seed(0))
    gbp = xt.GuidedBackprop(model)(x, target=5)
    grad = xt.Gradient(model)(x, target=5)
    assert (gbp - grad).abs().max() > 0.1 * grad.abs().max()


def test_model_without_rectifier_raises():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 3, 6, 6)
    model(x)
    with pytest.raises(xt.XaiError, match="no ReLU.*gelu x1"):
        xt.GuidedBackprop(model)(x)


def test_unruled_activation_warns_by_name():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.SiLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(2, 3, 6, 6)
    with pytest.warns(xt.XaiWarning, match="silu x1"):
        res = xt.GuidedBackprop(model, batch_size=1).explain(x)
    assert res.no_rule == {"silu": 1} and res.rectifier_calls == 1


def test_no_warning_for_pure_relu_models(small, small_x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xt.GuidedBackprop(small)(small_x)


# --- Guided Grad-CAM ---------------------------------------------------------------------------------
def test_guided_grad_cam_is_gbp_times_grad_cam():
    from conftest import torchvision_model

    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    res = xt.GuidedGradCAM(model, layer="layer3").explain(x, target=[4, 9])
    gbp = xt.GuidedBackprop(model)(x, target=[4, 9])
    cam = xt.GradCAM(model, layer="layer3")(x, target=[4, 9])
    assert res.attributions.shape == (2, 3, 64, 64)
    torch.testing.assert_close(res.attributions, gbp * cam, rtol=1e-4, atol=1e-6 * float((gbp * cam).abs().max()))
    torch.testing.assert_close(res.layer_maps[0], xt.GradCAM(model, layer="layer3", upsample=False)(x, target=[4, 9]))
