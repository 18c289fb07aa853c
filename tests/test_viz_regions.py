"""viz's region pictures (xai_torch/viz/regions.py): LIME's superpixel overlay, XRAI's top fraction."""
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import viz


def _quadrants(n=16):
    seg = np.zeros((n, n), np.int64)
    seg[:n // 2, n // 2:], seg[n // 2:, :n // 2], seg[n // 2:, n // 2:] = 1, 2, 3
    return seg


def test_superpixel_overlay_colours_and_boundaries():
    from skimage.segmentation import find_boundaries

    img = np.full((16, 16, 3), 128, np.uint8)
    seg = _quadrants()
    w = np.array([0.5, -1.0, 0.0, 0.2])
    out = viz.superpixel_overlay(img, seg, w, alpha=0.6).astype(int)
    edge = find_boundaries(np.where(seg != 2, seg + 1, 0), mode="outer", background=0)
    assert edge.any() and np.all(out[edge] == (255, 255, 0))  # yellow boundaries around the kept segments
    inner = ~edge
    g0, r1 = out[(seg == 0) & inner], out[(seg == 1) & inner]
    assert np.all(g0[:, 1] > 128) and np.all(g0[:, [0, 2]] < 128)  # positive: greener
    assert np.all(r1[:, 0] > 128) and np.all(r1[:, 1:] < 128)  # negative: redder
    assert np.all(out[(seg == 2) & inner] == 128)  # zero weight: the photo, untouched
    np.testing.assert_array_equal(r1[0], [round(0.4 * 128 + 0.6 * 255), round(0.4 * 128), round(0.4 * 128)])
    assert g0[0, 1] - 128 < r1[0, 0] - 128  # weaker evidence, lighter tint
    # top=1 keeps only the largest |w|; a tie keeps the lower label; threshold drops small weights
    only = viz.superpixel_overlay(img, seg, w, top=1, boundaries=None)
    assert np.all(only[seg == 0] == 128) and np.all(only[seg == 1][:, 0] > 128)
    tie = viz.superpixel_overlay(img, seg, [1.0, -1.0, 0.0, 0.0], top=1, boundaries=None)
    assert np.all(tie[seg == 1] == 128) and np.all(tie[seg == 0][:, 1] > 128)
    assert np.all(viz.superpixel_overlay(img, seg, w, threshold=0.3, boundaries=None)[seg == 3] == 128)
    every = viz.superpixel_overlay(img, seg, w, boundaries="all")
    all_edges = find_boundaries(seg + 1, mode="outer", background=0)
    assert all_edges.sum() > edge.sum() and np.all(every[all_edges] == (255, 255, 0))
    # a mapping and a (1, H, W) tensor give the same picture
    same = viz.superpixel_overlay(img, torch.from_numpy(seg)[None], dict(enumerate(w)), alpha=0.6)
    np.testing.assert_array_equal(same, out)
    with pytest.raises(xt.XaiError, match="one value per segment label 0..3"):
        viz.superpixel_overlay(img, seg, w[:3])
    with pytest.raises(xt.XaiError, match="integer labels"):
        viz.superpixel_overlay(img, seg.astype(float), w)


def test_superpixel_overlay_of_a_lime_explanation(small):
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    seg = torch.from_numpy(_quadrants(12))
    res = xt.region.LIME(small, samples=40, seed=0).explain(x, segments=seg)
    photo = viz.as_image(x[0])
    pic = viz.superpixel_overlay(photo, res.segments[0], res.weights[0], boundaries=None, alpha=1.0)
    w = res.weights[0].double().numpy()
    top = int(np.abs(w).argmax())
    expected = (0, 255, 0) if w[top] > 0 else (255, 0, 0)
    assert np.all(pic[seg.numpy() == top] == expected)  # the strongest superpixel is painted at full alpha


def test_top_fraction_exact_with_ties():
    flat = np.zeros((10, 10))
    mask = viz.top_fraction_mask(flat, 0.3)
    assert mask.sum() == 30 and mask.ravel()[:30].all()  # ties: raster order, exactly 30 %
    levels = np.random.default_rng(0).integers(0, 3, (40, 40)).astype(float)  # the cut falls inside a tie
    mask = viz.top_fraction_mask(levels, 0.5).ravel()
    k, flat_levels = 800, levels.ravel()
    cut = np.sort(flat_levels)[::-1][k - 1]
    tied = np.flatnonzero(flat_levels == cut)
    need = k - (flat_levels > cut).sum()
    assert mask.sum() == k and mask[flat_levels > cut].all() and not mask[flat_levels < cut].any()
    assert mask[tied[:need]].all() and not mask[tied[need:]].any()  # the earliest tied pixels win
    heat = torch.rand(1, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    mask = viz.top_fraction_mask(heat, 0.3)
    assert mask.sum() == 30 and heat[0, 0][mask].min() > heat[0, 0][~mask].max()
    img = np.random.default_rng(0).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    out = viz.top_fraction_overlay(img, heat, fraction=0.3, dim=0.3)
    np.testing.assert_array_equal(out[mask], img[mask])
    np.testing.assert_array_equal(out[~mask], np.round(img[~mask] * 0.3).astype(np.uint8))
    assert np.all(viz.top_fraction_overlay(img, heat, dim=0)[~mask] == 0)
    assert viz.top_fraction_mask(heat, 0).sum() == 0 and viz.top_fraction_mask(heat, 1).all()
    with pytest.raises(xt.XaiError, match="fraction"):
        viz.top_fraction_mask(heat, 30)
    with pytest.raises(xt.XaiError, match="one image's map"):
        viz.top_fraction_mask(torch.zeros(2, 1, 4, 4))
