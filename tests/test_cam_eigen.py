"""EigenCAM, EigenGradCAM and the eigen_smooth / aug_smooth keywords of every CAM
(xai_torch/cam/eigen.py, xai_torch/cam/smooth.py): closed forms, parity with pytorch-grad-cam."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_torch as xt

from cam_helpers import acts_of, make_bnnet, pgc_maps, pgc_scale


def _projection(a: torch.Tensor) -> torch.Tensor:
    """NumPy reference: each image's pixels x channels, centred, on the first right singular vector."""
    out = []
    for img in a.numpy():
        flat = img.reshape(img.shape[0], -1).T
        flat = flat - flat.mean(0)
        proj = flat @ np.linalg.svd(flat)[2][0]
        proj = -proj if abs(proj.min()) > abs(proj.max()) else proj  # the sign convention
        out.append(proj.reshape(img.shape[1:]))
    return torch.from_numpy(np.stack(out))[:, None]


def test_eigen_cam_closed_form_class_agnostic_without_backward(gapnet, gap_x):
    res = xt.EigenCAM(gapnet, layer="features").explain(gap_x, target=[0, 1, 2])
    torch.testing.assert_close(res.layer_maps[0], torch.relu(_projection(acts_of(gapnet, gap_x))))
    assert float(res.attributions.max()) > 0
    torch.testing.assert_close(xt.EigenCAM(gapnet, layer="features")(gap_x, target=3), res.attributions)
    with torch.no_grad():  # no gradient needed
        torch.testing.assert_close(xt.EigenCAM(gapnet, layer="features")(gap_x), res.attributions)
    # EigenGradCAM: the projection of g * A (g = W[c] / hw on a GAP -> FC head)
    g = gapnet.fc.weight.detach()[[0, 1, 2]][:, :, None, None] / 48
    grad = xt.EigenGradCAM(gapnet, layer="features").explain(gap_x, target=[0, 1, 2])
    torch.testing.assert_close(grad.layer_maps[0], torch.relu(_projection(g * acts_of(gapnet, gap_x))))
    # eigen_smooth on Grad-CAM projects w_k A_k: the same as EigenGradCAM here (g is constant in space)
    torch.testing.assert_close(xt.GradCAM(gapnet, layer="features", eigen_smooth=True)(gap_x, [0, 1, 2]),
                               grad.attributions)


def test_aug_smooth_averages_six_scaled_maps(gapnet, gap_x):
    cam = xt.GradCAM(gapnet, layer="features")
    expect = 0
    for flip in (False, True):
        for f in (0.9, 1.0, 1.1):
            z = gap_x.flip(-1) if flip else gap_x
            m = xt.viz.minmax(xt.viz.minmax(cam(z * f, target=[0, 1, 2]), eps=1e-7), eps=1e-7)
            expect = expect + (m.flip(-1) if flip else m)
    res = xt.GradCAM(gapnet, layer="features", aug_smooth=True).explain(gap_x, target=[0, 1, 2])
    torch.testing.assert_close(res.attributions, expect / 6)
    torch.testing.assert_close(res.layer_maps[0], cam.explain(gap_x, target=[0, 1, 2]).layer_maps[0])
    for bad in ({"aug_smooth": 1}, {"eigen_smooth": "yes"}):
        with pytest.raises(xt.XaiError, match="must be True or False"):
            xt.GradCAM(gapnet, layer="features", **bad)


@pytest.fixture
def sign_corrected(monkeypatch):
    """pytorch-grad-cam's projection with its own sign correction (Seg-Eigen-CAM's, which ours
    uses): its plain projection keeps LAPACK's sign, which flips under 1e-11 changes."""
    import pytorch_grad_cam.base_cam as base
    import pytorch_grad_cam.eigen_cam as eigen
    import pytorch_grad_cam.eigen_grad_cam as eigen_grad
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction as fixed

    for module in (base, eigen, eigen_grad):
        monkeypatch.setattr(module, "get_2d_projection", fixed)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["EigenCAM", "EigenGradCAM"])
def test_eigen_cams_equal_pytorch_grad_cam(name, sign_corrected):
    import pytorch_grad_cam as pgc

    model = make_bnnet()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    theirs = pgc_maps(getattr(pgc, name), model, ["p"], x, [0, 1, 2])
    ours = getattr(xt, name)(model, layer="p")(x, target=[0, 1, 2])[:, 0]
    torch.testing.assert_close(pgc_scale(pgc_scale(ours)), theirs, rtol=0, atol=1e-5)


@pytest.mark.parity
@pytest.mark.parametrize("name,eigen,aug", [("GradCAM", True, False), ("GradCAM", False, True),
                                            ("LayerCAM", True, True)])
def test_eigen_and_aug_smooth_equal_pytorch_grad_cam(name, eigen, aug, sign_corrected):
    import pytorch_grad_cam as pgc

    model = make_bnnet()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = pgc_maps(getattr(pgc, name), model, ["p"], x, [1, 2], eigen_smooth=eigen, aug_smooth=aug)
    ours = getattr(xt, name)(model, layer="p", eigen_smooth=eigen, aug_smooth=aug)(x, target=[1, 2])[:, 0]
    ours = ours if aug else pgc_scale(pgc_scale(ours))  # aug maps are already scaled (mean of six)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
