"""The contract every explainer keeps: no trace, clear errors, batch semantics, batching plan."""
from __future__ import annotations

import gc
import tracemalloc

import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import SmallNet, assert_no_trace, snapshot

EXPLAINERS = [xt.Gradient, xt.InputXGradient, xt.GuidedBackprop, xt.Deconvnet]
ids = [e.__name__ for e in EXPLAINERS]


def with_grads(model):
    """Give some parameters an existing .grad (others keep None) and one frozen parameter."""
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 0.5)
    model.fc.bias.requires_grad_(False)
    return model


# --- no trace ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", EXPLAINERS, ids=ids)
def test_no_trace_after_success(cls, small, small_x):
    model = with_grads(small)
    small_x.requires_grad_(True)
    before = snapshot(model, small_x)
    cls(model)(small_x, target=[0, 1, 2])
    with cls(model) as e:
        e(small_x)
        with cls(model) as inner:  # nested
            inner(small_x, target=1)
        e(small_x, target=[[0, 1]] * 3)
    with cls(model) as e:  # repeated
        e(small_x)
    assert_no_trace(before, snapshot(model, small_x))


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "interrupt"])
@pytest.mark.parametrize("cls", EXPLAINERS, ids=ids)
def test_no_trace_after_exception_in_forward(cls, error, small, small_x):
    model = with_grads(small)
    before = snapshot(model, small_x)
    model.fail_with = error
    with pytest.raises(type(error)) as info:
        cls(model)(small_x)
    assert info.value is error  # the original exception propagates, unwrapped
    with pytest.raises(type(error)):
        with cls(model) as e:
            e(small_x)
    model.fail_with = None
    assert_no_trace(before, snapshot(model, small_x))


@pytest.mark.parametrize("cls", EXPLAINERS, ids=ids)
def test_no_trace_after_rejected_target(cls, small, small_x):
    model = with_grads(small)
    before = snapshot(model, small_x)
    with pytest.raises(xt.XaiError, match=r"out of range.*5 classes.*\[0, 4\]"):
        cls(model)(small_x, target=[0, 1, 9])
    with cls(model) as e:
        with pytest.raises(xt.XaiError, match="3 images"):
            e(small_x, target=[0, 1])
    assert_no_trace(before, snapshot(model, small_x))


def test_no_trace_on_a_model_in_training_mode(small, small_x):
    small.train()
    before = snapshot(small, small_x)
    with pytest.warns(xt.XaiWarning, match="training mode.*BatchNorm2d"):
        xt.GuidedBackprop(small)(small_x)
    assert_no_trace(before, snapshot(small, small_x))


def test_thousand_calls_do_not_grow(small, small_x):
    explainers = [cls(small) for cls in EXPLAINERS]

    def run(n):
        for _ in range(n):
            for e in explainers:
                e(small_x)
            with explainers[2] as e:
                e(small_x, target=[[0, 1]] * 3)

    run(20)  # warm up caches
    gc.collect()
    before = snapshot(small, small_x)
    tensors_before = sum(type(o) in (torch.Tensor, nn.Parameter) for o in gc.get_objects())
    tracemalloc.start()
    start = tracemalloc.take_snapshot()
    run(250)  # 1000 explainer calls + 250 with-blocks
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(start, "filename"))
    tracemalloc.stop()
    tensors_after = sum(type(o) in (torch.Tensor, nn.Parameter) for o in gc.get_objects())
    assert_no_trace(before, snapshot(small, small_x))
    assert tensors_after <= tensors_before
    assert grown < 200_000, f"python memory grew by {grown} bytes over 1250 calls"


# --- bad inputs ---------------------------------------------------------------------------
BAD = [
    (lambda x: x[0, 0], "shape \\(B, C, H, W\\) or \\(C, H, W\\).*2 dims"),
    (lambda x: x[None], "5 dims"),
    (lambda x: (x * 255).to(torch.uint8), "floating-point.*uint8"),
    (lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("nan"))), "NaN or infinite"),
    (lambda x: x.index_put((torch.tensor([1]),), torch.tensor(float("inf"))), "NaN or infinite"),
    (lambda x: x.numpy(), "torch.Tensor"),
    (lambda x: x[:0], "empty"),
]


