"""CAM options (issue 18.3 and 18.5): Grad-CAM++'s library epsilon, signed maps, nearest
interpolation, the layer's input, tuple outputs, layers the target does not reach."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import xai_torch as xt

from cam_helpers import GapNet


def _quiet_gapnet() -> nn.Module:
    """GapNet in float32 with a head scaled down: gradients at the layer ~1e-4."""
    torch.manual_seed(1)
    net = GapNet().eval()
    with torch.no_grad():
        net.fc.weight.mul_(2e-3)
    return net


def _scale(m):
    m = torch.relu(m)
    m = m - m.flatten(1).min(1).values[:, None, None]
    return m / (m.flatten(1).max(1).values[:, None, None] + 1e-7)


def test_alpha_eps_validation_and_closed_form(gapnet, gap_x):
    for bad in (-1.0, float("nan"), "1e-6", True):
        with pytest.raises(xt.XaiError, match="alpha_eps"):
            xt.GradCAMPlusPlus(gapnet, layer="features", alpha_eps=bad)
    res = xt.GradCAMPlusPlus(gapnet, layer="features", alpha_eps=0.5).explain(gap_x, target=[0, 1, 2])
    with torch.no_grad():
        a = gapnet.features(gap_x)
    g = (gapnet.fc.weight.detach()[[0, 1, 2]] / 48)[:, :, None, None].expand_as(a)
    alpha = g**2 / (2 * g**2 + a.sum((2, 3), keepdim=True) * g**3 + 0.5)
    torch.testing.assert_close(res.weights[0], (alpha * torch.relu(g)).sum((2, 3)))


@pytest.mark.parity
def test_alpha_eps_gives_pytorch_grad_cam_exactly_where_gradients_are_small():
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = _quiet_gapnet()
    x = torch.rand(3, 3, 6, 8, generator=torch.Generator().manual_seed(2))
    target = [0, 1, 3]
    theirs_net = copy.deepcopy(net)
    with pgc.GradCAMPlusPlus(model=theirs_net, target_layers=[theirs_net.features]) as cam:  # no resize
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in target]))
    compat = xt.GradCAMPlusPlus(net, layer="features", alpha_eps=1e-6)(x, target=target)[:, 0]
    torch.testing.assert_close(_scale(_scale(compat)), theirs, rtol=0, atol=1e-6)  # the library scales twice
    paper = xt.GradCAMPlusPlus(net, layer="features").explain(x, target=target)
    lib = xt.GradCAMPlusPlus(net, layer="features", alpha_eps=1e-6).explain(x, target=target)
    change = (lib.weights[0] - paper.weights[0]).abs().max() / paper.weights[0].abs().max()
    assert float(change) > 1e-2  # the epsilon matters here: the paper form is the default
