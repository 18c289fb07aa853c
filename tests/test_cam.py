"""The CAM family: identities, closed forms, parity, a real model, transformers, targets."""
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

from conftest import SmallNet, assert_no_trace, snapshot, torchvision_model

GRADIENT_CAMS = [xt.GradCAM, xt.GradCAMPlusPlus, xt.HiResCAM, xt.XGradCAM, xt.LayerCAM]
ALL_CAMS = GRADIENT_CAMS + [xt.CAM, xt.ScoreCAM, xt.GuidedGradCAM]


class GapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> GAP -> FC: the architecture CAM was defined on."""

    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1),
                                      nn.ReLU())
        self.fc = nn.Linear(5, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture
def gapnet():
    torch.manual_seed(0)
    return GapNet().double().eval()


@pytest.fixture
def gap_x():
    return torch.rand(3, 3, 6, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def acts_of(model, x):
    with torch.no_grad():
        return model.features(x)


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


def test_outputs_are_raw_and_upsampled_bilinearly(gapnet, gap_x):
    res = xt.GradCAM(gapnet, layer="features.0").explain(gap_x)
    assert res.attributions.shape == (3, 1, 6, 8) and res.layer_maps[0].shape == (3, 1, 6, 8)
    small = xt.GradCAM(gapnet, layer="features.0", upsample=False)(gap_x[:, :, ::2, ::2].contiguous())
    assert small.shape == (3, 1, 3, 4)
    assert float(res.attributions.min()) >= 0  # after the ReLU, not normalised
    up = xt.GradCAM(torchvision_model("resnet18"), layer="layer4").explain(torch.randn(1, 3, 64, 64))
    expect = torch.nn.functional.interpolate(up.layer_maps[0], size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up.attributions, expect)


def test_captured_activation_is_safe_from_later_in_place_ops(small, small_x):
    # SmallNet: bn -> in-place ReLU. The map must use bn's output, negative values included.
    res = xt.HiResCAM(small, layer="bn").explain(small_x, target=2)
    xg = small_x.clone()
    with torch.enable_grad():
        a = small.bn(small.conv1(xg)).detach().requires_grad_(True)
        y = small.relu(a.clone())
        y = small.relu(small.conv2(y))
        (g,) = torch.autograd.grad(small.fc(y.mean((2, 3)))[:, 2].sum(), a)
    torch.testing.assert_close(res.layer_maps[0], torch.relu((g * a.detach()).sum(1, keepdim=True)))


def test_targets_batches_and_fusion():
    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    cam = xt.GradCAM(model, layer="layer3")
    both = cam.explain(x, target=[[1, 2], [3, 4]])
    assert both.attributions.shape == (2, 2, 1, 64, 64) and both.weights[0].shape == (2, 2, 256)
    torch.testing.assert_close(both.attributions[:, 1], cam(x, target=[2, 4]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cam(x[1:], target=3), both.attributions[1:, 0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cam(x, target=lambda out: out[:, 7]), cam(x, target=7))
    fused = xt.GradCAM(model, layer=["layer3", model.layer4]).explain(x)
    assert fused.attributions.shape == (2, 1, 64, 64) and len(fused.layer_maps) == 2
    assert float(fused.attributions.max()) <= 1.0 and float(fused.attributions.min()) >= 0.0
    # pytorch-grad-cam's fusion: per-layer min-max of the upsampled ReLU'd maps, mean, min-max
    singles = [xt.viz.minmax(xt.GradCAM(model, layer=n)(x), eps=1e-7) for n in ("layer3", "layer4")]
    torch.testing.assert_close(fused.attributions, xt.viz.minmax(torch.stack(singles).mean(0), eps=1e-7))
    # batching plan: batch_size bounds every model call
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        xt.GradCAM(model, layer="layer4", batch_size=3)(x, target=[[1, 2], [3, 4]])
        assert calls == [3, 1]
    finally:
        h.remove()


def test_guided_grad_cam_is_gbp_times_grad_cam():
    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    res = xt.GuidedGradCAM(model, layer="layer3").explain(x, target=[4, 9])
    gbp = xt.GuidedBackprop(model)(x, target=[4, 9])
    cam = xt.GradCAM(model, layer="layer3")(x, target=[4, 9])
    assert res.attributions.shape == (2, 3, 64, 64)
    torch.testing.assert_close(res.attributions, gbp * cam, rtol=1e-4, atol=1e-6 * float((gbp * cam).abs().max()))
    torch.testing.assert_close(res.layer_maps[0], xt.GradCAM(model, layer="layer3", upsample=False)(x, target=[4, 9]))


def _unit(m):
    return (m - m.min()) / (m.max() - m.min())


def test_score_cam_weightings_and_model_calls():
    model = GapNet().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        res = xt.ScoreCAM(model, layer="features", batch_size=4).explain(x, target=[1, 2])
    finally:
        h.remove()
    a = acts_of(model, x)
    active = (a.flatten(2).max(-1).values > a.flatten(2).min(-1).values)
    n_active = int(active.sum())
    assert calls[0] == 2 and sum(calls[1:]) == n_active and max(calls[1:]) <= 4
    # official weights: softmax probability of the class on each masked input
    up = a  # the layer has the input resolution here
    for i, c in ((0, 1), (1, 2)):
        for k in range(a.shape[1]):
            if not active[i, k]:
                assert res.weights[0][i, k] == 0
                continue
            h_k = (up[i, k] - up[i, k].min()) / (up[i, k].max() - up[i, k].min())
            with torch.no_grad():
                p = model(x[i:i + 1] * h_k).softmax(1)[0, c]
            torch.testing.assert_close(res.weights[0][i, k], p)
    # paper weighting: softmax over channels of p_c(x * H_k) - p_c(baseline); several chunks
    calls.clear()
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        paper = xt.ScoreCAM(model, layer="features", weighting="paper", batch_size=1).explain(x, target=[1, 2])
    finally:
        h.remove()
    assert calls.count(1) == len(calls)  # every model call within batch_size
    assert len(calls) == 2 * (1 + a.shape[1] + 1)  # per image: clean, 5 channels, one baseline
    with torch.no_grad():
        p0 = model(torch.zeros(1, 3, 8, 8)).softmax(1)[0]
        s = torch.stack([torch.stack([model(x[i:i + 1] * _unit(a[i, k])).softmax(1)[0, c] - p0[c]
                                      for k in range(a.shape[1])]) for i, c in ((0, 1), (1, 2))])
    torch.testing.assert_close(paper.weights[0], s.softmax(1))
    # a callable target scores the masked inputs itself
    via_callable = xt.ScoreCAM(model, layer="features").explain(x, target=lambda out: out.softmax(1)[:, 1])
    torch.testing.assert_close(via_callable.weights[0][0], res.weights[0][0])
    with pytest.raises(xt.XaiError, match="weighting must be one of"):
        xt.ScoreCAM(model, layer="features", weighting="fast")


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
    with pytest.raises(xt.XaiError, match="vit_reshape"):
        xt.GradCAM(vit, layer="encoder.layers.encoder_layer_10")(x)
    grid = xt.tokens_to_grid(torch.arange(2 * 7 * 3.0).reshape(2, 7, 3), prefix_tokens=1, height=2, width=3)
    assert grid.shape == (2, 3, 2, 3) and grid[0, 0, 0, 0] == 3.0  # token 1, channel 0
    with pytest.raises(xt.XaiError, match="do not fill"):
        xt.tokens_to_grid(torch.zeros(1, 8, 3), prefix_tokens=1)  # 7 spatial tokens


def test_swin_channels_last():
    torch.manual_seed(0)
    swin = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    res = xt.GradCAM(swin, layer="features.5", reshape=xt.swin_reshape()).explain(x, target=3)
    assert res.attributions.shape == (1, 1, 64, 64) and res.layer_maps[0].shape == (1, 1, 4, 4)
    assert float(res.attributions.sum()) > 0


# --- non-classification targets ------------------------------------------------------------------
class TinySeg(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return {"out": self.head(self.body(x))}


def test_segmentation_target():
    torch.manual_seed(0)
    model = TinySeg().eval()
    x = torch.randn(2, 3, 10, 10)
    mask = torch.zeros(10, 10)
    mask[2:6, 3:7] = 1
    target = xt.SegmentationTarget(1, mask, key="out")
    got = xt.GradCAM(model, layer="body").explain(x, target=target)
    expect = xt.GradCAM(model, layer="body")(x, target=lambda out: (out["out"][:, 1] * mask).flatten(1).sum(1))
    torch.testing.assert_close(got.attributions, expect)
    assert got.targets is None
    with pytest.raises(xt.XaiError, match="category 5 out of range"):
        xt.GradCAM(model, layer="body")(x, target=xt.SegmentationTarget(5, mask))
    with pytest.raises(xt.XaiError, match="mask has 3 images but x has 2"):
        xt.GradCAM(model, layer="body")(x, target=xt.SegmentationTarget(1, torch.ones(3, 10, 10)))


class FakeDetector(nn.Module):
    """Returns torchvision-style detections whose scores depend on the image."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        f = torch.relu(self.conv(x))
        dets = []
        for i in range(x.shape[0]):
            s = f[i].mean((1, 2)).sigmoid()
            dets.append({"boxes": torch.tensor([[0.0, 0, 4, 4], [4.0, 4, 8, 8]]), "labels": torch.tensor([1, 2]),
                         "scores": s})
        return dets


