"""The CAM engine (xai_torch/cam/base.py): capture, upsampling, fusion, targets, batching,
errors, no trace, and attached mode (from_output inside a with block)."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import xai_torch as xt

from cam_helpers import ALL_CAMS, GRADIENT_CAMS, CallCounter, GapNet
from conftest import SmallNet, assert_no_trace, snapshot, torchvision_model


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
    # pytorch-grad-cam's fusion: per-layer min-max of the ReLU'd maps at layer resolution, resize, mean, min-max
    singles = [xt.imageops.upsample_to(xt.viz.minmax(xt.GradCAM(model, layer=n, upsample=False)(x), eps=1e-7),
                                       (64, 64)) for n in ("layer3", "layer4")]
    torch.testing.assert_close(fused.attributions, xt.viz.minmax(torch.stack(singles).mean(0), eps=1e-7))
    # batching plan: batch_size bounds every model call
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        xt.GradCAM(model, layer="layer4", batch_size=3)(x, target=[[1, 2], [3, 4]])
        assert calls == [3, 1]
    finally:
        h.remove()


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

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x), x

    class Paired(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[0].mean((2, 3))

    # a tuple output: its first tensor is explained (output_index= picks another member)
    paired = Paired()
    torch.testing.assert_close(xt.GradCAM(paired, layer="pair")(x), xt.GradCAM(paired, layer="pair.conv")(x))
    with pytest.raises(xt.XaiError, match="output_index=5 but layer 'pair'.s output has 2 members"):
        xt.GradCAM(paired, layer="pair", output_index=5)(x)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU path; CI has none)")
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


def test_constructor_options_and_errors(gapnet, gap_x):
    with pytest.raises(xt.XaiError, match="call must be None or an int"):
        xt.GradCAM(gapnet, layer="features", call="first")
    with pytest.raises(xt.XaiError, match="reshape must be a callable"):
        xt.GradCAM(gapnet, layer="features", reshape="vit")
    assert repr(xt.GradCAMPlusPlus(gapnet, layer="features", call=0)) == (
        "GradCAMPlusPlus(model=GapNet, layer='features', upsample=True, call=0, batch_size=None, "
        "progress=None, alpha_norm=False)")


# --- attached mode ------------------------------------------------------------------------------------
ATTACHABLE = GRADIENT_CAMS + [xt.CAM]


@pytest.mark.parametrize("cls", ATTACHABLE, ids=[c.__name__ for c in ATTACHABLE])
def test_from_output_uses_the_users_forward_only(cls, small, small_x):
    """Exactly the user's one model call, and the result of a call on x."""
    for target in ([0, 1, 2], [[0, 1], [2, 3], [4, 0]], None):
        expect = cls(small, layer="conv2").explain(small_x, target=target)
        with cls(small, layer="conv2") as cam, CallCounter(small) as calls:
            out = small(small_x)
            got = cam.from_output(out, target)
        assert calls.sizes == [3]
        assert isinstance(got, xt.CAMExplanation) and got.layers == ["conv2"]
        for field in ("attributions", "targets", "scores"):
            torch.testing.assert_close(getattr(got, field), getattr(expect, field), rtol=0, atol=0)
        torch.testing.assert_close(got.layer_maps, expect.layer_maps, rtol=0, atol=0)
        torch.testing.assert_close(got.weights, expect.weights, rtol=0, atol=0)


def test_from_output_in_an_evaluation_loop_with_fused_layers(small, small_x):
    cam = xt.GradCAM(small, layer=["bn", "conv2"])
    batches = [small_x[:2], small_x[2:]]
    with cam, CallCounter(small) as calls:
        got = [cam.from_output(small(x), target=1).attributions for x in batches]
    assert calls.sizes == [2, 1]
    for x, maps in zip(batches, got):
        torch.testing.assert_close(maps, cam(x, target=1), rtol=0, atol=0)


