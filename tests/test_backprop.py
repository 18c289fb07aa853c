"""Guided backpropagation and DeconvNet: every rectifier call, nothing else."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_torch as xt

from conftest import _ref_rectifier, count_rectifier_ops, reference_gradient

RULES = {"guided": xt.GuidedBackprop, "deconvnet": xt.Deconvnet}


def close(a, b, rtol=1e-4):
    scale = b.abs().max()
    assert scale > 0
    err = (a - b).abs().max() / scale
    assert err <= rtol, f"relative error {float(err):.2e}"


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


class AllForms(nn.Module):
    """Every rectifier form DESIGN.md lists, a reused in-place module, and two non-rectifiers.

    With ``reference`` set, each rectifier call is replaced by the test's reference rule
    (with the same bounds) instead: an independent model of what the rule must do.
    """

    BOUNDS = [(0.0, None)] * 9 + [(0.0, 6.0)] * 3 + [(0.0, None), (0.0, 6.0)]
    forms = len(BOUNDS)

    def __init__(self, reference=None):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(self.forms))
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        self.fc = nn.Linear(4, 6)
        self.reference = reference

    def forward(self, x):
        x = self.stem(x)
        acts = [
            lambda t: self.relu(t), lambda t: self.relu(t),  # reused in-place module
            lambda t: F.relu(t), lambda t: F.relu(t, inplace=True), lambda t: F.relu_(t),
            lambda t: torch.relu(t), lambda t: torch.relu_(t), lambda t: t.relu(), lambda t: t.relu_(),
            lambda t: F.relu6(t), lambda t: F.hardtanh(t, 0.0, 6.0), lambda t: self.relu6(t),
            lambda t: F.threshold(t, 0.0, 0.0), lambda t: F.relu6(t, inplace=True),
        ]
        for conv, act, (lo, hi) in zip(self.convs, acts, self.BOUNDS):
            z = conv(x) * 3
            x = act(z) if self.reference is None else _ref_rectifier(self.reference, z, lo, hi)
        x = F.hardtanh(x, -1.0, 1.0) + torch.clamp(x, min=0)  # not rectifier rules
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("kind", list(RULES))
def test_every_rectifier_form(kind):
    torch.manual_seed(0)
    model = AllForms().eval()
    x = torch.randn(2, 3, 10, 10)
    res = RULES[kind](model).explain(x, target=[1, 4])
    assert res.rectifier_calls == AllForms.forms == count_rectifier_ops(model, x)
    reference = AllForms(reference=kind).eval()
    reference.load_state_dict(model.state_dict())
    close(res.attributions, reference_gradient(reference, x, [1, 4]))
    # and the reference really is different from the plain gradient of this model
    plain = reference_gradient(model, x, [1, 4])
    assert (res.attributions - plain).abs().max() > 1e-2 * plain.abs().max()


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


def test_guided_values_are_gradients_through_positive_paths():
    # one linear layer and a ReLU: y = w2 . relu(W1 x); GBP = W1^T (1[z>0] * max(w2, 0))
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(5, 4, bias=False), nn.Linear(4, 1, bias=False)
    model = nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2)
    x = torch.randn(1, 1, 1, 5)
    z = lin1(x.flatten(1))
    expect = ((z > 0) * lin2.weight.clamp(min=0)) @ lin1.weight
    got = xt.GuidedBackprop(model)(x, target=0)
    assert torch.allclose(got.flatten(), expect.flatten(), atol=1e-6)
    deconv = xt.Deconvnet(model)(x, target=0)
    assert torch.allclose(deconv.flatten(), (lin2.weight.clamp(min=0) @ lin1.weight).flatten(), atol=1e-6)


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


def test_scripted_and_compiled_models_are_refused(small, small_x):
    scripted = torch.jit.script(small)
    with pytest.raises(xt.XaiError, match="TorchScript"):
        xt.GuidedBackprop(scripted)(small_x)
    # plain gradients do not need interception: they still work on the scripted model
    assert torch.allclose(xt.Gradient(scripted)(small_x), xt.Gradient(small)(small_x), atol=1e-6)
    compiled = torch.compile(small)
    with pytest.raises(xt.XaiError, match="torch.compile"):
        xt.Deconvnet(compiled)(small_x)
    wrapper = nn.Sequential(nn.Identity(), torch.jit.script(SmallBlock()))
    with pytest.raises(xt.XaiError, match="submodule '1'"):
        xt.GuidedBackprop(wrapper)(small_x)
    with pytest.raises(xt.XaiError, match="DataParallel"):
        xt.GuidedBackprop(nn.DataParallel(small).eval())(small_x)


class SmallBlock(nn.Module):
    def forward(self, x):
        return torch.relu(x).mean((2, 3))


def test_rule_reaches_nothing_outside_the_call(small, small_x):
    """Forward passes the user runs in the with block, between calls, keep plain gradients."""
    with xt.GuidedBackprop(small) as gbp:
        gbp(small_x)
        xg = small_x.clone().requires_grad_(True)
        small(xg)[:, 0].sum().backward()
    expect = xt.Gradient(small)(small_x, target=0)
    assert torch.allclose(xg.grad, expect, atol=1e-6)


def test_no_warning_for_pure_relu_models(small, small_x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xt.GuidedBackprop(small)(small_x)
