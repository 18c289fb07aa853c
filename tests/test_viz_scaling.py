"""viz's normalisations (xai_torch/viz/scaling.py): closed forms and parity with Captum and PAIR saliency."""
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


def test_scaled_maps():
    m = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    s = viz.scaled(m)
    np.testing.assert_allclose(s[0], [[0.0, 0.5], [0.25, 1.0]])
    assert np.all(s[1] == 0)


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