def test_calls_inside_the_block_leave_the_users_forward_alone(small, small_x):
    with xt.GradCAM(small, layer="conv2") as cam:
        out = small(small_x)
        other = cam(small_x.flip(-1), target=2)  # its own forwards are not recorded as the user's
        got = cam.from_output(out, target=2).attributions
        again = cam.from_output(out, target=2).attributions  # the same forward, twice
    torch.testing.assert_close(got, xt.GradCAM(small, layer="conv2")(small_x, target=2), rtol=0, atol=0)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    assert not torch.equal(other, got)


def test_the_users_graph_stays_usable(small, small_x):
    x = small_x.clone().requires_grad_(True)
    with xt.GradCAM(small, layer="conv2") as cam:
        out = small(x)
        cam.from_output(out, target=0)
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)  # the graph was kept for the user
    torch.testing.assert_close(g, xt.Gradient(small)(small_x, target=0))


def test_from_output_errors(small, small_x):
    cam = xt.GradCAM(small, layer="conv2")
    with pytest.raises(xt.XaiError, match="needs the capture hooks of a `with` block"):
        cam.from_output(small(small_x))
    with cam:
        with pytest.raises(xt.XaiError, match="has not run inside this `with` block"):
            cam.from_output(torch.zeros(3, 5))
        first = small(small_x)
        second = small(small_x)
        with pytest.raises(xt.XaiError, match="not the output of the model's last forward"):
            cam.from_output(first)
        with pytest.raises(xt.XaiError, match="not the output of the model's last forward"):
            cam.from_output(second * 1)
        cam.from_output(second)
        with torch.no_grad():
            detached = small(small_x)
        with pytest.raises(xt.XaiError, match="no gradient.*torch.no_grad"):
            cam.from_output(detached)
        with pytest.raises(xt.XaiError, match="out of range"):
            cam.from_output(small(small_x), target=9)
        with pytest.raises(xt.XaiError, match="target has 2 entries but x has 3 images"):
            cam.from_output(small(small_x), target=[0, 1])
    with pytest.raises(xt.XaiError, match="needs the capture hooks"):
        cam.from_output(second)  # the block has ended
    with xt.GradCAM(small, layer="conv2") as cam:
        small.fail_with = RuntimeError("inside forward")
        with pytest.raises(RuntimeError, match="inside forward"):
            small(small_x)
        small.fail_with = None
        with pytest.raises(xt.XaiError, match="last forward raised"):
            cam.from_output(first)
    with xt.GuidedGradCAM(small, layer="conv2") as ggc:
        with pytest.raises(xt.XaiError, match="GuidedGradCAM has no attached mode.*cam\\(x, target\\)"):
            ggc.from_output(small(small_x))


def test_from_output_needs_the_images_as_first_argument(small_x):
    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = SmallNet().eval()

        def forward(self, x=None):
            return self.net(x)

    model = Keyword().eval()
    with xt.GradCAM(model, layer="net.conv2") as cam:
        out = model(x=small_x)
        with pytest.raises(xt.XaiError, match="first positional argument"):
            cam.from_output(out)


def test_other_threads_are_not_recorded(small, small_x):
    """A forward of the same model in another thread (a web server, a thread pool) neither
    replaces the user's forward nor can explain it."""
    errors = []
    with xt.GradCAM(small, layer="conv2") as cam:
        out = small(small_x)

        def other():
            small(small_x.flip(-1))  # not recorded
            try:
                cam.from_output(out)
            except xt.XaiError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        got = cam.from_output(out, target=1).attributions
    assert len(errors) == 1 and "opened on this thread" in errors[0]
    torch.testing.assert_close(got, xt.GradCAM(small, layer="conv2")(small_x, target=1), rtol=0, atol=0)


@pytest.mark.parametrize("error", [RuntimeError("in the block"), KeyboardInterrupt()])
def test_attached_hooks_leave_no_trace(small, small_x, error):
    small.conv1.weight.grad = torch.ones_like(small.conv1.weight)
    before = snapshot(small, small_x)
    for cls in ALL_CAMS:
        with pytest.raises(type(error)):
            with cls(small, layer="conv2") as cam:
                cam(small_x, target=[0, 1, 2])
                if cls is not xt.GuidedGradCAM:
                    cam.from_output(small(small_x), target=1)
                raise error
        assert_no_trace(before, snapshot(small, small_x))
