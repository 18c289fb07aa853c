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


def test_option_validation(gapnet):
    for kwargs, match in [({"relu": 1}, "relu must be True or False"), ({"interpolation": "cubic"}, "interpolation"),
                          ({"layer_input": "yes"}, "layer_input"), ({"output_index": 1.5}, "output_index"),
                          ({"unreachable": "skip"}, "unreachable")]:
        with pytest.raises(xt.XaiError, match=match):
            xt.GradCAM(gapnet, layer="features", **kwargs)
    cam = xt.GradCAM(gapnet, layer="features", relu=False, interpolation="nearest")
    assert "relu=False" in repr(cam) and "interpolation='nearest'" in repr(cam)


def test_unreachable_layer_zero_map_with_a_warning(gapnet, gap_x):
    from conftest import SideNet

    side = SideNet(gapnet).double()
    with pytest.raises(xt.XaiError, match="does not depend on layer 'unused'.*unreachable='zero'"):
        xt.GradCAM(side, layer="unused")(gap_x)
    for cls in (xt.GradCAM, xt.LayerCAM):
        with pytest.warns(xt.XaiWarning, match="does not depend on layer 'unused'"):
            res = cls(side, layer="unused", unreachable="zero").explain(gap_x, target=1)
        assert res.attributions.shape == (3, 1, 6, 8) and bool((res.attributions == 0).all())
    with pytest.warns(xt.XaiWarning, match="'unused'"):
        fused = xt.GradCAM(side, layer=["net.features", "unused"], unreachable="zero")(gap_x, target=1)
    alone = xt.GradCAM(side, layer="net.features", upsample=False)(gap_x, target=1)
    torch.testing.assert_close(fused, xt.viz.minmax(xt.viz.minmax(alone, eps=1e-7) / 2, eps=1e-7))


def test_signed_maps_and_layer_input(gapnet, gap_x):
    signed = xt.GradCAM(gapnet, layer="features.2", relu=False).explain(gap_x, target=[0, 1, 2])
    assert float(signed.attributions.min()) < 0
    plain = xt.GradCAM(gapnet, layer="features.2")(gap_x, [0, 1, 2])
    torch.testing.assert_close(torch.relu(signed.attributions), plain)
    # the input of features.3 (a ReLU) is the output of features.2
    inp = xt.GradCAM(gapnet, layer="features.3", relu=False, layer_input=True).explain(gap_x, target=[0, 1, 2])
    torch.testing.assert_close(inp.attributions, signed.attributions)
    with xt.GradCAM(gapnet, layer="features.3", layer_input=True) as cam:  # attached mode too
        out = gapnet(gap_x)
        torch.testing.assert_close(cam.from_output(out, [0, 1, 2]).attributions, torch.relu(signed.attributions))


def test_nearest_interpolation(gapnet, gap_x):
    x = torch.nn.functional.interpolate(gap_x, scale_factor=2.0)  # layer maps 12 x 16 -> ask for the pool
    model = nn.Sequential(gapnet.features, nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5 * 6 * 8, 3)).double()
    res = xt.GradCAM(model, layer="1", interpolation="nearest").explain(x, target=2)
    assert res.layer_maps[0].shape == (3, 1, 6, 8)
    torch.testing.assert_close(res.attributions, res.layer_maps[0].repeat_interleave(2, -2).repeat_interleave(2, -1))


@pytest.mark.parity
@pytest.mark.parametrize("layer_input", [False, True])
def test_signed_nearest_layer_input_equal_captum(layer_input, gapnet, gap_x):
    from captum.attr import LayerAttribution, LayerGradCam

    x = torch.nn.functional.interpolate(gap_x, scale_factor=2.0)
    model = nn.Sequential(gapnet.features, nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 8, 3)).double()
    torch.manual_seed(3)
    nn.init.normal_(model[-1].weight)
    layer = "2" if layer_input else "1"  # the ReLU's input is the pool's output
    target = torch.tensor([0, 2, 1])
    theirs = LayerGradCam(model, model.get_submodule(layer)).attribute(
        x, target=target, attribute_to_layer_input=layer_input)  # relu_attributions=False by default
    theirs = LayerAttribution.interpolate(theirs.detach(), (12, 16))  # nearest by default
    assert float(theirs.min()) < 0
    ours = xt.GradCAM(model, layer=layer, relu=False, interpolation="nearest", layer_input=layer_input)(x, target)
    torch.testing.assert_close(ours, theirs)
