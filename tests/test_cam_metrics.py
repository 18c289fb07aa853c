"""Average Drop, Increase in Confidence and ARCC (xai_torch/metrics/cam_metrics.py): closed
forms on a small net, parity with pytorch-grad-cam and TorchCAM, bad input."""
from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest
import torch

import xai_torch as xt

from cam_helpers import GapNet

xm = xt.metrics


def _net():
    torch.manual_seed(4)
    return GapNet().eval()


def _x(b=3, size=8):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(5))


def test_confidence_change_closed_form_and_explainer_input(gapnet, gap_x):
    cam = xt.GradCAM(gapnet, layer="features")
    maps = cam(gap_x, target=[0, 1, 2])
    res = xm.confidence_change(gapnet, gap_x, maps, [0, 1, 2])
    e = xt.viz.minmax(maps)
    with torch.no_grad():
        p = gapnet(gap_x).softmax(1)[torch.arange(3), [0, 1, 2]]
        q = gapnet(gap_x * e).softmax(1)[torch.arange(3), [0, 1, 2]]
    torch.testing.assert_close(res.drop, torch.relu(p - q) / p)
    torch.testing.assert_close(res.increase, (q > p).double())
    torch.testing.assert_close(res.masked, q)
    assert res.drop.dtype == torch.float64 and res.drop.shape == (3,)
    # the explainer itself (called once, on the clean argmax), and the thin wrappers
    top = gapnet(gap_x).argmax(1)
    via = xm.confidence_change(gapnet, gap_x, cam)
    torch.testing.assert_close(via.clean, gapnet(gap_x).softmax(1)[torch.arange(3), top].detach())
    torch.testing.assert_close(xm.average_drop(gapnet, gap_x, cam(gap_x, target=top)), via.drop)
    torch.testing.assert_close(xm.increase_in_confidence(gapnet, gap_x, cam), via.increase)
    raw = xm.confidence_change(gapnet, gap_x, e, [0, 1, 2], normalize=False, relative=False, score="logit")
    with torch.no_grad():
        lp, lq = gapnet(gap_x)[torch.arange(3), [0, 1, 2]], gapnet(gap_x * e)[torch.arange(3), [0, 1, 2]]
    torch.testing.assert_close(raw.drop, torch.relu(lp - lq))


def test_bad_input(gapnet, gap_x):
    maps = torch.rand(3, 1, 6, 8, dtype=torch.float64)
    with pytest.raises(xt.XaiError, match="normalize must be True or False"):
        xm.average_drop(gapnet, gap_x, maps, normalize="yes")
    with pytest.raises(xt.XaiError, match="score must be one of"):
        xm.average_drop(gapnet, gap_x, maps, score="accuracy")
    with pytest.raises(xt.XaiError, match="must have shape"):
        xm.increase_in_confidence(gapnet, gap_x, maps[:, :, :4])
    with pytest.raises(xt.XaiError, match="needs the explainer"):
        xm.arcc(gapnet, gap_x, maps)


@pytest.mark.parity
def test_drop_and_increase_equal_pytorch_grad_cam():
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, x = _net(), _x(4)
    targets = [ClassifierOutputTarget(c) for c in (0, 1, 2, 3)]
    theirs_net = copy.deepcopy(net)
    with pgc.GradCAM(model=theirs_net, target_layers=[theirs_net.features]) as cam:
        cams = cam(input_tensor=x, targets=targets)
    drop = DropInConfidence()(x, cams, targets, theirs_net)
    inc = IncreaseInConfidence()(x, cams, targets, theirs_net)
    ours = xm.confidence_change(net, x, torch.from_numpy(cams), [0, 1, 2, 3], normalize=False, relative=False,
                                score="logit")
    np.testing.assert_allclose(ours.drop.numpy(), drop, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours.increase.numpy(), inc)


@pytest.mark.parity
def test_average_drop_and_increase_equal_torchcam():
    from torchcam.methods import GradCAM
    from torchcam.metrics import ClassificationMetric

    net, x = _net(), _x(4)
    classes = [0, 1, 2, 3]
    extractor = GradCAM(net, target_layer="features", input_shape=(3, 8, 8))
    try:
        metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
        metric.update(x, class_idx=classes)
        summary = metric.summary()
        scores = torch.softmax(net(x), -1)
        cam = extractor.fuse_cams(extractor(classes, scores))  # normalised, at the input size here
    finally:
        extractor.remove_hooks()
    ours = xm.confidence_change(net, x, cam.detach(), classes, normalize=False)
    assert abs(float(ours.drop.mean()) - summary["avg_drop"]) < 1e-5
    assert float(ours.increase.mean()) == summary["conf_increase"]


@pytest.mark.parity
def test_arcc_equals_pytorch_grad_cam(monkeypatch):
    from pytorch_grad_cam.metrics import road as pgc_road
    from pytorch_grad_cam.metrics.arcc import ARCC
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    defaults = pgc_road.NoisyLinearImputer.__init__.__defaults__
    monkeypatch.setattr(pgc_road.NoisyLinearImputer.__init__, "__defaults__", (0.0, *defaults[1:]))  # no noise
    net, x = _net(), _x(3)  # 8 x 8: its percentiles 20..80 remove the pixel counts our fractions do
    classes = [0, 1, 3]
    targets = [ClassifierOutputTarget(c) for c in classes]
    ramp = torch.linspace(0.5, 1.5, 64).reshape(8, 8)

    def maps(z):  # a tie-free map in [0, 1] (with ties, its percentile removes them all; we remove exactly k)
        m = z.mean(1) * ramp
        m = m - m.flatten(1).min(1).values[:, None, None]
        return m / m.flatten(1).max(1).values[:, None, None]

    class Method:  # what its ARCC calls as base_method(input_tensor=, targets=)
        def __call__(self, input_tensor, targets):
            return maps(input_tensor).numpy()

    theirs = ARCC(Method())(x, maps(x).numpy(), targets, copy.deepcopy(net))
    ours = xm.arcc(net, x, lambda z, target=None: maps(z), classes, noise=0.0)
    np.testing.assert_allclose(ours.arcc.numpy(), theirs, rtol=1e-4)
    assert int((ours.road > 0).sum()) >= 2  # not only the degenerate (zero ROAD) case
    assert ours.road.shape == (3,) and float(ours.complexity.max()) <= 1.0
