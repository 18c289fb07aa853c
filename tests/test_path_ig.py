"""Integrated Gradients (xai_torch/path/ig.py): closed forms, the rich result (delta, path curve,
pinned targets, K targets x J baselines), parity with Captum."""
import math

import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import torchvision_model

RULES = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre"]


class PairFunction(nn.Module):
    """PAIR's IG test function on the three channels of a 1x1 image: [5x, y^2, sin z]."""

    def forward(self, v):
        x, y, z = v[:, 0, 0, 0], v[:, 1, 0, 0], v[:, 2, 0, 0]
        return torch.stack([5 * x + y**2 + torch.sin(z), 5 * x, y**2], 1)


def test_ig_closed_form_pair_function():
    v = torch.tensor([[0.5, 0.8, 1.3]], dtype=torch.float64).view(1, 3, 1, 1)
    res = xt.IntegratedGradients(PairFunction(), steps=20).explain(v, target=0, baseline=0.0)
    expect = torch.tensor([2.5, 0.64, math.sin(1.3)], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(res.attributions, expect, rtol=1e-12, atol=1e-12)
    assert abs(float(res.delta)) < 1e-12


def test_ig_closed_form_linear_model_every_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).double()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    w = model[1].weight.detach()[[0, 3, 1]].view(3, 2, 3, 3)
    for rule in RULES:
        attr = xt.IntegratedGradients(model, steps=5, method=rule)(x, target=[0, 3, 1], baseline=b)
        torch.testing.assert_close(attr, (x - b) * w, rtol=1e-12, atol=1e-12)
    captum = xt.IntegratedGradients(model, steps=5, method="captum_trapezoid")(x, target=[0, 3, 1], baseline=b)
    torch.testing.assert_close(captum, 0.8 * (x - b) * w, rtol=1e-12, atol=1e-12)


def test_ig_closed_form_quadratic():
    class Quadratic(nn.Module):
        def forward(self, x):
            c = torch.arange(1, x[0].numel() + 1, dtype=x.dtype).view(1, *x.shape[1:])
            return (c * x**2).flatten(1).sum(1, keepdim=True)

    x = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    b = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    c = torch.arange(1, 5, dtype=torch.float64).view(1, 1, 2, 2)
    for rule in ("riemann_middle", "riemann_trapezoid", "gauss_legendre"):  # the integrand is linear
        attr = xt.IntegratedGradients(Quadratic(), steps=3, method=rule)(x, target=0, baseline=b)
        tol = 1e-12 if rule == "gauss_legendre" else 1e-6  # Riemann nodes are float32-rounded (Captum's)
        torch.testing.assert_close(attr, c * (x**2 - b**2), rtol=tol, atol=tol)


def test_ig_of_input_equal_to_baseline_is_zero(small, small_x):
    res = xt.IntegratedGradients(small, steps=8).explain(small_x, baseline=small_x)
    assert bool((res.attributions == 0).all())
    torch.testing.assert_close(res.delta, torch.zeros(3))


def test_delta_is_the_definition(small, small_x):
    res = xt.IntegratedGradients(small, steps=16, input_range=(-3, 3)).explain(small_x, target=[0, 1, 2],
                                                                                baseline="white")
    with torch.no_grad():
        fx = small(small_x)[torch.arange(3), [0, 1, 2]]
        fb = small(torch.full_like(small_x, 3.0))[torch.arange(3), [0, 1, 2]]
    torch.testing.assert_close(res.scores, fx)
    torch.testing.assert_close(res.baseline_scores[:, 0], fb)
    expect = res.attributions.double().sum((1, 2, 3)) - (fx - fb).double()
    torch.testing.assert_close(res.delta.double(), expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.relative_delta, (res.delta.abs() / (fx - fb).abs()), rtol=1e-5, atol=1e-7)


