"""LRP against zennit's ``Gradient`` attributor, and per call on reused and functional layers."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import xai_torch as xt

from conftest import calibrate, close

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient as ZennitGradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import COMPOSITES as ZENNIT_COMPOSITES  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402

NAMES = ["epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat"]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _zennit(model, x, target, name, canonizers=None, **kw):
    if name == "epsilon_gamma_box":
        mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in (MEAN, STD))
        kw = {"low": ((0 - mean) / std).expand_as(x), "high": ((1 - mean) / std).expand_as(x), **kw}
    composite = ZENNIT_COMPOSITES[name](canonizers=canonizers, **kw)
    with ZennitGradient(model, composite) as attributor:
        _, rel = attributor(x, attr_output=lambda out: F.one_hot(target, out.shape[1]) * out)
    return rel


def _vgg(cfg: str) -> nn.Module:
    """torchvision's VGG features (conv, in-place ReLU, max pooling) with a small head (the
    4096-wide classifier would dominate the test time and adds nothing to check)."""
    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[cfg])
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 32), nn.ReLU(True),
                         nn.Dropout(), nn.Linear(32, 10)).eval()


@functools.cache
def _resnet18(eps: float) -> nn.Module:
    torch.manual_seed(0)
    model = calibrate(torchvision.models.resnet18(weights=None, num_classes=10), 32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
    return model


def _x(n=2, size=32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g).sub(torch.tensor(MEAN).reshape(1, 3, 1, 1)) \
        .div(torch.tensor(STD).reshape(1, 3, 1, 1))


@pytest.mark.parity
@pytest.mark.parametrize("name", NAMES)
def test_vgg11_matches_zennit(name):
    model, x, t = _vgg("A"), _x(1), torch.tensor([7])
    ours = xt.LRP(model, name, normalize=(MEAN, STD))(x, t)
    close(ours, _zennit(model, x, t, name))


@pytest.mark.parity
def test_vgg16_matches_zennit():
    model, x, t = _vgg("D"), _x(1), torch.tensor([4])
    close(xt.LRP(model, "epsilon_gamma_box", normalize=(MEAN, STD))(x, t), _zennit(model, x, t, "epsilon_gamma_box"))


@pytest.mark.parity
@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_gamma_box"])   # alpha-beta: vgg11 (test time)
def test_resnet18_matches_zennit_with_its_canonizer(name):
    # BatchNorm eps = 0: zennit's canonizer leaves each merged BatchNorm computing x / sqrt(1 + eps)
    # instead of the identity (see the test below), which drifts its forward by ~5e-6 per BatchNorm
    model, x, t = _resnet18(0.0), _x(), torch.tensor([2, 5])
    res = xt.LRP(model, name, normalize=(MEAN, STD)).explain(x, t)
    assert res.merged_batchnorms == 20
    close(res.attributions, _zennit(model, x, t, name, [ResNetCanonizer()]))


@pytest.mark.parity
def test_zennit_canonizer_changes_the_forward_where_the_per_call_merge_does_not():
    torch.manual_seed(0)
    model = calibrate(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                                    nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)), 8)
    x = torch.randn(2, 3, 8, 8)
    want = model(x)
    composite = ZENNIT_COMPOSITES["epsilon_plus"](canonizers=[SequentialMergeBatchNorm()])
    with ZennitGradient(model, composite):
        drifted = model(x)
    # each merged BatchNorm still divides by sqrt(var + eps) with var = 1: two of them
    torch.testing.assert_close(drifted, want / (1 + 1e-5), rtol=1e-5, atol=1e-6)
    assert not torch.equal(drifted, want)
    res = xt.LRP(model, "epsilon_plus").explain(x, target=0)
    torch.testing.assert_close(res.scores, want[:, 0].detach(), rtol=0, atol=0)


class _Reused(nn.Module):
    """One conv called twice and a functional call with the head's weight."""

    def __init__(self, functional: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)
        self.functional = functional

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.conv(h))
        h = F.relu(self.conv(h))                   # the same module again
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return F.linear(h, self.head.weight, self.head.bias) if self.functional else self.head(h)


class _Unrolled(nn.Module):
    """The per-call reference: every call has its own module (copies of the same weights)."""

    def __init__(self, m: _Reused):
        super().__init__()
        self.stem, self.conv1, self.head = m.stem, m.conv, m.head
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2.load_state_dict(m.conv.state_dict())
        self.pool, self.relu = nn.AdaptiveAvgPool2d(1), nn.ReLU()

    def forward(self, x):
        h = self.relu(self.stem(x))
        h = self.relu(self.conv2(self.relu(self.conv1(h))))
        return self.head(self.pool(h).flatten(1))


@pytest.mark.parity
@pytest.mark.parametrize("functional", [False, True])
@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_reused_and_functional_layers_equal_the_per_call_reference(functional, name):
    torch.manual_seed(0)
    model = _Reused(functional).eval()
    x, t = _x(2, 8), torch.tensor([0, 3])
    res = xt.LRP(model, name, normalize=(MEAN, STD)).explain(x, t)
    assert list(res.rules) == ["stem", "conv", "conv#2", "head"]      # F.linear(h, head.weight) is "head"
    close(res.attributions, _zennit(_Unrolled(model).eval(), x, t, name), rtol=1e-5)


class _MBConv(nn.Module):
    """MobileNet / EfficientNet-Lite's block: expand, depthwise (groups = channels), project,
    BatchNorm after each, ReLU6, and a residual addition (zennit's ``Sum`` module for zennit,
    ``a + b`` for ours: the same sum)."""

    def __init__(self, zennit_sum: bool):
        super().__init__()
        from zennit.layer import Sum

        bn = nn.BatchNorm2d
        self.stem, self.bn_s = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), bn(8)
        self.expand, self.bn0 = nn.Conv2d(8, 16, 1, bias=False), bn(16)
        self.depthwise, self.bn1 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), bn(16)
        self.project, self.bn2 = nn.Conv2d(16, 8, 1, bias=False), bn(8)
        self.act, self.pool, self.fc = nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)
        self.sum = Sum() if zennit_sum else None

    def forward(self, x):
        x = self.act(self.bn_s(self.stem(x)))
        h = self.act(self.bn0(self.expand(x)))
        h = self.act(self.bn1(self.depthwise(h)))
        h = self.bn2(self.project(h))
        h = self.sum(torch.stack([h, x], dim=-1)) if self.sum is not None else h + x
        return self.fc(self.pool(h).flatten(1))


@pytest.mark.parity
@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_depthwise_relu6_block_matches_zennit(name):
    torch.manual_seed(0)
    ours_model = calibrate(_MBConv(False), 16)
    for m in ours_model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0             # see test_resnet18_matches_zennit_with_its_canonizer
    theirs = _MBConv(True)
    theirs.load_state_dict(ours_model.state_dict())
    theirs.eval()
    for m in theirs.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    x, t = _x(2, 16), torch.tensor([1, 4])
    res = xt.LRP(ours_model, name, normalize=(MEAN, STD)).explain(x, t)
    assert res.merged_batchnorms == 4
    close(res.attributions, _zennit(theirs, x, t, name, [SequentialMergeBatchNorm()]))
