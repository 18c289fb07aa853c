"""HookSession: every registration undone in reverse order, exactly once, whatever happens; layer
taps and capture: the last forward of the registering thread, no hook left."""
import threading

import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.hooks import LayerTap, capture, this_thread

from conftest import assert_no_trace, snapshot


def test_releases_in_reverse_order_and_idempotently():
    log = []
    s = xt.HookSession()
    for i in range(3):
        s.callback(lambda i=i: log.append(i))
    s.close()
    s.close()
    assert log == [2, 1, 0]
    with pytest.raises(RuntimeError, match="closed"):
        s.callback(lambda: None)


@pytest.mark.parametrize("error", [ValueError("x"), KeyboardInterrupt()])
def test_releases_on_exception_and_propagates_it(error):
    lin = nn.Linear(2, 2)
    holder = {"attr": 1}

    class Obj:
        value = "class default"

    obj = Obj()
    with pytest.raises(type(error)):
        with xt.HookSession() as s:
            s.forward_hook(lin, lambda m, i, o: None)
            s.forward_pre_hook(lin, lambda m, i: None)
            t = torch.zeros(2, requires_grad=True)
            s.tensor_hook(t, lambda g: g)
            s.set_attr(obj, "value", "temporary")
            s.callback(lambda: holder.update(attr=2))
            assert obj.value == "temporary" and len(lin._forward_hooks) == 1
            raise error
    assert not lin._forward_hooks and not lin._forward_pre_hooks and not t._backward_hooks
    assert obj.value == "class default" and "value" not in vars(obj)
    assert holder["attr"] == 2


def test_every_restorer_runs_even_if_one_fails():
    log = []
    s = xt.HookSession()
    s.callback(lambda: log.append("first"))
    s.callback(lambda: (_ for _ in ()).throw(RuntimeError("restorer failed")))
    s.callback(lambda: log.append("last"))
    with pytest.raises(RuntimeError, match="restorer failed"):
        s.close()
    assert log == ["last", "first"]


def test_entered_context_is_exited():
    with xt.HookSession() as s:
        s.enter(torch.no_grad())
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_registration_after_close_leaves_no_hook():
    """A closed session refuses before registering (issue 19, item 6)."""
    lin = nn.Linear(2, 2)
    s = xt.HookSession()
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.forward_hook(lin, lambda m, i, o: None)
    with pytest.raises(RuntimeError, match="closed"):
        s.forward_pre_hook(lin, lambda m, i: None)
    assert not lin._forward_hooks and not lin._forward_pre_hooks


# --- taps and capture -----------------------------------------------------------------------------
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1)).eval()


def test_capture_records_the_last_forward_in_the_graph():
    model = _net()
    x1, x2 = torch.randn(2, 3, 6, 6), torch.randn(1, 3, 6, 6)
    with capture(model, ["1", model[3]]) as acts:
        assert len(acts) == 0
        model(x1)
        out = model(x2)  # the last forward wins
        assert set(acts) == {"1", "3"} and len(acts) == 2
        a = acts["1"]
    with torch.no_grad():
        bn = model[1](model[0](x2))
    # the BatchNorm output, not the in-place ReLU's: the network went on with a copy
    torch.testing.assert_close(a, bn)
    assert float(a.detach().min()) < 0
    assert acts["3"] is not None and torch.equal(acts["3"], out)
    (g,) = torch.autograd.grad(out.sum(), a)  # still in the forward's graph
    assert g.shape == a.shape
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(KeyError):
        acts["0"]
    assert "Activations" in repr(acts)


def test_capture_under_no_grad_and_errors():
    model = _net()
    with capture(model, "0") as acts, torch.no_grad():
        model(torch.randn(1, 3, 6, 6))
    assert acts["0"].grad_fn is None
    with pytest.raises(xt.XaiError, match="'conv' is not a submodule"):
        with capture(model, "conv"):
            pass
    with pytest.raises(xt.XaiError, match="needs an nn.Module"):
        with capture(lambda t: t, "0"):
            pass


@pytest.mark.parametrize("error", [ValueError("in the block"), KeyboardInterrupt()])
def test_capture_removes_every_hook_on_exceptions(error, small, small_x):
    before = snapshot(small, small_x)
    with pytest.raises(type(error)):
        with capture(small, ["conv1", "bn", "conv2"]) as acts:
            small(small_x)
            raise error
    assert set(acts) == {"conv1", "bn", "conv2"}
    assert_no_trace(before, snapshot(small, small_x))


def test_taps_record_only_their_thread_and_can_pause():
    model = _net()
    x = torch.randn(1, 3, 6, 6)
    with xt.HookSession() as s:
        tap = LayerTap(s, model, [("0", model[0])], keep_input=True)
        t = threading.Thread(target=lambda: model(x))
        t.start()
        t.join()
        assert tap.forwards == 0 and tap.outputs == [[]]
        with tap.paused():
            model(x)
        assert tap.forwards == 0
        out = model(x)
        assert tap.forwards == 1 and tap.output is out and len(tap.outputs[0]) == 1
        assert tap.input_shape == x.shape and torch.equal(tap.input, x) and tap.input is not x


def test_this_thread_hooks_skip_other_threads():
    lin, seen = nn.Linear(2, 2), []
    with xt.HookSession() as s:
        s.forward_hook(lin, this_thread(lambda m, i, o: seen.append(threading.get_ident())))
        t = threading.Thread(target=lambda: lin(torch.ones(1, 2)))
        t.start()
        t.join()
        lin(torch.ones(1, 2))
    assert seen == [threading.get_ident()]
    assert not lin._forward_hooks


# --- parity with Captum -------------------------------------------------------------------------
@pytest.mark.parity
def test_parity_capture_matches_captum_layer_activation():
    # capture records outputs only; layer inputs are recorded by LayerTap(layer_inputs=True), the
    # tap behind layer_input=True, compared here with Captum's attribute_to_layer_input=True
    from captum.attr import LayerActivation

    from xai_torch.hooks import HookSession
    from xai_torch.layers import find_layers

    from conftest import torchvision_model

    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    names = ["layer1.0.bn1", "layer3", "layer4", "avgpool"]
    modules = [model.get_submodule(n) for n in names]
    with capture(model, names) as acts, torch.no_grad():
        model(x)
    for layer_input in (False, True):
        ref = LayerActivation(model, modules).attribute(x, attribute_to_layer_input=layer_input)
        if layer_input:
            with HookSession() as s, torch.no_grad():
                tap = LayerTap(s, model, find_layers(model, names), layer_inputs=True)
                model(x)
            ours = [tap.outputs[i][-1] for i in range(len(names))]
        else:
            ours = [acts[n] for n in names]
        for n, a, r in zip(names, ours, ref):
            assert a.shape == r.shape, n
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4 * float(r.abs().max()), msg=n)
    assert float(acts["layer1.0.bn1"].min()) < 0  # the BN output, before the in-place ReLU
