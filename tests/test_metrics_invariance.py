"""Input invariance (Kindermans et al. 2019): the paper's claims as tests, the shifted copy's
construction (bias, zero-padding border), bad models and no trace on the user's model."""
import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.metrics.invariance import input_invariance

from conftest import SmallNet, assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 5)).eval()


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 10 * 10, 16), nn.Tanh(), nn.Linear(16, 5)).eval()


@pytest.mark.parametrize("make, size", [(conv_net, 10), (mlp, 10)])
def test_gradient_is_invariant_input_x_gradient_and_zero_baseline_ig_are_not(make, size):
    net = make()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    before = snapshot(net, x)
    grad = input_invariance(net, xt.Gradient(net), x, shift=-1.0, keep_maps=True, similarity="spearman")
    assert grad.invariant.all() and float(grad.relative_change.max()) < 1e-5
    assert grad.similarity["spearman"].min() > 0.9999
    assert grad.logit_change.max() < 1e-5 and grad.layer in ("0", "1") and not grad.border_corrected
    torch.testing.assert_close(grad.shifted, grad.original, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.original, xt.Gradient(net)(x).double())   # the model's own map on x
    ixg = input_invariance(net, xt.InputXGradient(net), x, shift=[-1.0, 0.5, -0.25], keep_maps=True)
    assert not ixg.invariant.any() and ixg.relative_change.min() > 0.1
    # closed form: the gradients agree, so IxG's maps differ by exactly shift * gradient
    m = torch.tensor(ixg.shift, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(ixg.shifted - ixg.original, m * grad.original, rtol=1e-4, atol=1e-6)
    ig = input_invariance(net, xt.IntegratedGradients(net, steps=8), x, call_kwargs={"baseline": 0.0})
    assert not ig.invariant.any() and ig.relative_change.min() > 0.1
    assert_no_trace(before, snapshot(net, x))


def test_zero_padding_is_corrected_at_the_border_and_the_shift_mean_option():
    net = SmallNet().eval()   # conv1 has padding=1: a bias change alone is wrong at the border
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    r = input_invariance(net, xt.Gradient(net), x, shift="mean")
    assert r.border_corrected and r.layer == "conv1" and r.logit_change.max() < 1e-5 and r.invariant.all()
    torch.testing.assert_close(torch.tensor(r.shift, dtype=torch.float64), -x.double().mean((0, 2, 3)))
    # a reflect-padded first conv shifts its border with the image: the bias alone is exact
    net.conv1.padding_mode = "reflect"
    r = input_invariance(net, lambda m: xt.Gradient(m), x)
    assert not r.border_corrected and r.logit_change.max() < 1e-5


class NormFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.net = SmallNet()

    def forward(self, x):
        return self.net(self.norm(x))


class Preprocessed(SmallNet):
    def forward(self, x):
        return super().forward(x * 2.0)


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3)) + x.mean((1, 2, 3))[:, None]


def _no_bias():
    net = SmallNet()
    net.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    return net


@pytest.mark.parametrize("make, words", [
    (NormFirst, ["'norm'", "BatchNorm2d", "Conv or Linear"]),
    (Preprocessed, ["'conv1'", "not fed the input"]),
    (Skip, ["logits differ"]),
])
def test_a_first_layer_that_cannot_absorb_the_shift_is_named(make, words):
    net = make().eval()
    x = torch.rand(1, 3, 8, 8)
    before = snapshot(net, x)
    with pytest.raises(xt.XaiError) as info:
        input_invariance(net, xt.Gradient(net), x)
    assert all(w in str(info.value) for w in words), info.value
    assert_no_trace(before, snapshot(net, x))


def test_a_first_layer_without_bias_gets_one_in_the_copy():
    net = _no_bias().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    r = input_invariance(net, xt.Gradient(net), x)
    assert r.bias_added and r.border_corrected and r.invariant.all() and r.logit_change.max() < 1e-5
    assert net.conv1.bias is None


def test_bad_arguments():
    net = conv_net()
    x = torch.rand(1, 3, 10, 10)
    for kwargs in ({"shift": [1.0, 2.0]}, {"shift": "median"}, {"shift": float("nan")}, {"tolerance": -1},
                   {"reduce": "nope"}, {"similarity": "nope"}):
        with pytest.raises(xt.XaiError):
            input_invariance(net, xt.Gradient(net), x, **kwargs)
    with pytest.raises(xt.XaiError, match="different model"):
        input_invariance(net, xt.Gradient(conv_net()), x)
