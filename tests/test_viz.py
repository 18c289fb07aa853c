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


# --- inputs: layouts, dtypes, images ----------------------------------------------------------------
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


# --- normalisations: closed forms and the reference libraries ---------------------------------------
def test_captum_scale_closed_form_and_signs():
    v = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # total mass 10
    # outlier 10 %: the cumulative sum 1, 3, 6, 10 first reaches 9 at the value 4
    np.testing.assert_allclose(viz.captum_scale(v, outlier_perc=10)[0, 0], [0.25, 0.5, 0.75, 1.0])
    # outlier 50 %: reaches 5 at 3, so 4 saturates
    np.testing.assert_allclose(viz.captum_scale(v, outlier_perc=50)[0, 0], [1 / 3, 2 / 3, 1.0, 1.0], rtol=1e-6)
    s = torch.tensor([[-4.0, -1.0, 1.0, 2.0]])
    np.testing.assert_allclose(viz.captum_scale(s, 0, "all")[0, 0], [-1.0, -0.25, 0.25, 0.5])
    np.testing.assert_allclose(viz.captum_scale(s, 0, "positive")[0, 0], [0, 0, 0.5, 1.0])
    np.testing.assert_allclose(viz.captum_scale(s, 0, "negative")[0, 0], [1.0, 0.25, 0, 0])  # Captum's sign flip
    np.testing.assert_allclose(viz.captum_scale(s, 0, "absolute")[0, 0], [1.0, 0.25, 0.25, 0.5])
    np.testing.assert_array_equal(viz.captum_scale(s, 0, "absolute_value"), viz.captum_scale(s, 0, "absolute"))
    assert np.all(viz.captum_scale(torch.zeros(2, 3, 4, 4)) == 0)  # Captum asserts here; we keep zeros
    a = torch.randn(2, 3, 6, 6)
    np.testing.assert_array_equal(viz.grayscale(a, method="captum", outlier_perc=5), viz.captum_scale(a, 5, "absolute"))
    np.testing.assert_array_equal(viz.diverging(a, method="captum"), viz.captum_scale(a, 2.0, "all"))
    with pytest.raises(xt.XaiError, match="sign must be one of"):
        viz.captum_scale(a, sign="both")
    with pytest.raises(xt.XaiError, match="method must be one of"):
        viz.grayscale(a, method="lime")


@pytest.mark.parity
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_captum_normalisation_parity(dtype):
    from captum.attr._utils.visualization import _normalize_attr

    rng = np.random.default_rng(3)
    batch = (rng.standard_t(3, size=(4, 3, 20, 17)) * rng.uniform(0.1, 10, size=(4, 1, 1, 1))).astype(dtype)
    batch[1] = np.abs(batch[1])  # one non-negative map: "negative" is all zeros there
    for sign, ours_sign in (("all", "all"), ("positive", "positive"), ("negative", "negative"),
                            ("absolute_value", "absolute")):
        for perc in (0, 2, 10):
            ours = viz.captum_scale(torch.from_numpy(batch), perc, ours_sign)
            for b in range(len(batch)):
                v = batch[b].sum(0)
                if sign == "negative" and not (v < 0).any():
                    assert np.all(ours[b] == 0)  # Captum fails on the zero scale
                    continue
                # (H, W, 1): Captum >= 0.8 takes (H, W) maps, older ones sum (H, W, C) over C
                ref = _normalize_attr(v[..., None], sign, perc).reshape(v.shape)
                np.testing.assert_allclose(ours[b], ref, rtol=1e-5, atol=1e-6, err_msg=f"{sign} {perc}")


@pytest.mark.parity
def test_pair_grayscale_and_diverging_parity():
    import saliency.core as sc

    rng = np.random.default_rng(4)
    for shape in ((24, 20, 3), (16, 16, 1)):
        hwc = rng.normal(size=shape) * rng.uniform(0.01, 5)
        for p in (99, 95, 100):
            np.testing.assert_allclose(viz.grayscale(hwc, p)[0], sc.VisualizeImageGrayscale(hwc, p), rtol=1e-6)
    # non-negative maps: PAIR's diverging form is our map moved to [0, 1]
    pos = np.abs(rng.normal(size=(20, 20, 3)))
    np.testing.assert_allclose((viz.diverging(pos)[0] + 1) / 2, sc.VisualizeImageDiverging(pos), rtol=1e-6)
    # mostly negative maps: PAIR's scale |p99(v)| is that of the few positives, and its output leaves [0, 1];
    # ours keeps the sign, 0 at 0, and is antisymmetric
    neg = -np.abs(rng.normal(size=(20, 20, 3)))
    neg[0, 0] = 0.01
    pair = sc.VisualizeImageDiverging(neg)
    assert pair.min() < 0 and np.mean(pair == -1) > 0.5  # PAIR's range bug (ALGORITHMS.md §0)
    ours = viz.diverging(neg)[0]
    assert ours.min() >= -1 and ours.max() <= 1 and np.mean(ours == -1) < 0.05 and ours[0, 0] > 0
    np.testing.assert_allclose(viz.diverging(-neg)[0], -ours)


