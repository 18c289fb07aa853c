"""xt.NeuronTarget: every explainer explains a neuron as it explains a model whose output is that
neuron; per-image and (B, K) neurons; errors; Captum's neuron methods (parity, and where Captum
misses functional ReLUs)."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xai_torch as xt

from conftest import Counting, assert_no_trace, snapshot, torchvision_model


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(5 * 8 * 8, 3)).double().eval()


def _x(b=2):
    return torch.randn(b, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _neuron(out):  # the neuron (3, 2, 6) of layer "2", as the output of the trunk
    return out[:, 3, 2, 6]


def _channel(out):  # channel 1 of layer "2": its spatial mean
    return out[:, 1].mean((1, 2))


def _quarters(x, image=None):  # four 4 x 4 segments per image
    r = torch.arange(x.shape[-1]) // 4
    return (r[:, None] * 2 + r[None]).expand(x.shape[0], -1, -1)


RECIPES = {
    "Gradient": lambda m: xt.Gradient(m),
    "InputXGradient": lambda m: xt.InputXGradient(m),
    "GuidedBackprop": lambda m: xt.GuidedBackprop(m),
    "Deconvnet": lambda m: xt.Deconvnet(m),
    "IntegratedGradients": lambda m: xt.IntegratedGradients(m, steps=5, batch_size=3),  # chunks split paths
    "ExpectedGradients": lambda m: xt.ExpectedGradients(m, _x(3) * 0.5, samples=4, seed=0, batch_size=3),
    "SmoothGrad": lambda m: xt.SmoothGrad(xt.Gradient(m, batch_size=3), samples=3, seed=0),
    "GradCAM": lambda m: xt.GradCAM(m, layer="0"),
    "ScoreCAM": lambda m: xt.ScoreCAM(m, layer="0"),
    "Occlusion": lambda m: xt.Occlusion(m, window=3, stride=2),
    "RISE": lambda m: xt.RISE(m, masks=8, cell=2, seed=0),
    "LIME": lambda m: xt.LIME(m, samples=12, segmenter=_quarters, seed=0),
    "KernelSHAP": lambda m: xt.KernelSHAP(m, samples=12, segmenter=_quarters, seed=0),
}


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("index, score", [((3, 2, 6), _neuron), (1, _channel)])
def test_neuron_equals_a_model_whose_output_is_the_neuron(name, index, score):
    model, x = _net(), _x()
    trunk = model[:3]  # the same modules up to the layer: a model that outputs the layer
    got = RECIPES[name](model)(x, target=xt.NeuronTarget("2", index))
    want = RECIPES[name](trunk)(x, target=score)
    torch.testing.assert_close(got, want)


def test_per_image_and_bk_neurons():
    model, x = _net(), _x()
    per_image = xt.Gradient(model).explain(x, target=xt.NeuronTarget("2", [(3, 2, 6), (0, 1, 1)]))
    assert per_image.targets is None and per_image.attributions.shape == x.shape
    for i, index in enumerate([(3, 2, 6), (0, 1, 1)]):
        one = xt.Gradient(model).explain(x[i:i + 1], target=xt.NeuronTarget("2", index))
        torch.testing.assert_close(per_image.attributions[i:i + 1], one.attributions)
        torch.testing.assert_close(per_image.scores[i:i + 1], one.scores)
    counted = Counting(model)
    bk = xt.NeuronTarget("model.2", [[(3, 2, 6), (4, 0, 0)], [(1, 1, 1), (0, 1, 1)]])
    res = xt.Gradient(counted).explain(x, target=bk)
    assert res.attributions.shape == (2, 2, 3, 8, 8) and res.scores.shape == (2, 2)
    assert sum(counted.sizes) == 4
    torch.testing.assert_close(res.attributions[1, 1], per_image.attributions[1])
    # forward-only with (B, K) channels: one forward per image serves its K neurons
    occ = xt.Occlusion(model, window=4)(x, target=xt.NeuronTarget("2", [[0, 1], [2, 3]]))
    assert occ.shape[:2] == (2, 2)
    torch.testing.assert_close(occ[0, 1], xt.Occlusion(model, window=4)(x[:1], target=xt.NeuronTarget("2", 1))[0])


def test_scores_are_the_neuron_values_and_no_trace():
    model, x = _net(), _x()
    before = snapshot(model, x)
    res = xt.Gradient(model).explain(x, target=xt.NeuronTarget(model[2], (3, 2, 6)))
    assert_no_trace(before, snapshot(model, x))
    torch.testing.assert_close(res.scores, model[:3](x)[:, 3, 2, 6].detach())
    # a callable index reduces the layer output
    res2 = xt.Gradient(model).explain(x, target=xt.NeuronTarget("2", lambda a: a[:, 3].amax((1, 2))))
    torch.testing.assert_close(res2.scores, model[:3](x)[:, 3].amax((1, 2)).detach())


def test_layer_attribution_of_a_neuron():
    # the neuron of layer "2" attributed to layer "0": conv2's weights of that neuron's window
    model, x = _net(), _x()
    res = xt.Gradient(model, layer="1")(x, target=xt.NeuronTarget("2", (3, 2, 6)))
    w = model[2].weight.detach()[3]  # (4, 3, 3)
    expect = torch.zeros(2, 4, 8, 8, dtype=x.dtype)
    expect[:, :, 1:4, 5:8] = w
    torch.testing.assert_close(res, expect)


def test_bad_neuron_targets():
    model, x = _net(), _x()
    with pytest.raises(xt.XaiError, match=r"out of range for layer '2', whose output has shape \(2, 5, 8, 8\)"):
        xt.Gradient(model)(x, target=xt.NeuronTarget("2", (5, 0, 0)))
    with pytest.raises(xt.XaiError, match=r"shape \(2, 5, 8, 8\)"):
        xt.Occlusion(model, window=4)(x, target=xt.NeuronTarget("2", 9))
    with pytest.raises(xt.XaiError, match="one index per dim"):
        xt.Gradient(model)(x, target=xt.NeuronTarget("2", (1, 2)))
    with pytest.raises(xt.XaiError, match="Closest names"):
        xt.Gradient(model)(x, target=xt.NeuronTarget("22", 0))
    with pytest.raises(xt.XaiError, match="3 per-image indices but x has 2"):
        xt.Gradient(model)(x, target=xt.NeuronTarget("2", [0, 1, 2]))
    with pytest.raises(xt.XaiError, match="index must be"):
        xt.NeuronTarget("2", 1.5)
    with pytest.raises(xt.XaiError, match="explainer call"):
        xt.NeuronTarget("2", 0)(model(x))
    with pytest.raises(xt.XaiError, match="must return"):
        xt.Gradient(model)(x, target=xt.NeuronTarget("2", lambda a: a.sum()))
    before = snapshot(model, x)
    with pytest.raises(xt.XaiError):
        xt.GuidedBackprop(model)(x, target=xt.NeuronTarget("2", (0, 9, 0)))
    assert_no_trace(before, snapshot(model, x))


# --- parity with Captum -------------------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("arch, layer", [("resnet18", "layer3"), ("densenet121", "features.denseblock3")])
@pytest.mark.parametrize("method", ["Gradient", "GuidedBackprop", "Deconvnet"])
def test_parity_captum_neuron_methods(method, arch, layer):
    from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop

    ref_cls = {"Gradient": NeuronGradient, "GuidedBackprop": NeuronGuidedBackprop,
               "Deconvnet": NeuronDeconvolution}[method]
    model = torchvision_model(arch)
    module = model.get_submodule(layer)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for index, selector in [((5, 1, 2), (5, 1, 2)), (7, lambda a: a[:, 7].mean((1, 2)))]:
        ours = getattr(xt, method)(model)(x, target=xt.NeuronTarget(layer, index))
        with pytest.warns(UserWarning):  # Captum: "Input Tensor 0 did not already require gradients"
            ref = ref_cls(model, module).attribute(x, selector)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


class _Guided(torch.autograd.Function):
    """The guided-backprop rule written out: R_in = 1[z > 0] * max(R_out, 0)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, r):
        (z,) = ctx.saved_tensors
        return (z > 0) * r.clamp_min(0)


