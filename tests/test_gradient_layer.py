"""layer= on the input-gradient explainers: closed forms, shapes, one backward, errors, Captum parity."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import Counting, assert_no_trace, snapshot, torchvision_model


class TwoLinear(nn.Module):
    """F(x) = W2 (W1 vec(x) + b1) + b2 in float64: every layer gradient has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(6, 5).double()
        self.fc2 = nn.Linear(5, 3).double()
        self.unused = nn.Linear(6, 6).double()

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)))


def _x(b=3):
    return torch.randn(b, 1, 2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def test_closed_forms_on_a_linear_model():
    model, x = TwoLinear(), _x()
    w1, w2 = model.fc1.weight.detach(), model.fc2.weight.detach()
    target = [0, 2, 1]
    a1 = model.fc1(x.flatten(1)).detach()
    torch.testing.assert_close(xt.Gradient(model, layer="fc1")(x, target=target), w2[target])
    # the input of fc2 is the output of fc1; the input of fc1 is vec(x)
    torch.testing.assert_close(xt.Gradient(model, layer="fc2", layer_input=True)(x, target=target), w2[target])
    torch.testing.assert_close(xt.Gradient(model, layer=model.fc1, layer_input=True)(x, target=target),
                               w2[target] @ w1)
    torch.testing.assert_close(xt.InputXGradient(model, layer="fc1")(x, target=target), a1 * w2[target])
    torch.testing.assert_close(xt.Gradient(model, layer="fc2")(x, target=target), torch.eye(3, dtype=x.dtype)[target])
    # activation x gradient at the logits' layer sums to the logit minus nothing: F itself
    res = xt.InputXGradient(model, layer="fc2").explain(x, target=target)
    torch.testing.assert_close(res.attributions.sum(1), res.scores)


def test_bk_targets_and_a_list_of_layers_in_one_backward():
    model, x = TwoLinear(), _x(2)
    w2 = model.fc2.weight.detach()
    counted = Counting(model)
    t = torch.tensor([[0, 1], [2, 0]])
    res = xt.Gradient(counted, layer=["model.fc1", "model.fc2"]).explain(x, target=t)
    assert isinstance(res.attributions, dict) and list(res.attributions) == ["model.fc1", "model.fc2"]
    assert res.attributions["model.fc1"].shape == (2, 2, 5)
    torch.testing.assert_close(res.attributions["model.fc1"], w2[t])
    torch.testing.assert_close(res.attributions["model.fc2"], torch.eye(3, dtype=x.dtype)[t])
    assert sum(counted.sizes) == 4  # B x K samples, one forward (and one backward) each
    assert res.scores.shape == (2, 2) and res.targets.tolist() == t.tolist()


def test_guided_backprop_and_deconvnet_at_a_layer_apply_the_rule_above_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 3)).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    # above layer "2" the only rectifier is "3": guided = 1[z > 0] * max(R, 0) there
    z = model[:3](x).detach()
    w = model[5].weight.detach()[1].reshape(4, 2, 2)
    torch.testing.assert_close(xt.GuidedBackprop(model, layer="2")(x, target=1), (z > 0) * w.clamp_min(0))
    torch.testing.assert_close(xt.Deconvnet(model, layer="2")(x, target=1), w.clamp_min(0).expand(2, 4, 2, 2))
    torch.testing.assert_close(xt.Gradient(model, layer="2")(x, target=1), (z > 0) * w)


def test_smoothgrad_passes_layer_attributions_through():
    model, x = TwoLinear(), _x(2)
    w2 = model.fc2.weight.detach()
    sg = xt.SmoothGrad(xt.Gradient(model, layer="fc1"), samples=3, seed=0)
    torch.testing.assert_close(sg(x, target=[1, 2]), w2[[1, 2]])


def test_no_trace_and_repr(small, small_x):
    before = snapshot(small, small_x)
    xt.InputXGradient(small, layer=["conv1", "conv2"], layer_input=True)(small_x, target=[0, 1, 2])
    assert_no_trace(before, snapshot(small, small_x))
    assert "layer='conv2'" in repr(xt.Gradient(small, layer="conv2"))


