"""Tuple inputs (issue 18.4), continued: ``x = (image, metadata)`` for DeepLift and DeepLiftShap
(a baseline / background per member, ``delta`` per image); parity with Captum on a two-input
model whose nonlinearities are modules used once (where Captum's DeepLift is right); bad input
names the member."""
import warnings

import pytest
import torch
from torch import nn

import xai_torch as xt

D = torch.float64


class ImageAndMeta(nn.Module):
    """``model(image, meta)``: conv -> ReLU -> mean, joined with the metadata -> linear -> tanh
    -> linear (each nonlinearity a module called once)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
        self.fc1, self.tanh, self.fc2 = nn.Linear(4 + 3, 6), nn.Tanh(), nn.Linear(6, 5)
        self.double().eval()

    def forward(self, image, meta):
        h = self.relu(self.conv(image)).mean((2, 3))
        return self.fc2(self.tanh(self.fc1(torch.cat([h, meta], 1))))


def data(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 6, 6, generator=g, dtype=D), torch.randn(b, 3, generator=g, dtype=D)


def captum(cls, model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model).attribute(**kwargs)


@pytest.mark.parity
def test_deeplift_tuples_equal_captum_with_a_baseline_per_member_and_delta_per_image():
    from captum.attr import DeepLift as CaptumDeepLift

    model, (img, meta) = ImageAndMeta(), data()
    b_img, b_meta = data(seed=1)
    res = xt.DeepLift(model).explain((img, meta), target=[0, 2, 4], baseline=(b_img, b_meta))
    ref = captum(CaptumDeepLift, model, inputs=(img, meta), baselines=(b_img, b_meta), target=[0, 2, 4])
    assert isinstance(res.attributions, tuple) and len(res.attributions) == 2
    for ours, theirs in zip(res.attributions, ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)
    with torch.no_grad():  # summation-to-delta across both members, per image
        gap = (model(img, meta) - model(b_img, b_meta)).gather(1, torch.tensor([[0], [2], [4]]))[:, 0]
    total = res.attributions[0].flatten(1).sum(1) + res.attributions[1].sum(1)
    torch.testing.assert_close(total, gap, rtol=1e-9, atol=1e-10)
    assert res.delta.shape == (3,) and res.delta.abs().max() < 1e-10
    zero = xt.DeepLift(model)((img, meta), target=1)  # default: zeros per member, as Captum
    ref0 = captum(CaptumDeepLift, model, inputs=(img, meta), target=1)
    for ours, theirs in zip(zero, ref0):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)
    assert not model._forward_pre_hooks and not model._forward_hooks  # the unpacking hook is gone


@pytest.mark.parity
def test_deepliftshap_tuple_background_equals_captum():
    from captum.attr import DeepLiftShap as CaptumDeepLiftShap

    model, (img, meta) = ImageAndMeta(), data()
    bg = data(b=4, seed=2)
    res = xt.DeepLiftShap(model, bg).explain((img, meta), target=[1, 3, 0])
    ref = captum(CaptumDeepLiftShap, model, inputs=(img, meta), baselines=bg, target=[1, 3, 0])
    for ours, theirs in zip(res.attributions, ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-10)
    assert res.baseline_scores.shape == (3, 4) and res.delta.abs().max() < 1e-10


def test_bad_tuples_name_the_member():
    model, (img, meta) = ImageAndMeta(), data()
    with pytest.raises(xt.XaiError, match="batch sizes"):
        xt.DeepLift(model)((img, meta[:2]), target=0)
    with pytest.raises(xt.XaiError, match="baseline member 1"):
        xt.DeepLift(model)((img, meta), target=0, baseline=(0.0, torch.zeros(5)))
    bg_img, bg_meta = data(b=4, seed=2)
    with pytest.raises(xt.XaiError, match="same N rows"):
        xt.DeepLiftShap(model, (bg_img, bg_meta[:3]))
    with pytest.raises(xt.XaiError, match="background member 1"):
        xt.DeepLiftShap(model, (bg_img, torch.zeros(4, 2, dtype=D)))((img, meta), target=0)
    with pytest.raises(xt.XaiError, match="background is one tensor"):
        xt.DeepLiftShap(model, bg_img)((img, meta), target=0)
    with pytest.raises(xt.XaiError, match="x is one tensor"):
        xt.DeepLiftShap(model, (bg_img, bg_meta))(img, target=0)
    with pytest.raises(xt.XaiError, match="layer="):
        xt.DeepLift(model, layer="conv")((img, meta), target=0)


def test_expected_gradients_tuples_replay_their_draws_member_by_member():
    from xai_torch.path.expected import _STREAM, _draw
    from xai_torch.seeding import derive_seed, make_generator

    model, (img, meta) = ImageAndMeta(), data()
    bg = data(b=5, seed=2)
    res = xt.ExpectedGradients(model, bg, samples=4, seed=7).explain((img, meta), target=[0, 2, 4])
    assert isinstance(res.attributions, tuple) and res.attributions[1].shape == meta.shape
    for i, c in enumerate([0, 2, 4]):  # the same draws, each member by hand with autograd
        refs, alphas = _draw(5, 4, 1, make_generator(derive_seed(7, _STREAM, i), torch.device("cpu")),
                             torch.device("cpu"))
        b = [m[refs[0]] for m in bg]
        a = alphas[0].view(-1, 1)
        z = [(bm + a.view(-1, *[1] * (bm.ndim - 1)) * (xm[i:i + 1] - bm)).requires_grad_() for bm, xm in
             zip(b, (img, meta))]
        grads = torch.autograd.grad(model(*z)[:, c].sum(), z)
        for ours, xm, bm, g in zip(res.attributions, (img, meta), b, grads):
            torch.testing.assert_close(ours[i], ((xm[i:i + 1] - bm) * g).mean(0), rtol=1e-9, atol=1e-11)


class Linear2(nn.Module):
    """``model(image, meta) = w . image + v . meta``: every path has the gradient ``(w, v)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.w, self.v = nn.Linear(3 * 6 * 6, 5), nn.Linear(3, 5)
        self.double().eval()

    def forward(self, image, meta):
        return self.w(image.flatten(1)) + self.v(meta)


