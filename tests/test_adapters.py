"""xt.adapt: keyword-input and output-object models as explainers call them, as a view of the model."""
from __future__ import annotations

import copy
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.adapters import select_output

from conftest import assert_no_trace, snapshot

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class KeywordNet(nn.Module):
    """Takes ``pixel_values=`` and a required ``scale=``; returns a dict, like a Hugging Face model."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.ones(1, 1, 4))
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4, 5)
        self.register_buffer("offset", torch.zeros(5))

    def forward(self, *, pixel_values: torch.Tensor, scale: float) -> dict[str, Any]:
        feats = self.body(pixel_values)
        return {"hidden": feats, "logits": scale * self.head(feats.mean((2, 3))) + self.offset}


def test_the_adapter_is_a_view_with_the_models_names() -> None:
    net = KeywordNet()
    a = xt.adapt(net, input_name="pixel_values", scale=2.0)
    assert [n for n, _ in a.named_modules()][1:] == [n for n, _ in net.named_modules()][1:]
    assert all(p is q for p, q in zip(a.parameters(), net.parameters())) and len(list(a.parameters())) == 5
    assert list(a.state_dict()) == list(net.state_dict())
    assert xt.find_layer(a, "body.0")[1] is net.body[0]
    with pytest.raises(xt.XaiError, match=r"'body.9' is not a submodule of KeywordNet\. Closest names: .*'body.0'"):
        xt.GradCAM(a, layer="body.9")
    torch.testing.assert_close(a(X), net(pixel_values=X, scale=2.0)["logits"])
    assert a.head is net.head and a.wrapped is net and "wrapped" not in vars(net)
    twin = copy.deepcopy(a)  # model_randomization copies the model: the copy is a view of a copied model
    assert twin.wrapped is not net and twin.body is twin.wrapped.body and twin.body is not net.body


def test_explaining_through_the_adapter_leaves_the_model_untouched() -> None:
    net = KeywordNet().train()
    before = snapshot(net, X)
    a = xt.adapt(net, input_name="pixel_values", scale=2.0)
    maps = xt.GradCAM(a, layer="body")(X, target=[1, 3])
    grads = xt.Gradient(a)(X, target=1)
    assert_no_trace(before, snapshot(net, X))
    assert maps.shape == (2, 1, 8, 8) and maps.any() and net.training and a.training
    xg = X.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(net(pixel_values=xg, scale=2.0)["logits"][:, 1].sum(), xg)
    torch.testing.assert_close(grads, ref.abs().amax(1, keepdim=True) if grads.shape[1] == 1 else ref)
    assert a.eval() is a and not net.training and not a.training  # eval() of the adapter is the model's


def test_outputs_are_selected() -> None:
    t = torch.zeros(2, 3)
    pair = namedtuple("Pair", "logits aux")(t, None)
    assert select_output(t) is t and select_output({"logits": t}) is t and select_output(pair) is t
    assert select_output((t, 1.0)) is t and select_output((1.0, t), 1) is t
    assert select_output({"scores": t}, "scores") is t and select_output([t], lambda o: o[0]) is t
    with pytest.raises(xt.XaiError, match=r"no 'logits' \(it has 'scores'\).*output='NAME'"):
        select_output({"scores": t})
    with pytest.raises(xt.XaiError, match=r"(?s)select_output='probs': the model returns a Pair .* no such attribute"):
        select_output(pair, "probs")
    with pytest.raises(xt.XaiError, match="selects a NoneType|selects a None"):
        select_output(pair, "aux")
    with pytest.raises(xt.XaiError, match=r"(?s)select_output=2: .*with that position"):
        select_output((t,), 2)


def test_bad_arguments_are_refused() -> None:
    net = KeywordNet()
    with pytest.raises(xt.XaiError, match="needs an nn.Module"):
        xt.adapt(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(xt.XaiError, match="input_name must be None or a keyword"):
        xt.adapt(net, input_name="pixel values")
    with pytest.raises(xt.XaiError, match="output must be"):
        xt.adapt(net, output=1.5)  # type: ignore[arg-type]
    with pytest.raises(xt.XaiError, match="cannot also be a fixed keyword"):
        xt.adapt(net, input_name="pixel_values", pixel_values=X)
    with pytest.raises(xt.XaiError, match=r"'probs': the model returns a dict with keys \['hidden', 'logits'\]"):
        xt.Gradient(xt.adapt(net, input_name="pixel_values", output="probs", scale=1.0))(X)
    assert dict(net.named_modules()).keys() == dict(KeywordNet().named_modules()).keys()
