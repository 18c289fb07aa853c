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
