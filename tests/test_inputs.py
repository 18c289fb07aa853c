"""Inputs and outputs (issues 17 and 18): model outputs that are dicts or objects with
``logits`` (Hugging Face's ``ImageClassifierOutput``), ``select_output=``, on every public
explainer and on the metrics' scorer."""
import dataclasses
import inspect

import pytest
import torch
from test_contract import EXPLAINER_RECIPES, EXPLAINERS
from torch import nn

import xai_torch as xt
import xai_torch.metrics as xm
from xai_torch.modelio import repeat_rows, select_output

from conftest import SmallNet

H = W = 10


@dataclasses.dataclass(frozen=True)
class Output:
    """An output object as Hugging Face's: logits and another field."""

    logits: torch.Tensor
    hidden: torch.Tensor


class Wrapped(nn.Module):
    """SmallNet (layer names ``net.*`` as the contract's recipes use) returning its logits
    as ``kind`` says: the tensor, a dict, a frozen dataclass, or a tuple."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.kind = SmallNet(classes=5), kind

    def forward(self, x):
        z = self.net(x)
        if self.kind == "dict":
            return {"hidden": z * 0, "logits": z}
        if self.kind == "object":
            return Output(z, z * 0)
        if self.kind == "tuple":
            return (z * 0 + 1, z)  # the class scores are second: only select_output=1 finds them
        return z


def images(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, H, W, generator=torch.Generator().manual_seed(seed))


def run(name: str, model: nn.Module, x: torch.Tensor, target, **options):
    recipe = EXPLAINER_RECIPES[name]
    return recipe.build(model, x, **options).explain(x, target, **recipe.call(x))


@pytest.mark.parametrize("name", EXPLAINERS)
def test_every_explainer_reads_logits_of_a_dict_or_an_object_and_a_selected_tuple_item(name):
    x = images()
    plain = run(name, Wrapped("plain").eval(), x, [[1, 3], [0, 2]])
    for kind, options in (("dict", {}), ("object", {}), ("tuple", {"select_output": 1})):
        got = run(name, Wrapped(kind).eval(), x, [[1, 3], [0, 2]], **options)
        a, b = plain.attributions, got.attributions
        if isinstance(a, dict):
            a, b = a[next(iter(a))], b[next(iter(b))]
        torch.testing.assert_close(b, a, msg=f"{name} {kind}")
        torch.testing.assert_close(got.scores, plain.scores, msg=f"{name} {kind}")


def test_select_output_is_a_keyword_of_every_explainer_and_shown_by_repr():
    for name in EXPLAINERS:
        assert "select_output" in inspect.signature(getattr(xt, name)).parameters, name
    g = xt.Gradient(Wrapped("dict"), select_output="logits", abs=True)
    assert g.select_output == "logits" and g.abs and "select_output='logits'" in repr(g)
    assert xt.IntegratedGradients(Wrapped("dict"), steps=4).select_output is None


def test_select_output_by_key_attribute_position_and_callable():
    z = torch.arange(6.0).view(2, 3)
    assert select_output({"out": z}, "out") is z
    assert select_output(Output(z, z), "hidden") is z
    assert select_output((1, z), -1) is z
    assert select_output([z], lambda o: o[0]) is z
    with pytest.raises(xt.XaiError, match=r"keys \['out'\]"):
        select_output({"out": z}, "logits")
    with pytest.raises(xt.XaiError, match="no such attribute"):
        select_output(Output(z, z), "scores")
    with pytest.raises(xt.XaiError, match="position"):
        select_output((z,), 2)
    with pytest.raises(xt.XaiError, match="select_output must be"):
        xt.Gradient(Wrapped("plain"), select_output=1.5)
    with pytest.raises(xt.XaiError, match="give select_output= to it"):
        xt.SmoothGrad(xt.Gradient(Wrapped("dict")), select_output="logits")


def test_a_wrong_key_or_an_output_without_logits_says_select_output():
    x = images()
    with pytest.raises(xt.XaiError, match=r"keys \['hidden', 'logits'\]"):
        xt.Gradient(Wrapped("dict"), select_output="scores")(x)
    with pytest.raises(xt.XaiError, match="select_output="):
        xt.Gradient(Wrapped("tuple"))(x)


def test_repeat_rows_of_objects_keeps_the_type_and_repeats_tensor_fields():
    z = torch.arange(4.0).view(2, 2)
    rep = repeat_rows(Output(z, z + 1), 2)
    assert isinstance(rep, Output) and rep.logits.tolist() == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert rep.hidden.shape == (4, 2)


def test_metrics_score_the_logits_of_a_dict_output():
    x = images()
    a = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    expect = xm.deletion(Wrapped("plain").eval(), x, a, target=[1, 2], step=20)
    got = xm.deletion(Wrapped("dict").eval(), x, a, target=[1, 2], step=20)
    torch.testing.assert_close(got.curve, expect.curve)
    assert got.targets.tolist() == [1, 2]