@pytest.mark.parity
def test_expected_gradients_tuples_closed_form_and_captum_gradient_shap():
    from captum.attr import GradientShap

    model, (img, meta) = Linear2(), data()
    bg = data(b=4, seed=3)
    # samples = N draws every reference once: EG = (x - mean(background)) * (w, v) per member, exactly
    eg = xt.ExpectedGradients(model, bg, samples=4, seed=0)((img, meta), target=3)
    for ours, xm, bm, w in zip(eg, (img, meta), bg, (model.w.weight[3].view(3, 6, 6), model.v.weight[3])):
        torch.testing.assert_close(ours, (xm - bm.mean(0)) * w.detach(), rtol=1e-9, atol=1e-11)
    one = tuple(m[:1] for m in bg)  # one reference: Captum's GradientShap draws it every time
    ours1 = xt.ExpectedGradients(model, one, samples=3, seed=0)((img, meta), target=1)
    torch.manual_seed(0)
    ref = GradientShap(model).attribute((img, meta), baselines=one, target=1, n_samples=3)
    for a, r in zip(ours1, ref):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)


def test_expected_gradients_bad_tuples_name_the_member():
    model, (img, meta) = ImageAndMeta(), data()
    bg_img, bg_meta = data(b=4, seed=2)
    with pytest.raises(xt.XaiError, match="same N rows"):
        xt.ExpectedGradients(model, (bg_img[:3], bg_meta))
    with pytest.raises(xt.XaiError, match="background member 0"):
        xt.ExpectedGradients(model, (bg_img[:, :, :4], bg_meta))((img, meta), target=0)
    with pytest.raises(xt.XaiError, match="batch sizes"):
        xt.ExpectedGradients(model, (bg_img, bg_meta))((img[:2], meta), target=0)
    with pytest.raises(xt.XaiError, match="background is one tensor"):
        xt.ExpectedGradients(model, bg_img)((img, meta), target=0)
    with pytest.raises(xt.XaiError, match="x is one tensor"):
        xt.ExpectedGradients(model, (bg_img, bg_meta))(img, target=0)


class PooledAndMeta(nn.Module):
    """``model(image, meta)`` of modules Captum's LRP supports: conv -> ReLU -> average pooling,
    joined with the metadata -> linear -> ReLU -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.r1, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(6)
        self.fc1, self.r2, self.fc2 = nn.Linear(4 + 3, 6), nn.ReLU(), nn.Linear(6, 5)
        self.double().eval()

    def forward(self, image, meta):
        h = self.pool(self.r1(self.conv(image))).view(image.shape[0], -1)
        return self.fc2(self.r2(self.fc1(torch.cat([h, meta], 1))))


@pytest.mark.parity
def test_lrp_tuples_equal_captum_epsilon_lrp_at_each_member():
    from captum.attr import LRP as CaptumLRP

    model, (img, meta) = PooledAndMeta(), data()
    rules = {nn.Conv2d: "epsilon", nn.Linear: "epsilon"}  # Captum's default: epsilon everywhere
    res = xt.LRP(model, rules, epsilon=1e-9, stabilizer=1e-9).explain((img, meta), target=[0, 2, 4])
    ref = captum(CaptumLRP, model, inputs=(img, meta), target=[0, 2, 4])
    assert isinstance(res.attributions, tuple) and res.attributions[1].shape == meta.shape
    for ours, theirs in zip(res.attributions, ref):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    total = res.attributions[0].flatten(1).sum(1) + res.attributions[1].sum(1)
    torch.testing.assert_close(res.relevance_sum, total)  # summed over both members
    with pytest.raises(xt.XaiError, match="low= and high="):
        xt.LRP(model, "epsilon_gamma_box")((img, meta), target=0)
    with pytest.raises(xt.XaiError, match="batch sizes"):
        xt.LRP(model)((img, meta[:1]), target=0)
