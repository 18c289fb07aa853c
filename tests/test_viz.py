import cv2
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import viz


def test_grayscale_closed_form():
    a = torch.zeros(1, 2, 1, 101)
    a[0, 0, 0] = torch.arange(101.0)  # |a| summed over channels = 0..100
    a[0, 1, 0] = -torch.arange(101.0)
    g = viz.grayscale(a)  # min 0, p99 = 2 * 99
    np.testing.assert_allclose(g[0, 0, :99], np.arange(99) / 99, rtol=1e-6)
    assert g[0, 0, 100] == 1.0 and g.dtype == np.float32


def test_diverging_keeps_sign_and_zero():
    a = torch.tensor([[-4.0, 0.0, 2.0, 4.0]])  # (H, W)
    d = viz.diverging(a, percentile=100)
    np.testing.assert_allclose(d[0], [[-1.0, 0.0, 0.5, 1.0]])
    assert np.all(viz.diverging(torch.zeros(3, 4, 4)) == 0)
    assert viz.grayscale(torch.zeros(1, 3, 4, 4)).max() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_maps(dtype):
    a = torch.randn(2, 3, 8, 8).to(dtype)
    assert viz.grayscale(a).shape == (2, 8, 8)
    assert viz.diverging(a).shape == (2, 8, 8)


def test_overlays_grid_and_png(tmp_path):
    img = np.full((8, 8, 3), 100, np.uint8)
    heat = np.linspace(0, 1, 64).reshape(8, 8)
    over = viz.heatmap_overlay(img, heat, alpha=0.5)
    assert over.shape == (8, 8, 3) and over.dtype == np.uint8
    signed = np.zeros((8, 8))
    signed[0, 0], signed[1, 1] = 1.0, -1.0
    div = viz.diverging_overlay(img, signed, alpha=1.0)
    assert tuple(div[0, 0]) == (0, 255, 0) and tuple(div[1, 1]) == (255, 0, 0) and tuple(div[2, 2]) == (100,) * 3
    grid = viz.labelled_grid([[img, over], [over, div]], ["a", "b"])
    path = viz.save_png(tmp_path / "sub" / "grid.png", grid)
    back = cv2.imread(str(path))[..., ::-1]
    np.testing.assert_array_equal(back, grid)
    with pytest.raises(xt.XaiError, match="resize"):
        viz.heatmap_overlay(img, np.zeros((4, 4)))
    with pytest.raises(xt.XaiError, match="uint8 RGB"):
        viz.heatmap_overlay(img.astype(float), heat)
    with pytest.raises(xt.XaiError, match="\\(B, C, H, W\\)"):
        viz.grayscale(torch.zeros(1, 1, 1, 2, 2))


def test_scaled_maps():
    m = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    s = viz.scaled(m)
    np.testing.assert_allclose(s[0], [[0.0, 0.5], [0.25, 1.0]])
    assert np.all(s[1] == 0)
    t = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    torch.testing.assert_close(viz.minmax(t, eps=1.0), torch.tensor([[0.0, 0.4], [0.2, 0.8]]))


def test_grid_errors():
    a, b = np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)
    with pytest.raises(xt.XaiError, match="panel \\(0, 1\\) is \\(5, 4\\)"):
        viz.labelled_grid([[a, b]])
    with pytest.raises(xt.XaiError, match="at least one row"):
        viz.labelled_grid([])
    with pytest.raises(xt.XaiError, match="uint8"):
        viz.save_png("never.png", np.zeros((2, 2, 3)))