def test_path_curve_from_the_same_pass(small, small_x):
    ig = xt.IntegratedGradients(small, steps=6, method="riemann_trapezoid", batch_size=4)
    res = ig.explain(small_x, target=1, baseline="black")
    assert res.path_scores.shape == res.path_probs.shape == res.path_grad.shape == (3, 1, 6)
    assert res.model_calls == 3 + 3 + 18  # clean scores, baseline scores, the path itself
    b = ig.baselines(small_x)[0]
    z = b + 0.4 * (small_x - b)  # alpha = 2/5
    with torch.no_grad():
        out = small(z)
    torch.testing.assert_close(res.path_scores[:, 0, 2], out[:, 1])
    torch.testing.assert_close(res.path_probs[:, 0, 2], out.softmax(1)[:, 1])
    torch.testing.assert_close(res.path_scores[:, 0, -1], res.scores)  # alpha = 1 is x itself
    torch.testing.assert_close(res.path_scores[:, 0, 0], res.baseline_scores[:, 0])
    xg = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(small(xg)[:, 1].sum(), xg)
    torch.testing.assert_close(res.path_grad[:, 0, 2], g.abs().flatten(1).mean(1))


def test_argmax_target_is_pinned_on_the_clean_image(small, small_x):
    with torch.no_grad():
        classes = small(small_x).argmax(1)
    res = xt.IntegratedGradients(small, steps=8).explain(small_x)
    torch.testing.assert_close(res.targets, classes)
    torch.testing.assert_close(res.attributions, xt.IntegratedGradients(small, steps=8)(small_x, target=classes))


def test_multi_target_and_multi_baseline_batched(small, small_x):
    ig = xt.IntegratedGradients(small, steps=8, input_range=(-2, 2), batch_size=7)
    tk = torch.tensor([[0, 1], [2, 3], [4, 0]])
    res = ig.explain(small_x, target=tk, baseline=["black", "white"])
    assert res.attributions.shape == (3, 2, 3, 12, 12) and res.baseline_scores.shape == (3, 2, 2)
    for col in range(2):
        per = [ig(small_x, target=tk[:, col], baseline=b) for b in ("black", "white")]
        torch.testing.assert_close(res.attributions[:, col], (per[0] + per[1]) / 2, rtol=1e-5, atol=1e-6)


def test_callable_target_and_unbatched_input(small, small_x):
    res = xt.IntegratedGradients(small, steps=8).explain(small_x[0], target=lambda out: out[:, 2] - out[:, 0])
    assert res.attributions.shape == (1, 3, 12, 12) and res.targets is None and res.path_probs is None
    assert abs(float(res.delta)) < 0.05 * float((res.scores - res.baseline_scores[:, 0]).abs()) + 1e-3


@pytest.mark.parity
def test_completeness_at_least_as_good_as_captum_on_lite0(lite0, chelsea):
    from captum.attr import IntegratedGradients as CaptumIG

    black = torch.full_like(chelsea, -127 / 128)
    ours = xt.IntegratedGradients(lite0, steps=64, normalize=xt.zoo.NORMALIZE, batch_size=32).explain(chelsea)
    _, theirs = CaptumIG(lite0).attribute(chelsea, black, target=282, n_steps=64, internal_batch_size=32,
                                          return_convergence_delta=True)
    assert int(ours.targets) == 282
    assert abs(float(ours.delta)) <= abs(float(theirs)) * 1.001 + 1e-6
    with torch.no_grad():
        fx, fb = lite0(chelsea)[0, 282], lite0(black)[0, 282]
    assert float(ours.delta) == pytest.approx(float(ours.attributions.double().sum() - (fx - fb)), abs=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("ours,theirs", [("gauss_legendre", "gausslegendre"), ("riemann_left", "riemann_left"),
                                         ("riemann_right", "riemann_right"), ("riemann_middle", "riemann_middle"),
                                         ("captum_trapezoid", "riemann_trapezoid")])
def test_ig_parity_with_captum(ours, theirs):
    from captum.attr import IntegratedGradients as CaptumIG

    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    b = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6)) * 0.1
    res = xt.IntegratedGradients(model, steps=24, method=ours, batch_size=20).explain(x, target=[3, 7], baseline=b)
    attr, delta = CaptumIG(model).attribute(x, b, target=[3, 7], n_steps=24, method=theirs, internal_batch_size=20,
                                            return_convergence_delta=True)
    scale = attr.abs().max()
    assert float((res.attributions - attr).abs().max() / scale) < 1e-4
    torch.testing.assert_close(res.delta, delta, rtol=1e-3, atol=1e-4 * float(attr.abs().sum()))
