"""viz's inputs (xai_torch/viz/inputs.py): layouts, dtypes (half precision everywhere), images in any form."""
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import viz


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_maps(dtype):
    a = torch.randn(2, 3, 8, 8).to(dtype)
    assert viz.grayscale(a).shape == (2, 8, 8)
    assert viz.diverging(a).shape == (2, 8, 8)


def test_channels_last_arrays_and_layout_override():
    rng = np.random.default_rng(0)
    hwc = rng.normal(size=(6, 5, 3))
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    assert viz.as_maps(hwc).shape == (1, 3, 6, 5) and viz.as_maps(chw).shape == (1, 3, 6, 5)
    np.testing.assert_array_equal(viz.grayscale(hwc), viz.grayscale(chw))
    np.testing.assert_array_equal(viz.diverging(hwc[None]), viz.diverging(chw[None]))
    # an explicit layout wins over the guess: (3, 6, 5) read channels-last is 3 x 6 with 5 channels
    assert viz.as_maps(np.zeros((3, 6, 5)), layout="hwc").shape == (1, 5, 3, 6)
    with pytest.raises(xt.XaiError, match="NaN"):
        viz.grayscale(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(xt.XaiError, match="layout"):
        viz.as_maps(hwc, layout="nhwc")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_everywhere(dtype):
    a = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    exact = a.double()  # the same values: results must not depend on the storage dtype
    for fn in (viz.grayscale, viz.diverging, viz.captum_scale, viz.scaled):
        np.testing.assert_array_equal(fn(a), fn(exact))
    np.testing.assert_array_equal(viz.grayscale(a, method="captum"), viz.grayscale(exact, method="captum"))
    img = np.full((8, 8, 3), 90, np.uint8)
    heat = torch.rand(1, 1, 8, 8).to(dtype)
    np.testing.assert_array_equal(viz.heatmap_overlay(img, heat), viz.heatmap_overlay(img, heat.double()[0, 0].numpy()))
    np.testing.assert_array_equal(viz.top_fraction_mask(heat), viz.top_fraction_mask(heat.double()))
    seg = torch.arange(4).repeat_interleave(16).reshape(8, 8)
    w = torch.tensor([0.5, -1.0, 0.25, 0.0]).to(dtype)
    np.testing.assert_array_equal(viz.superpixel_overlay(img, seg, w), viz.superpixel_overlay(img, seg, w.double()))
    assert viz.grayscale(np.float16(a.float().numpy())).dtype == np.float32


def test_images_in_any_form():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    assert viz.as_image(rgb) is rgb
    np.testing.assert_array_equal(viz.as_image(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255), rgb)
    np.testing.assert_array_equal(viz.as_image(rgb / 255.0), rgb)
    grey = viz.as_image(rgb[..., 0])
    assert grey.shape == (5, 4, 3) and np.all(grey == rgb[..., :1])
    with pytest.raises(xt.XaiError, match="Undo the model's normalisation"):
        viz.as_image(rgb / 255.0 - 0.5)
