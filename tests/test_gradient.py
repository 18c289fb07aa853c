"""Gradient and InputXGradient: closed forms, invariants, parity with Captum."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import torchvision_model


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4))


def test_linear_model_closed_form():
    model = linear_model()
    x = torch.randn(3, 2, 3, 3)
    w = model[1].weight.detach()
    target = [0, 3, 1]
    expect = w[target].reshape(3, 2, 3, 3)
    torch.testing.assert_close(xt.Gradient(model)(x, target=target), expect)
    torch.testing.assert_close(xt.Gradient(model, abs=True)(x, target=target), expect.abs())
    torch.testing.assert_close(xt.InputXGradient(model)(x, target=target), x * expect)


def test_input_x_gradient_completeness_on_bias_free_relu_net():
    # f is positively homogeneous of degree 1, so sum(x * df/dx) = f(x) (Euler)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False),
                          nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8 * 4 * 4, 5, bias=False)).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    res = xt.InputXGradient(model).explain(x)
    torch.testing.assert_close(res.attributions.sum((1, 2, 3)), res.scores)
    # guided backprop of the same net differs from the gradient but keeps the shape
    assert xt.GuidedBackprop(model)(x).shape == x.shape


def test_gradient_of_quadratic():
    class Quadratic(nn.Module):
        def forward(self, x):
            return torch.stack([(x**2).flatten(1).sum(1), (3 * x).flatten(1).sum(1)], 1)

    x = torch.randn(2, 1, 2, 2)
    torch.testing.assert_close(xt.Gradient(Quadratic())(x, target=0), 2 * x)
    torch.testing.assert_close(xt.Gradient(Quadratic())(x, target=1), torch.full_like(x, 3.0))


def test_packaged_model_gradient(lite0, chelsea):
    res = xt.Gradient(lite0).explain(chelsea)
    assert xt.zoo.label(int(res.targets)) == "tiger cat"
    xg = chelsea.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(lite0(xg)[0, 282], xg)
    torch.testing.assert_close(res.attributions, g)


# --- parity with Captum (where Captum is right) --------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("name", ["resnet18", "vgg11"])
def test_parity_with_captum(name):
    from captum.attr import Deconvolution, GuidedBackprop, InputXGradient, Saliency

    model = torchvision_model(name)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 5, 9])
    pairs = [
        (xt.Gradient(model), lambda: Saliency(model).attribute(x, target=target, abs=False)),
        (xt.Gradient(model, abs=True), lambda: Saliency(model).attribute(x, target=target)),
        (xt.InputXGradient(model), lambda: InputXGradient(model).attribute(x, target=target)),
        (xt.GuidedBackprop(model), lambda: GuidedBackprop(model).attribute(x, target=target)),
        (xt.Deconvnet(model), lambda: Deconvolution(model).attribute(x, target=target)),
    ]
    for ours, theirs in pairs:
        expect = theirs()
        got = ours(x, target=target)
        torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-6 * float(expect.abs().max()))


@pytest.mark.parity
def test_captum_guided_backprop_misses_functional_relus():
    """ALGORITHMS.md §5: Captum hooks nn.ReLU modules only, so on Inception v3 (94 functional
    ReLUs) its GuidedBackprop is the plain gradient. Ours applies the rule."""
    from captum.attr import GuidedBackprop

    model = torchvision_model("inception_v3")
    x = torch.randn(1, 3, 80, 80, generator=torch.Generator().manual_seed(4))
    theirs = GuidedBackprop(model).attribute(x, target=3)
    plain = xt.Gradient(model)(x, target=3)
    # the gradient reaches 75 here and two identical CPU backward passes differ by ~1e-6 of that
    # (oneDNN's convolution backward splits its sums by thread): compare relative to the largest value
    torch.testing.assert_close(theirs, plain, rtol=0, atol=1e-5 * float(plain.abs().max()))
    ours = xt.GuidedBackprop(model).explain(x, target=3)
    assert ours.rectifier_calls == 94
    assert (ours.attributions - plain).abs().max() > 0.1 * plain.abs().max()
