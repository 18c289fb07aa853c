"""The gradient-weighted CAMs (xai_torch/cam/gradcam.py): closed forms, a real model,
transformers, parity with Captum and pytorch-grad-cam."""
from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import xai_torch as xt

from cam_helpers import acts_of
from conftest import torchvision_model


def test_identities_on_a_gap_fc_net(gapnet, gap_x):
    target = [0, 3, 1]
    grad_cam = xt.GradCAM(gapnet, layer="features").explain(gap_x, target=target)
    hw = 6 * 8
    cam = xt.CAM(gapnet, layer="features").explain(gap_x, target=target)
    torch.testing.assert_close(cam.attributions, hw * grad_cam.attributions)
    torch.testing.assert_close(cam.layer_maps[0], hw * grad_cam.layer_maps[0])
    # the gradient at the layer is spatially constant: HiResCAM = Grad-CAM
    torch.testing.assert_close(xt.HiResCAM(gapnet, layer="features")(gap_x, target=target), grad_cam.attributions)
    # closed forms with A = features(x), g_k = W[c, k] / (h w)
    a = acts_of(gapnet, gap_x)
    g = gapnet.fc.weight.detach()[target] / hw
    torch.testing.assert_close(grad_cam.weights[0], g)
    expect = torch.relu((g[:, :, None, None] * a).sum(1, keepdim=True))
    torch.testing.assert_close(grad_cam.layer_maps[0], expect)
    # XGrad-CAM: w = sum(g A) / (sum A + eps) = g * S / (S + eps)
    s = a.sum((2, 3))
    torch.testing.assert_close(xt.XGradCAM(gapnet, layer="features").explain(gap_x, target=target).weights[0],
                               g * s / (s + 1e-7))
    # Grad-CAM++ on a linear head: alpha = 1 / (2 + S g), w = h w alpha ReLU(g)
    alpha = torch.where(g != 0, 1 / (2 + s * g), torch.zeros_like(g))
    alpha = torch.where(2 * g**2 + s * g**3 > 0, alpha, torch.zeros_like(alpha))
    pp = xt.GradCAMPlusPlus(gapnet, layer="features").explain(gap_x, target=target)
    torch.testing.assert_close(pp.weights[0], hw * alpha * torch.relu(g))
    # the authors' renormalisation: alpha / sum_ij alpha = 1 / (h w) per channel
    norm = xt.GradCAMPlusPlus(gapnet, layer="features", alpha_norm=True).explain(gap_x, target=target)
    torch.testing.assert_close(norm.weights[0], torch.relu(g) * (alpha != 0))
    # LayerCAM: ReLU(sum_k ReLU(g_k) A_k)
    torch.testing.assert_close(xt.LayerCAM(gapnet, layer="features").explain(gap_x, target=target).layer_maps[0],
                               torch.relu((torch.relu(g)[:, :, None, None] * a).sum(1, keepdim=True)))


def test_real_model_looks_at_the_object(lite0):
    """Chelsea in the top-left quarter of a brick-textured canvas: Grad-CAM's mass goes there."""
    from skimage import data

    canvas = np.stack([data.brick()[:224, :224]] * 3, -1).astype(np.uint8)
    import cv2

    cat = cv2.resize(xt.zoo.center_crop(xt.zoo.image("chelsea")), (112, 112), interpolation=cv2.INTER_AREA)
    canvas[:112, :112] = cat
    x = xt.zoo.preprocess(canvas, crop=False)
    res = xt.GradCAM(lite0, layer="_conv_head").explain(x, target=282)  # tiger cat
    m = res.attributions[0, 0]
    share = float(m[:112, :112].sum() / m.sum())
    assert share > 0.6, f"only {share:.2f} of the map lies on the cat"


# --- transformers -------------------------------------------------------------------------------
@functools.cache
def _vit():
    torch.manual_seed(0)
    vit = torchvision.models.vit_b_16(weights=None, image_size=32).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return vit