def test_bad_layers():
    model, x = TwoLinear(), _x(2)
    with pytest.raises(xt.XaiError, match="Closest names: 'fc2', 'fc1'"):
        xt.Gradient(model, layer="fc")
    with pytest.raises(xt.XaiError, match="'unused' was not called"):
        xt.Gradient(model, layer="unused")(x)
    with pytest.raises(xt.XaiError, match="needs an nn.Module"):
        xt.Gradient(lambda z: z.flatten(1), layer="fc1")
    with pytest.raises(xt.XaiError, match="layer_input must be True or False"):
        xt.Gradient(model, layer="fc1", layer_input=1)

    class Side(nn.Module):  # fc1 runs, but the output does not depend on it
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(6, 3)

        def forward(self, x):
            self.fc1(x.flatten(1))
            return self.fc2(x.flatten(1))

    with pytest.raises(xt.XaiError, match="does not depend on 'fc1'"):
        xt.Gradient(Side(), layer="fc1")(x.float())


def test_reused_layer_needs_call(small, small_x):
    with pytest.raises(xt.XaiError, match="runs 2 times"):
        xt.Gradient(small, layer="relu")(small_x)
    first = xt.Gradient(small, layer="relu", call=0)(small_x)
    assert first.shape == (3, 6, 12, 12)


# --- parity with Captum -------------------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("arch, layer", [("resnet18", "layer3"), ("densenet121", "features.denseblock3")])
@pytest.mark.parametrize("layer_input", [False, True])
def test_parity_layer_gradient_x_activation(layer_input, arch, layer):
    from captum.attr import LayerGradientXActivation

    model = torchvision_model(arch)
    module = model.get_submodule(layer)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ours = xt.InputXGradient(model, layer=layer, layer_input=layer_input)(x, target=[3, 5])
    ref = LayerGradientXActivation(model, module).attribute(x, target=[3, 5], attribute_to_layer_input=layer_input)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.detach().abs().max()))
    # without the activation factor: Captum's LayerGradientXActivation(multiply_by_inputs=False)
    grads = LayerGradientXActivation(model, module, multiply_by_inputs=False).attribute(
        x, target=[3, 5], attribute_to_layer_input=layer_input)
    ours = xt.Gradient(model, layer=layer, layer_input=layer_input)(x, target=[3, 5])
    torch.testing.assert_close(ours, grads, rtol=1e-4, atol=1e-4 * float(grads.detach().abs().max()))


def test_smoothgrad_over_a_list_of_layers():
    model, x = TwoLinear(), _x(2)
    w2 = model.fc2.weight.detach()
    t = torch.tensor([[0, 1], [2, 0]])
    inner = xt.InputXGradient(model, layer=["fc1", "fc2"])
    sg = xt.SmoothGrad(inner, samples=3, noise=0.0, seed=0)
    res = sg(x, target=t)
    assert list(res) == ["fc1", "fc2"]
    want = inner(x, target=t)
    torch.testing.assert_close(res["fc1"], want["fc1"])
    torch.testing.assert_close(res["fc2"], want["fc2"])
    assert res["fc1"].shape == (2, 2, 5)
    sq = xt.SmoothGrad(xt.Gradient(model, layer=["fc1"]), samples=2, variant="square")(x, target=[0, 1])
    torch.testing.assert_close(sq["fc1"], w2[[0, 1]] ** 2)
    # a seeded wrapped explainer is called once per copy (SmoothGrad's other reduction path)
    seeded = xt.Gradient(model, layer=["fc1", "fc2"])
    seeded.seed = 0
    per_copy = xt.SmoothGrad(seeded, samples=3, variant="var", seed=1)(x, target=t)
    torch.testing.assert_close(per_copy["fc1"], torch.zeros(2, 2, 5, dtype=x.dtype))
