"""Rectifier rules (xai_torch/rules.py): which calls are rectifiers, what each rule's backward
is, and the scope of the interception (per call, per thread, nothing outside)."""
from __future__ import annotations

import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import xai_torch as xt
from xai_torch.rules import DECONV, GUIDED, PLAIN, RectifierMode, check_interceptable, wrapper_error, wrapper_errors

from conftest import _ref_rectifier, assert_no_trace, close, count_rectifier_ops, reference_gradient, snapshot

RULES = {"guided": xt.GuidedBackprop, "deconvnet": xt.Deconvnet}


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

# --- the mode itself ------------------------------------------------------------------------------------
def test_rule_is_read_when_the_backward_runs():
    """One forward under the mode serves a plain and a guided backward (Guided Grad-CAM)."""
    torch.manual_seed(0)
    model = AllForms().eval()
    x = torch.randn(2, 3, 10, 10)
    xg = x.clone().requires_grad_(True)
    mode = RectifierMode(PLAIN)
    with mode:
        out = model(xg)
    assert mode.calls == AllForms.forms
    score = out[:, 1].sum()
    (plain,) = torch.autograd.grad(score, xg, retain_graph=True)
    mode.rule = GUIDED
    (guided,) = torch.autograd.grad(score, xg, retain_graph=True)
    mode.rule = DECONV
    (deconv,) = torch.autograd.grad(score, xg)
    close(plain, reference_gradient(model, x, [1, 1]))
    for kind, got in (("guided", guided), ("deconvnet", deconv)):
        reference = AllForms(reference=kind).eval()
        reference.load_state_dict(model.state_dict())
        close(got, reference_gradient(reference, x, [1, 1]))


def test_values_and_in_place_semantics_are_unchanged():
    z = torch.randn(4, 5)
    for fn in (F.relu, torch.relu, lambda t: t.relu(), F.relu6, lambda t: F.hardtanh(t, 0.0, 6.0),
               lambda t: F.threshold(t, 0.0, 0.0)):
        with RectifierMode(GUIDED) as mode:
            got = fn(z * 4)
        torch.testing.assert_close(got, fn(z * 4))
        assert mode.calls == 1
    for fn in (F.relu_, torch.relu_, lambda t: t.relu_(), lambda t: F.relu(t, inplace=True),
               lambda t: F.relu6(t, inplace=True)):
        a = z.clone()
        with RectifierMode(GUIDED):
            out = fn(a)
        assert out is a and float(a.min()) == 0.0  # written in place, as without the mode


def test_non_rectifiers_pass_and_unruled_activations_are_counted():
    z = torch.randn(3, 4, requires_grad=True)
    with RectifierMode(GUIDED) as mode:
        y = F.hardtanh(z, -1.0, 1.0) + z.clamp(min=0) + F.gelu(z) + F.silu(z) + F.leaky_relu(z)
    assert mode.calls == 0 and mode.unruled == {"gelu": 1, "silu": 1, "leaky_relu": 1}
    (g,) = torch.autograd.grad(y.sum(), z)
    zz = z.detach().clone().requires_grad_(True)
    expect = F.hardtanh(zz, -1.0, 1.0) + zz.clamp(min=0) + F.gelu(zz) + F.silu(zz) + F.leaky_relu(zz)
    (g0,) = torch.autograd.grad(expect.sum(), zz)
    torch.testing.assert_close(g, g0)


def test_the_mode_stays_on_its_thread():
    """Another thread's forward while the mode is active keeps plain gradients (issue 19)."""
    z = torch.randn(8)
    seen = {}

    def other():
        zz = z.clone().requires_grad_(True)
        (seen["grad"],) = torch.autograd.grad((torch.relu(zz) * -1).sum(), zz)

    with RectifierMode(GUIDED) as mode:
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert mode.calls == 0
    torch.testing.assert_close(seen["grad"], -(z > 0).float())  # guided would give 0


def test_check_interceptable_accepts_eager_models_and_callables(small):
    check_interceptable(small)
    check_interceptable(lambda t: t)


def test_count_matches_the_dispatcher(small, small_x):
    with RectifierMode(PLAIN) as mode:
        small(small_x)
    assert mode.calls == count_rectifier_ops(small, small_x) == 2


# --- wrappers gradients cannot pass (issue 19, item 5) ---------------------------------------------
class Reentrant(nn.Module):
    def __init__(self, net: nn.Module, reentrant: bool = True) -> None:
        super().__init__()
        self.net, self.reentrant = net, reentrant

    def forward(self, x):
        n = self.net
        h = checkpoint(lambda z: n.relu(n.bn(n.conv1(z))), x, use_reentrant=self.reentrant)
        return n.fc(n.relu(n.conv2(h)).mean((2, 3)))


def test_reentrant_checkpoint_errors_say_what_to_do(small, small_x):
    model = Reentrant(small).eval()
    xg = small_x.clone().requires_grad_()
    with pytest.raises(RuntimeError) as raw:   # PyTorch's own refusal of autograd.grad
        torch.autograd.grad(model(xg)[:, 0].sum(), xg)
    err = wrapper_error(raw.value, "Gradient")
    assert isinstance(err, xt.XaiError) and "use_reentrant=False" in str(err) and str(err).startswith("Gradient:")
    for unrelated in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("checkpoint .grad()")):
        assert wrapper_error(unrelated, "Gradient") is None
    with pytest.raises(KeyError):   # everything else passes unchanged
        with wrapper_errors("Gradient"):
            raise KeyError("x")
    before = snapshot(model, small_x)
    for explainer in (xt.Gradient(model), xt.GuidedBackprop(model), xt.IntegratedGradients(model, steps=2),
                      xt.SmoothGrad(xt.Gradient(model), samples=2)):
        with pytest.raises(xt.XaiError, match=r"use_reentrant=True.*use_reentrant=False") as info:
            explainer(small_x, target=1)
        assert isinstance(info.value.__cause__, RuntimeError)
    assert_no_trace(before, snapshot(model, small_x))
    # use_reentrant=False: the plain model's gradients
    torch.testing.assert_close(xt.GuidedBackprop(Reentrant(small, False).eval())(small_x, 1),
                               xt.GuidedBackprop(small)(small_x, 1), rtol=0, atol=0)


def test_traced_models_are_named_as_traced(small, small_x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit.trace is deprecated
        traced = torch.jit.trace(small, small_x)
    with pytest.raises(xt.XaiError, match=r"TorchScript module \(made with torch.jit.trace\)"):
        xt.GuidedBackprop(traced)(small_x)