def test_vit_tokens_and_unreachable_last_block():
    vit = _vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # block 10's spatial tokens do reach the output
        res = xt.GradCAM(vit, layer="encoder.layers.encoder_layer_10", reshape=xt.vit_reshape(),
                         upsample=False).explain(x, target=[1, 2])
    assert res.attributions.shape == (2, 1, 2, 2) and res.weights[0].shape == (2, 768)
    assert float(res.weights[0].abs().sum(1).min()) > 0
    with pytest.warns(xt.XaiWarning, match="spatial tokens.*encoder_layer_11"):
        xt.GradCAM(vit, layer="encoder.layers.encoder_layer_11", reshape=xt.vit_reshape())(x)
    # without reshape= the token layout is found from the model (class token, 2 x 2 patch grid)
    auto = xt.GradCAM(vit, layer="encoder.layers.encoder_layer_10")(x, target=[1, 2])
    explicit = xt.GradCAM(vit, layer="encoder.layers.encoder_layer_10", reshape=xt.vit_reshape())(x, target=[1, 2])
    torch.testing.assert_close(auto, explicit, rtol=0, atol=0)


def test_swin_channels_last():
    torch.manual_seed(0)
    swin = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    res = xt.GradCAM(swin, layer="features.5", reshape=xt.swin_reshape()).explain(x, target=3)
    assert res.attributions.shape == (1, 1, 64, 64) and res.layer_maps[0].shape == (1, 1, 4, 4)
    assert float(res.attributions.sum()) > 0


# --- parity ------------------------------------------------------------------------------------
def _minmax(m):
    m = m - m.flatten(1).min(1).values[:, None, None]
    return m / (m.flatten(1).max(1).values[:, None, None] + 1e-7)


@pytest.mark.parity
@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_grad_cam_equals_captum(layer):
    from captum.attr import LayerAttribution, LayerGradCam

    model = torchvision_model("resnet18")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    target = torch.tensor([0, 5, 9])
    theirs = LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=target, relu_attributions=True)
    theirs = LayerAttribution.interpolate(theirs, (64, 64), interpolate_mode="bilinear")
    ours = xt.GradCAM(model, layer=layer)(x, target=target)
    theirs = theirs.detach()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6 * float(theirs.abs().max()))


@pytest.mark.parity
@pytest.mark.parametrize("name", ["GradCAMPlusPlus", "HiResCAM", "XGradCAM", "LayerCAM", "GradCAM", "ScoreCAM"])
def test_parity_with_pytorch_grad_cam(name):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    target = [3, 8]
    theirs_model = copy.deepcopy(model)  # pytorch-grad-cam may change the model it is given
    with getattr(pgc, name)(model=theirs_model, target_layers=[theirs_model.layer3]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in target]))
    kwargs = {"weighting": "grad_cam_lib", "batch_size": 16} if name == "ScoreCAM" else \
        {"alpha_eps": 1e-6} if name == "GradCAMPlusPlus" else {}
    ours = getattr(xt, name)(model, layer="layer3", **kwargs)(x, target=target)[:, 0]
    ours = _minmax(ours)
    for a, b in zip(ours, theirs):
        corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
        assert corr >= 0.999, f"{name}: correlation {corr:.5f}"
        # Grad-CAM++ with alpha_eps=1e-6 (the library's epsilon) matches to round-off too
        assert float((a - b).abs().max()) < 1e-4


def test_xgrad_cam_warns_on_signed_layers_with_zero_sums():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 16, 2)).eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():  # make channel 0 of the BN output sum to zero exactly: +v, -v pattern
        model[0].weight.zero_()
        model[0].bias.zero_()
        model[1].bias.zero_()
        model[1].bias[0] = 1.0
    sign = torch.ones(4, 4)
    sign[:, 2:] = -1

    class Signed(nn.Module):
        def forward(self, t):
            return t * sign

    model.insert(2, Signed())
    with pytest.warns(xt.XaiWarning, match="sum to ~0"):
        xt.XGradCAM(model, layer="2")(x, target=0)
