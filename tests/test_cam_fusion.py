"""Multi-layer CAM fusion (xai_torch/cam/base.py): pytorch-grad-cam's order (min-max at layer
resolution, resize, mean, min-max) and zeros for maps whose range is rounding noise."""
from __future__ import annotations

import pytest
import torch
import torchvision

import xai_torch as xt


def test_one_by_one_layer_maps_fuse_to_zeros():
    """Issue 18.1: resnet18 at 32 px has 1 x 1 layer4 maps; fusing them must not paint noise."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = xt.GradCAM(model, layer=["layer4.1", "layer4.0"]).explain(x)
    assert res.layer_maps[0].shape == (2, 1, 1, 1)
    assert res.attributions.shape == (2, 1, 32, 32)
    assert bool((res.attributions == 0).all())


def test_fusion_scales_at_layer_resolution_first(gapnet, gap_x):
    """The fused map is min-max(mean(resize(min-max(layer map)))) with the 1e-7 of the reference."""
    res = xt.GradCAM(gapnet, layer=["features.1", "features.3"]).explain(gap_x, target=[0, 1, 2])
    def scale(m):
        lo = m.flatten(1).min(1).values[:, None, None, None]
        m = m - lo
        return m / (m.flatten(1).max(1).values[:, None, None, None] + 1e-7)
    expect = scale(torch.stack([scale(m) for m in res.layer_maps]).mean(0))  # same size: no resize
    torch.testing.assert_close(res.attributions, expect)


@pytest.mark.parity
def test_fusion_equals_pytorch_grad_cam():
    import pytorch_grad_cam as pgc

    from cam_helpers import make_bnnet, pgc_maps

    model = make_bnnet()  # "r" at 8 x 8, "p" and "c2" at 4 x 4: resized maps
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = pgc_maps(pgc.GradCAM, model, ["p", "r", "c2"], x, [2, 1])
    ours = xt.GradCAM(model, layer=["p", "r", "c2"])(x, target=[2, 1])[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-6)
