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

from conftest import Counting, SmallNet

H = W = 10


pytestmark = pytest.mark.usefixtures("one_thread")


@dataclasses.dataclass(frozen=True)
class Output:
    """An output object as Hugging Face's: logits and another field."""

    logits: torch.Tensor
    hidden: torch.Tensor


class Wrapped(nn.Module):
    """SmallNet (layer names ``net.*`` as the contract's recipes use) returning its logits
    as ``kind`` says: the tensor, a dict, a frozen dataclass, or a tuple."""

    def __init__(self, kind: str, net=SmallNet) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.kind = net(classes=5), kind

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


def run(name: str, kind: str, x: torch.Tensor, target, **options):
    """Explainer ``name`` built by the contract's recipe on the recipe's net (SmallNet; a
    transformer for the attention methods) returning its logits as ``kind`` says."""
    recipe = EXPLAINER_RECIPES[name]
    model = Wrapped(kind, getattr(recipe, "net", SmallNet)).eval()
    return recipe.build(model, x, **options).explain(x, target, **recipe.call(x))


def first_map(res):
    """The attributions (the first layer's, for a dict of layers)."""
    a = res.attributions
    return a[next(iter(a))] if isinstance(a, dict) else a


@pytest.mark.parametrize("name", EXPLAINERS)
def test_every_explainer_reads_the_logits_of_a_dict_output_and_resolves_topk(name):
    """A dict output with ``logits`` and ``xt.TopK(2)`` give the plain model's results for the
    explicit top-2 classes (one test for both: each explainer runs twice)."""
    x = images()
    top = Wrapped("plain", getattr(EXPLAINER_RECIPES[name], "net", SmallNet))(x).topk(2, dim=1).indices
    expect = run(name, "plain", x, top)
    got = run(name, "dict", x, xt.TopK(2))
    torch.testing.assert_close(first_map(got), first_map(expect))
    torch.testing.assert_close(got.scores, expect.scores)
    if expect.targets is not None:
        assert got.targets.tolist() == top.tolist()


@pytest.mark.parametrize("name", ["Gradient", "IntegratedGradients", "GradCAM", "Occlusion", "RISE", "SmoothGrad"])
def test_an_object_with_logits_and_a_selected_tuple_item(name):
    x = images()
    expect = run(name, "plain", x, [1, 3])
    for kind, options in (("object", {}), ("tuple", {"select_output": 1})):
        got = run(name, kind, x, [1, 3], **options)
        torch.testing.assert_close(first_map(got), first_map(expect), msg=f"{name} {kind}")


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


# -- xt.TopK ----------------------------------------------------------------------------------
def test_topk_costs_one_forward_per_image_and_scores_as_asked():
    x = images(3)
    model = Counting(Wrapped("plain")).eval()
    res = xt.Gradient(model).explain(x, xt.TopK(2))
    assert model.sizes == [3, 6] and res.attributions.shape == (3, 2, 3, H, W)  # resolve, then 3 x 2 rows
    top = model(x).topk(2, dim=1).indices
    soft = xt.Gradient(model).explain(x, xt.TopK(2, score="softmax"))
    torch.testing.assert_close(soft.scores, model(x).softmax(1).gather(1, top))
    assert repr(xt.TopK(2, score="softmax")) == "TopK(2, score='softmax')"


def test_topk_bad_input():
    x = images()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(xt.XaiError, match="k >= 1"):
            xt.TopK(bad)
    with pytest.raises(xt.XaiError, match="score must be"):
        xt.TopK(2, score="probit")
    with pytest.raises(xt.XaiError, match="more classes than the model's 5"):
        xt.Gradient(Wrapped("plain").eval())(x, xt.TopK(6))
    with pytest.raises(xt.XaiError, match="one target per image"):
        xm.deletion(Wrapped("plain").eval(), x, torch.rand(2, 3, H, W), target=xt.TopK(1), step=20)
