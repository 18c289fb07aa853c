"""Fragility (Ghorbani et al. 2019): the class-preserving attack stays in its budget, beats its
random-noise control, reports what the real explainer gives on the attacked images, counts its
model calls; the gradient-free search for the others; bad input."""
import pytest
import torch

import xai_torch as xt
from xai_torch.metrics.fragility import fragility
from xai_torch.metrics.fragility_maps import softplus_copy, stand_in, top_mask

from conftest import SmallNet, assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

EPS, STEPS, K = 0.05, 4, 10


@pytest.fixture
def net_x():
    torch.manual_seed(0)
    return SmallNet().eval(), torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(1))


def test_gradient_attack_keeps_the_class_beats_the_control_and_reports_the_real_maps(net_x):
    net, x = net_x
    before = snapshot(net, x)
    r = fragility(net, xt.Gradient(net), x, epsilon=EPS, steps=STEPS, k=K, keep_images=True)
    assert_no_trace(before, snapshot(net, x))
    assert r.method_used == "gradient" and r.k == K and r.class_kept.all()
    assert (r.linf <= EPS + 1e-6).all() and (r.linf > 0).all()
    assert (r.topk_intersection <= r.control_topk_intersection).all()
    assert r.topk_intersection.mean() < r.control_topk_intersection.mean() < 1.0
    # closed-form call count: clean forward, original map, control (check + map), per step (softplus
    # twin + class check + map), final check; one forward per image for each
    assert r.model_calls == 2 * (1 + 1 + 2 + 3 * STEPS + 1)
    # the reported figures are the real explainer's on the real model at the attacked images
    ref, adv = (xt.Gradient(net)(z).abs().sum(1).double() for z in (x, r.adversarial))
    inter = (top_mask(ref, K) & top_mask(adv, K)).sum(1).double() / K
    torch.testing.assert_close(r.topk_intersection, inter)
    torch.testing.assert_close(r.spearman, xt.metrics.spearman(adv, ref))
    assert torch.equal(net(r.adversarial).argmax(1), net(x).argmax(1))
    again = fragility(net, xt.Gradient(net), x, epsilon=EPS, steps=STEPS, k=K, keep_images=True)
    assert torch.equal(again.adversarial, r.adversarial)   # seeded: the same bits
    center = fragility(net, xt.InputXGradient(net), x, epsilon=EPS, steps=2, objective="mass_center")
    assert (center.mass_center_shift >= center.control_mass_center_shift).all() and center.class_kept.all()
    assert center.k == 10   # default: 10 % of the 100 pixels


def test_the_stand_in_needs_the_softplus_copy(net_x):
    """A ReLU network's gradient map has zero input-gradient (Ghorbani, section 3); the softplus
    copy's does not."""
    net, x = net_x
    classes = net(x).argmax(1)
    grads = []
    for model in (net, softplus_copy(net, 10.0)):
        z = x.clone().requires_grad_(True)
        m = stand_in(xt.Gradient(model), model, 0)(z, classes, 0)
        (g,) = torch.autograd.grad(m.abs().sum(), z)
        grads.append(g.abs().max())
    assert grads[0] < 1e-6 < grads[1]


def test_the_stand_ins_equal_the_explainers_on_the_model(net_x):
    """IG (its own rule, zero baseline) and SmoothGrad without noise: the differentiable maps the
    attack follows are the explainers' maps."""
    net, x = net_x
    classes = net(x).argmax(1)
    ig = xt.IntegratedGradients(net, steps=6)
    got = stand_in(ig, net, 0)(x.clone().requires_grad_(True), classes, 0)
    torch.testing.assert_close(got.detach(), ig(x, target=classes, baseline=0.0), rtol=1e-4, atol=1e-6)
    sg = xt.SmoothGrad(xt.InputXGradient(net), samples=2, noise=0.0, seed=0)
    got = stand_in(sg, net, 0)(x.clone().requires_grad_(True), classes, 0)
    torch.testing.assert_close(got.detach(), xt.InputXGradient(net)(x, target=classes), rtol=1e-5, atol=1e-7)


def test_search_for_a_non_differentiable_explainer(net_x):
    net, x = net_x
    occlusion = xt.Occlusion(net, window=3)
    r = fragility(net, occlusion, x, epsilon=EPS, steps=3, k=K, objective="spearman", clip=(0.0, 1.0),
                  keep_images=True)
    assert r.method_used == "search" and r.class_kept.all() and (r.linf <= EPS + 1e-6).all()
    assert (r.spearman <= r.control_spearman).all()
    assert r.adversarial.min() >= 0 and r.adversarial.max() <= 1
    with pytest.raises(xt.XaiError, match="method='search'"):
        fragility(net, occlusion, x, method="gradient")


@pytest.mark.parametrize("kwargs, words", [
    ({"epsilon": 0.0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"), ({"steps": 0}, "steps"),
    ({"k": 101}, "k must be"), ({"k": 0}, "k must be"), ({"objective": "nope"}, "objective"),
    ({"method": "nope"}, "method"), ({"step_size": 0.0}, "step_size"), ({"clip": (1.0, 0.0)}, "clip"),
])
def test_bad_input(net_x, kwargs, words):
    net, x = net_x
    with pytest.raises(xt.XaiError, match=words):
        fragility(net, xt.Gradient(net), x, **kwargs)
