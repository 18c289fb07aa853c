"""viz's grids and files (xai_torch/viz/grids.py): captioned grids, PNG colour order and modes."""
import cv2
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import viz


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


def test_grid_errors():
    a, b = np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)
    with pytest.raises(xt.XaiError, match="panel \\(0, 1\\) is \\(5, 4\\)"):
        viz.labelled_grid([[a, b]])
    with pytest.raises(xt.XaiError, match="at least one row"):
        viz.labelled_grid([])
    with pytest.raises(xt.XaiError, match="uint8"):
        viz.save_png("never.png", np.zeros((2, 2, 3)))


def test_grid_labels_fit_their_columns():
    a = np.full((20, 30, 3), 200, np.uint8)
    grid = viz.labelled_grid([[a, a / 255.0], [a[..., 0], a]], ["a very long method name indeed", ""], pad=2,
                             row_labels=["cat", "dog"], row_label_width=40)
    assert grid.shape == (22 + 2 * 22 + 2, 40 + 2 * 32 + 2, 3)
    band = grid[:22]
    col0, col1 = band[:, 42:72], band[:, 74:]
    assert (col0 < 200).any() and np.all(col1 == 255)  # the long caption was shrunk / cut to its column
    assert (grid[22:, :38] < 200).any()  # row labels drawn
    np.testing.assert_array_equal(grid[24:44, 42:72], a)
    np.testing.assert_array_equal(viz.labelled_grid([[a]], column_labels=["x"]), viz.labelled_grid([[a]], ["x"]))


def test_save_png_colour_order_and_modes(tmp_path):
    from PIL import Image

    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 0, 255)
    p = viz.save_png(tmp_path / "a" / "rgb.png", torch.from_numpy(rgb))
    with Image.open(p) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (5, 3)
        np.testing.assert_array_equal(np.asarray(im), rgb)
    rgba = np.dstack([rgb, np.full((3, 5), 128, np.uint8)])
    with Image.open(viz.save_png(tmp_path / "rgba.png", rgba)) as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im), rgba)
    grey = np.arange(15, dtype=np.uint8).reshape(3, 5)
    np.testing.assert_array_equal(cv2.imread(str(viz.save_png(tmp_path / "g.png", grey[..., None])), 0), grey)
    with pytest.raises(xt.XaiError, match="\\*.png"):
        viz.save_png(tmp_path / "x.jpg", rgb)