@pytest.mark.parametrize("make,message", BAD)
@pytest.mark.parametrize("cls", EXPLAINERS, ids=ids)
def test_bad_x(cls, make, message, small, small_x):
    before = snapshot(small, small_x)
    with pytest.raises(xt.XaiError, match=message):
        cls(small)(make(small_x))
    assert_no_trace(before, snapshot(small, small_x))


BAD_TARGETS = [
    (9, "out of range"),
    (-1, ">= 0"),
    ([0, 1], "2 entries but x has 3 images"),
    ([0, 1, 2, 3], "4 entries"),
    (torch.tensor([0.0, 1.0, 2.0]), "integers"),
    (True, "bool"),
    ("cat", "must be None, an int"),
    (torch.zeros(3, 2, 2, dtype=torch.long), "0-, 1- or 2-D"),
    ([[0, 1], [2, 3], [4, 5], [0, 1]], "4 entries"),
    (torch.zeros(3, 0, dtype=torch.long), "no class"),
]


@pytest.mark.parametrize("target,message", BAD_TARGETS)
def test_bad_target(target, message, small, small_x):
    before = snapshot(small, small_x)
    with pytest.raises(xt.XaiError, match=message):
        xt.GuidedBackprop(small)(small_x, target=target)
    assert_no_trace(before, snapshot(small, small_x))


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = SmallNet()

    def forward(self, x):
        return {"out": self.net(x)}


def test_output_a_class_target_cannot_reduce(small_x):
    model = DictModel().eval()
    before = snapshot(model, small_x)
    with pytest.raises(xt.XaiError, match="needs a model output of shape \\(B, num_classes\\).*dict"):
        xt.Gradient(model)(small_x, target=1)
    with pytest.raises(xt.XaiError, match="one score per image, shape \\(3,\\)"):
        xt.Gradient(model)(small_x, target=lambda out: out["out"])
    with pytest.raises(xt.XaiError, match="does not depend on x"):
        xt.Gradient(model)(small_x, target=lambda out: out["out"][:, 0].detach())
    assert_no_trace(before, snapshot(model, small_x))
    got = xt.Gradient(model)(small_x, target=lambda out: out["out"][:, 2])
    assert torch.allclose(got, xt.Gradient(model.net)(small_x, target=2))


def test_bad_configuration(small, small_x):
    with pytest.raises(xt.XaiError, match="batch_size"):
        xt.Gradient(small, batch_size=0)
    with pytest.raises(xt.XaiError, match="model must be"):
        xt.Gradient("resnet18")
    with pytest.raises(xt.XaiError, match="unexpected call argument.*'baseline'.*accepts target"):
        xt.Gradient(small)(small_x, baseline="black")