# --- colours ----------------------------------------------------------------------------------------
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


# --- regions ----------------------------------------------------------------------------------------
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


# --- grids and files --------------------------------------------------------------------------------
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


# --- plots (matplotlib, lazily) ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    return net, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _png_bytes(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_plot_path_curve_of_integrated_gradients(tiny):
    from matplotlib.figure import Figure

    net, x = tiny
    ig = xt.IntegratedGradients(net, steps=8)
    black, white = ig.explain(x, baseline="black"), ig.explain(x, baseline="white")
    fig = viz.plot_path_curve(black, index=1)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and _png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    top, bottom = fig.axes
    np.testing.assert_allclose(top.lines[0].get_xdata(), black.alphas.numpy())
    np.testing.assert_allclose(top.lines[0].get_ydata(), black.path_probs[1, 0].double().numpy())
    np.testing.assert_allclose(bottom.lines[0].get_ydata(), black.path_grad[1, 0].double().numpy())
    assert top.get_ylabel() == "target probability"
    fig2 = viz.plot_path_curve([black, white], labels=["black", "white"], probability=False)
    assert [t.get_text() for t in fig2.axes[0].get_legend().get_texts()] == ["black", "white"]
    np.testing.assert_allclose(fig2.axes[0].lines[1].get_ydata(), white.path_scores[0, 0].double().numpy())
    arrays = {"alphas": np.linspace(0, 1, 5), "probs": np.linspace(0, 1, 5) ** 2}
    fig3 = viz.plot_path_curve(arrays)
    assert len(fig3.axes) == 1 and len(fig3.axes[0].lines) == 1
    with pytest.raises(xt.XaiError, match="explain"):
        viz.plot_path_curve(ig.explain(x).__class__(attributions=x, targets=None, scores=None))


def test_plot_causal_curves_and_randomization(tiny):
    net, x = tiny
    attr = xt.Gradient(net)(x)
    d = xt.metrics.deletion(net, x, attr, step=16)
    i = xt.metrics.insertion(net, x, attr, step=16)
    fig = viz.plot_causal_curves(d, i)
    dele, ins = fig.axes
    np.testing.assert_allclose(dele.lines[0].get_xdata(), d.fractions.numpy())
    np.testing.assert_allclose(dele.lines[0].get_ydata(), d.curve.double().mean(0).numpy())
    assert f"{float(d.auc.mean()):.3f}" in dele.get_legend().get_texts()[0].get_text()
    assert ins.get_title() == "Insertion"
    one = viz.plot_causal_curves({"gradient": d, "random": d}, index=0)
    np.testing.assert_allclose(one.axes[0].lines[1].get_ydata(), d.curve[0].double().numpy())
    res = xt.metrics.model_randomization(net, xt.Gradient(net), x, similarity=("spearman", "spearman_abs"))
    fig = viz.plot_randomization(res)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 + 1  # one line per similarity, plus the zero line
    ydata = ax.lines[0].get_ydata()
    assert ydata[0] == pytest.approx(float(res.rerun["spearman"].mean()))
    np.testing.assert_allclose(ydata[1:], res.scores["spearman"].double().mean(0).numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["intact (rerun)", *res.layers]
    table = viz.randomization_table({"gradient": res}, similarity="spearman_abs")
    lines = table.splitlines()
    assert lines[0] == "| step | gradient |" and len(lines) == 2 + 1 + len(res.layers)
    assert lines[-1].startswith(f"| {res.layers[-1]} | ")
    with pytest.raises(xt.XaiError, match="similarity 'ssim' is not in the result"):
        viz.plot_randomization(res, similarity="ssim")
    with pytest.raises(xt.XaiError, match="CausalCurve"):
        viz.plot_causal_curves(res)


def test_plots_without_matplotlib(monkeypatch, tiny):
    for name in [m for m in list(__import__("sys").modules) if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    net, x = tiny
    d = xt.metrics.deletion(net, x, xt.Gradient(net)(x), step=32)
    with pytest.raises(xt.XaiError, match="pip install xai_torch\\[plots\\]"):
        viz.plot_causal_curves(d)
    assert viz.plot_causal_curves is xt.plots.plot_causal_curves and "plot_path_curve" in dir(viz)
    assert viz.heatmap_overlay(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2))).shape == (2, 2, 3)