def test_box_target_scores_and_refuses_unmatched_images():
    model = FakeDetector().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = xt.BoxTarget(boxes=[[[0, 0, 4, 4]], [[4, 4, 8, 7]]], labels=[[1], [2]])
    out = model(x)
    s = target.bind(2).scores(out, torch.arange(2))[0]
    iou2 = (4 * 3) / (4 * 4)
    torch.testing.assert_close(s, torch.stack([1 + out[0]["scores"][0], iou2 + out[1]["scores"][1]]))
    maps = xt.GradCAM(model, layer="conv")(x, target=target)
    assert maps.shape == (2, 1, 8, 8)
    with pytest.raises(xt.XaiError, match="image 1: no detection matches"):
        xt.GradCAM(model, layer="conv")(x, target=xt.BoxTarget([[[0, 0, 4, 4]], [[0, 0, 4, 4]]], [[1], [2]]))


# --- errors and no trace ----------------------------------------------------------------------------
class Reuse(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.unused = nn.Conv2d(3, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(torch.relu(self.conv(x)))).mean((2, 3)))


def test_layer_errors():
    model = Reuse().eval()
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(xt.XaiError, match="'conv1' is not a submodule.*'conv'"):
        xt.GradCAM(model, layer="conv1")
    with pytest.raises(xt.XaiError, match="'unused' was not called"):
        xt.GradCAM(model, layer="unused")(x)
    with pytest.raises(xt.XaiError, match="runs 2 times per forward pass.*call=0..1"):
        xt.GradCAM(model, layer="conv")(x)
    first = xt.GradCAM(model, layer="conv", call=0)(x)
    second = xt.GradCAM(model, layer="conv", call=1)(x)
    assert not torch.allclose(first, second)
    with pytest.raises(xt.XaiError, match="runs 2 times"):
        xt.GradCAM(model, layer="conv", call=2)(x)
    with pytest.raises(xt.XaiError, match="upsample=True"):
        xt.GradCAM(model, layer=["conv", "fc"], upsample=False)
    with pytest.raises(xt.XaiError, match="callable targets"):
        xt.CAM(model, layer="conv", call=1)(x, target=lambda out: out[:, 0])
    with pytest.raises(xt.XaiError, match="takes 5 features but the layer has 6 channels"):
        xt.CAM(GapNet(), layer="features.0")(torch.randn(1, 3, 4, 4))
    with pytest.raises(xt.XaiError, match="needs an nn.Module"):
        xt.GradCAM(lambda t: t, layer="x")