class FunctionalReLUs(nn.Module):
    """ReLUs as function calls, as in torchvision's Inception v3: Captum's hooks miss them."""

    def __init__(self, guided=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 3, 3)
        self.relu = _Guided.apply if guided else F.relu

    def forward(self, x):
        return self.conv3(self.relu(self.conv2(self.relu(self.conv1(x))))).mean((2, 3))


@pytest.mark.parity
def test_captum_neuron_guided_backprop_misses_functional_relus():
    from captum.attr import NeuronGradient, NeuronGuidedBackprop

    model = FunctionalReLUs()
    reference = FunctionalReLUs(guided=True)  # same weights, the rule at every call
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    ours = xt.GuidedBackprop(model)(x, target=xt.NeuronTarget("conv3", (1, 2, 2)))
    xr = x.clone().requires_grad_(True)
    reference.conv3.register_forward_hook(lambda m, i, o: setattr(m, "kept", o))
    reference(xr)
    (want,) = torch.autograd.grad(reference.conv3.kept[:, 1, 2, 2].sum(), xr)
    torch.testing.assert_close(ours, want)
    with pytest.warns(UserWarning):
        captum = NeuronGuidedBackprop(model, model.conv3).attribute(x, (1, 2, 2))
        plain = NeuronGradient(model, model.conv3).attribute(x, (1, 2, 2))
    torch.testing.assert_close(captum, plain)  # Captum: no rule applied, the plain gradient
    assert not torch.allclose(captum, ours)