# --- batch semantics -------------------------------------------------------------------------
@pytest.mark.parametrize("cls", EXPLAINERS, ids=ids)
def test_batch_semantics(cls, small, small_x):
    e = cls(small)
    res = e.explain(small_x)
    argmax = small(small_x).argmax(1)
    assert torch.equal(res.targets, argmax)
    assert torch.allclose(res.scores, small(small_x).gather(1, argmax[:, None])[:, 0])
    # one image alone equals the same image inside the batch
    for i in range(3):
        alone = e(small_x[i], target=int(argmax[i]))
        assert alone.shape == (1, 3, 12, 12)
        torch.testing.assert_close(alone[0], res.attributions[i], rtol=1e-5, atol=1e-7)
    # per-image targets, int targets, tensors and numpy arrays
    per = e(small_x, target=[4, 0, 2])
    torch.testing.assert_close(per[1], e(small_x[1:2], target=0)[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(e(small_x, target=3), e(small_x, target=torch.tensor([3, 3, 3])))
    torch.testing.assert_close(per, e(small_x, target=torch.tensor([4, 0, 2]).numpy()))
    # (B, K) targets: K results per image, same as K separate calls
    both = e.explain(small_x, target=[[4, 1], [0, 0], [2, 3]])
    assert both.attributions.shape == (3, 2, 3, 12, 12)
    assert both.targets.tolist() == [[4, 1], [0, 0], [2, 3]]
    torch.testing.assert_close(both.attributions[:, 0], per, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(both.attributions[:, 1], e(small_x, target=[1, 0, 3]), rtol=1e-5, atol=1e-7)
    assert both.scores.shape == (3, 2)


def test_callable_and_target_objects(small, small_x):
    e = xt.Gradient(small)
    torch.testing.assert_close(e(small_x, target=lambda out: out[:, 1]), e(small_x, target=1))
    prob = e.explain(small_x, target=xt.ClassTarget([0, 1, 2], score="softmax"))
    xg = small_x.clone().requires_grad_(True)
    p = small(xg).softmax(1)
    (g,) = torch.autograd.grad(p[[0, 1, 2], [0, 1, 2]].sum(), xg)
    torch.testing.assert_close(prob.attributions, g)
    torch.testing.assert_close(prob.scores, p[[0, 1, 2], [0, 1, 2]].detach())


def test_dtype_and_grad_mode(small, small_x):
    e = xt.Gradient(small)
    ref = e(small_x)
    with torch.no_grad():
        torch.testing.assert_close(e(small_x), ref)
    with torch.inference_mode():
        x_inf = small_x.clone()
        torch.testing.assert_close(e(x_inf), ref)
    double = xt.Gradient(SmallNet().double().eval())(small_x.double())
    assert double.dtype == torch.float64


@pytest.mark.parametrize("cls", EXPLAINERS, ids=ids)
def test_model_calls_follow_the_batching_plan(cls, small, small_x):
    calls = []
    handle = small.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    try:
        x = torch.cat([small_x, small_x[:2]])  # 5 images
        cls(small, batch_size=2)(x)
        assert calls == [2, 2, 1]
        calls.clear()
        cls(small, batch_size=4)(x, target=[[0, 1]] * 5)  # 10 samples
        assert calls == [4, 4, 2]
        calls.clear()
        cls(small)(x)  # automatic: one call for small inputs
        assert calls == [5]
    finally:
        handle.remove()


def test_repr_shows_configuration(small):
    assert repr(xt.Gradient(small, abs=True, batch_size=8)) == (
        "Gradient(model=SmallNet, abs=True, batch_size=8, progress=None)"
    )
    assert repr(xt.GuidedBackprop(small)) == "GuidedBackprop(model=SmallNet, batch_size=None, progress=None)"


def test_progress_bar(small, small_x, capsys):
    xt.Gradient(small, batch_size=1, progress=True)(small_x)
    assert "Gradient" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU path; CI has none)")
@pytest.mark.parametrize("cls", EXPLAINERS, ids=ids)
def test_runs_on_the_model_device(cls, small, small_x):
    cpu = cls(small)(small_x)
    model = SmallNet().cuda().eval()
    model.load_state_dict(small.state_dict())
    got = cls(model)(small_x)  # x on the CPU: moved to the model's device and back
    assert got.device == small_x.device
    torch.testing.assert_close(got, cpu, rtol=1e-4, atol=1e-6)
    assert cls(model)(small_x.cuda()).device.type == "cuda"


def test_plain_callable_models(small, small_x):
    fn = lambda t: small(t).log_softmax(1)  # noqa: E731 - a function, not an nn.Module
    got = xt.Gradient(fn)(small_x, target=1)
    xg = small_x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(small(xg).log_softmax(1)[:, 1].sum(), xg)
    torch.testing.assert_close(got, g)
    assert xt.GuidedBackprop(fn).explain(small_x).rectifier_calls == 2  # functional calls are seen too
    assert repr(xt.Gradient(fn)).startswith("Gradient(model=function")


def test_automatic_progress_stays_off_when_not_on_a_terminal(small, small_x, capsys):
    xt.Gradient(small, batch_size=1)(torch.cat([small_x] * 4))  # 12 model calls, stderr is captured
    assert capsys.readouterr().err == ""
