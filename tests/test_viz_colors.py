"""viz's colour maps and overlays (xai_torch/viz/colors.py)."""
import cv2
import numpy as np
import pytest

import xai_torch as xt
from xai_torch import viz


def test_colormaps_by_name_and_alpha():
    heat = np.linspace(0, 1, 30).reshape(5, 6)
    levels = np.uint8(heat * 255)
    for name in ("jet", "viridis", "inferno", "TURBO"):
        expected = cv2.applyColorMap(levels, getattr(cv2, f"COLORMAP_{name.upper()}"))[..., ::-1]
        np.testing.assert_array_equal(viz.colorize(heat, name), expected)
    assert tuple(viz.colorize(np.ones((1, 1)), "jet")[0, 0]) == (128, 0, 0)  # dark red at the top of jet
    assert not np.array_equal(viz.colorize(heat, "viridis"), viz.colorize(heat, "inferno"))
    np.testing.assert_array_equal(viz.colorize(heat, cv2.COLORMAP_HOT), viz.colorize(heat, "hot"))
    img = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(viz.heatmap_overlay(img, heat, alpha=0.0), img)
    np.testing.assert_array_equal(viz.heatmap_overlay(img, heat, alpha=1.0, colormap="viridis"),
                                  viz.colorize(heat, "viridis"))
    half = viz.heatmap_overlay(img, heat, alpha=0.5, colormap="inferno").astype(int)
    assert np.abs(half - (img.astype(int) + viz.colorize(heat, "inferno")) / 2).max() <= 1
    with pytest.raises(xt.XaiError, match="unknown colormap 'nope'.*viridis"):
        viz.colorize(heat, "nope")
    with pytest.raises(xt.XaiError, match="alpha"):
        viz.heatmap_overlay(img, heat, alpha=1.5)


def test_signed_pictures():
    s = np.array([[-1.0, -0.5, 0.0, 0.5, 1.0, 3.0]])
    bwr = viz.signed_colorize(s)
    assert [tuple(p) for p in bwr[0]] == [(0, 0, 255), (128, 128, 255), (255, 255, 255), (255, 128, 128),
                                          (255, 0, 0), (255, 0, 0)]
    img = np.full((1, 6, 3), 50, np.uint8)
    over = viz.diverging_overlay(img, s, alpha=1.0, positive=(255, 0, 0), negative=(0, 0, 255))
    assert tuple(over[0, 0]) == (0, 0, 255) and tuple(over[0, 4]) == (255, 0, 0) and tuple(over[0, 2]) == (50,) * 3
    with pytest.raises(xt.XaiError, match="positive must be an \\(R, G, B\\)"):
        viz.signed_colorize(s, positive=(300, 0, 0))