@pytest.mark.parametrize("cls", ALL_CAMS, ids=[c.__name__ for c in ALL_CAMS])
def test_no_trace(cls, small, small_x):
    small.conv1.weight.grad = torch.ones_like(small.conv1.weight)
    before = snapshot(small, small_x)
    with cls(small, layer="conv2") as cam:
        assert cam(small_x, target=[0, 1, 2]).shape[0] == 3
        cam(small_x, target=[[0, 1]] * 3)
    with pytest.raises(xt.XaiError, match="out of range"):
        cls(small, layer="conv2")(small_x, target=7)
    small.fail_with = RuntimeError("inside forward")
    with pytest.raises(RuntimeError, match="inside forward"):
        cls(small, layer="conv2")(small_x)
    small.fail_with = None
    assert_no_trace(before, snapshot(small, small_x))


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
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-6 * float(theirs.abs().max()))


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
    kwargs = {"weighting": "grad_cam_lib", "batch_size": 16} if name == "ScoreCAM" else {}
    ours = getattr(xt, name)(model, layer="layer3", **kwargs)(x, target=target)[:, 0]
    ours = _minmax(ours)
    for a, b in zip(ours, theirs):
        corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
        assert corr >= 0.999, f"{name}: correlation {corr:.5f}"
        # pytorch-grad-cam adds 1e-6 to Grad-CAM++'s alpha denominator (ours: the paper's form),
        # which shows where gradients are ~1e-3; every other variant matches to round-off
        assert float((a - b).abs().max()) < (1e-2 if name == "GradCAMPlusPlus" else 1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", ALL_CAMS, ids=[c.__name__ for c in ALL_CAMS])
def test_cams_run_on_the_model_device(cls, small, small_x):
    cpu = cls(small, layer="conv2")(small_x, target=[0, 1, 2])
    model = SmallNet().cuda().eval()
    model.load_state_dict(small.state_dict())
    got = cls(model, layer="conv2")(small_x, target=[0, 1, 2])
    assert got.device == small_x.device
    torch.testing.assert_close(got, cpu, rtol=1e-4, atol=1e-5 * float(cpu.abs().max()))


class _CountBackward(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        _CountBackward.calls += 1
        return g


def test_gradient_cams_do_not_backpropagate_below_the_layer(gapnet, gap_x):
    class Probe(nn.Module):
        def forward(self, x):
            return _CountBackward.apply(x)

    model = nn.Sequential(Probe(), gapnet)
    for cls in GRADIENT_CAMS:
        _CountBackward.calls = 0
        cls(model, layer="1.features.2")(gap_x)
        assert _CountBackward.calls == 0, cls.__name__
    xt.Gradient(model)(gap_x)
    assert _CountBackward.calls == 1  # the probe does count full backward passes


def test_cam_constructor_options_and_errors(gapnet, gap_x):
    named = xt.CAM(gapnet, layer="features", fc="fc")(gap_x, target=1)
    torch.testing.assert_close(named, xt.CAM(gapnet, layer="features", fc=gapnet.fc)(gap_x, target=1))
    with pytest.raises(xt.XaiError, match="'features.0' is a Conv2d, not an nn.Linear"):
        xt.CAM(gapnet, layer="features", fc="features.0")
    with pytest.raises(xt.XaiError, match="no nn.Linear"):
        xt.CAM(nn.Sequential(nn.Conv2d(3, 2, 1)), layer="0")
    with pytest.raises(xt.XaiError, match="call must be None or an int"):
        xt.GradCAM(gapnet, layer="features", call="first")
    with pytest.raises(xt.XaiError, match="reshape must be a callable"):
        xt.GradCAM(gapnet, layer="features", reshape="vit")
    with pytest.raises(xt.XaiError, match="one layer at a time"):
        xt.ScoreCAM(gapnet, layer=["features.0", "features.2"])
    assert repr(xt.GradCAMPlusPlus(gapnet, layer="features", call=0)) == (
        "GradCAMPlusPlus(model=GapNet, layer='features', upsample=True, call=0, batch_size=None, "
        "progress=None, alpha_norm=False)")


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