def test_neuron_at_the_attributed_layer_and_after_in_place_ops():
    model, x = _net(), _x()
    # the gradient of a neuron of layer "2" at layer "2" itself: one-hot; Grad-CAM there too
    onehot = torch.zeros(2, 5, 8, 8, dtype=x.dtype)
    onehot[:, 3, 2, 6] = 1
    torch.testing.assert_close(xt.Gradient(model, layer="2")(x, target=xt.NeuronTarget("2", (3, 2, 6))), onehot)
    cam = xt.GradCAM(model, layer="2", upsample=False)(x, target=xt.NeuronTarget("2", 3))
    torch.testing.assert_close(cam, torch.relu(model[:3](x)[:, 3:4]).detach() / 64)
    # ReLU(inplace=True) right after the layer: the neuron is read before it (negative values too)
    torch.manual_seed(0)
    inplace = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).double()
    res = xt.Gradient(inplace).explain(x, target=xt.NeuronTarget("0", [(0, 0, 1), (0, 0, 2)]))
    conv = inplace[0](x).detach()
    want = torch.stack([conv[0, 0, 0, 1], conv[1, 0, 0, 2]])
    assert bool((want < 0).all())
    torch.testing.assert_close(res.scores, want)


def test_closed_forms_of_neurons_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), fc1=nn.Linear(6, 5), fc2=nn.Linear(5, 3))).double()
    x = torch.randn(3, 1, 2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    w1 = model.fc1.weight.detach().reshape(5, 1, 2, 3)
    units = [(0,), (4,), (2,)]
    torch.testing.assert_close(xt.Gradient(model)(x, target=xt.NeuronTarget("fc1", units)), w1[[0, 4, 2]])
    ixg = xt.InputXGradient(model).explain(x, target=xt.NeuronTarget("fc1", (1,)))
    torch.testing.assert_close(ixg.attributions, x * w1[1])
    # the neuron minus its bias is linear in x: completeness of x * grad
    torch.testing.assert_close(ixg.attributions.sum((1, 2, 3)), ixg.scores - model.fc1.bias.detach()[1])
    # an int on a (B, D) layer is that unit (its mean over no further dims)
    torch.testing.assert_close(xt.Gradient(model)(x, target=xt.NeuronTarget("fc1", 3)), w1[3].expand(3, 1, 2, 3))
    ig = xt.IntegratedGradients(model, steps=3)(x, target=xt.NeuronTarget("fc1", (1,)), baseline=torch.zeros_like(x))
    torch.testing.assert_close(ig, x * w1[1])


class Tokens(nn.Module):
    """Each pixel a token: (B, 3, 4, 4) -> tokens (B, 16, 3) -> proj (B, 16, 8) -> mean -> head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj, self.head = nn.Linear(3, 8).double(), nn.Linear(8, 2).double()

    def forward(self, x):
        return self.head(self.proj(x.flatten(2).transpose(1, 2)).mean(1))


def test_token_neurons_and_token_layers():
    model = Tokens()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = xt.Gradient(model)(x, target=xt.NeuronTarget("proj", (5, 2)))  # token 5 = pixel (1, 1), feature 2
    want = torch.zeros_like(x)
    want[:, :, 1, 1] = model.proj.weight.detach()[2]
    torch.testing.assert_close(got, want)
    layer = xt.Gradient(model, layer="proj")(x, target=1)  # token-shaped: (B, tokens, features)
    torch.testing.assert_close(layer, (model.head.weight.detach()[1] / 16).expand(2, 16, 8))
