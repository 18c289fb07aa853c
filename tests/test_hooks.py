"""HookSession: every registration undone in reverse order, exactly once, whatever happens."""
import pytest
import torch
from torch import nn

import xai_torch as xt


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
