"""The map similarity functions: closed forms and parity with scipy / scikit-image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xai_torch.errors import XaiError
from xai_torch.metrics.similarity import hog_similarity, pearson, rank, spearman, ssim


def maps(b=3, h=30, w=30, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, h, w, generator=g, dtype=torch.float64)
    c = a + 0.8 * torch.randn(b, h, w, generator=g, dtype=torch.float64)
    if ties:
        a, c = (a * 2).round(), (c * 2).round()
    return a, c


# --------------------------------------------------------------------------------------------
# similarity functions: closed forms
def test_rank_averages_ties():
    v = torch.tensor([[3.0, 1.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [4.0, 3.0, 2.0, 1.0]])
    expected = torch.tensor([[3.5, 1.0, 3.5, 2.0], [2.5, 2.5, 2.5, 2.5], [4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    assert torch.equal(rank(v.double()), expected)


def test_spearman_closed_forms():
    a, _ = maps()
    assert torch.allclose(spearman(a, a), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(spearman(a, a.exp() * 5 - 2), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(spearman(a, -a), -torch.ones(3, dtype=torch.float64), atol=1e-12)
    # sign flips keep the magnitude order: absolute=True sees the same maps
    flip = torch.where(torch.rand(a.shape, generator=torch.Generator().manual_seed(3)) < 0.5, -1.0, 1.0)
    assert torch.allclose(spearman(a, a * flip, absolute=True), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert bool((spearman(a, a * flip) < 0.9).all())
    # ties, by hand: ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    t = spearman(torch.tensor([[1.0, 2.0, 2.0, 3.0]]), torch.tensor([[10.0, 20.0, 30.0, 40.0]]))
    assert t.dtype == torch.float64 and math.isclose(t.item(), math.sqrt(0.9), abs_tol=1e-12)
    # a constant map has no ranking: NaN, as scipy
    assert torch.isnan(spearman(torch.ones(1, 4, 4), torch.randn(1, 4, 4))).all()


def test_pearson_closed_forms():
    a, c = maps()
    assert torch.allclose(pearson(a, 2 * a + 1), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(pearson(a, -0.5 * a), -torch.ones(3, dtype=torch.float64), atol=1e-12)
    ref = torch.tensor([np.corrcoef(a[i].flatten(), c[i].flatten())[0, 1] for i in range(3)])
    assert torch.allclose(pearson(a, c), ref, atol=1e-12)


def test_ssim_and_hog_closed_forms():
    a, c = maps(h=32, w=40)
    assert torch.allclose(ssim(a, a), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert bool((ssim(a, c) < 0.9).all())
    assert torch.allclose(hog_similarity(a, a), torch.ones(3, dtype=torch.float64), atol=1e-12)
    # SSIM is not scale invariant, HOG nearly is (block normalisation)
    assert bool((ssim(a, 3 * a, data_range=4.0) < 0.99).all())
    assert torch.allclose(hog_similarity(a, 3 * a), torch.ones(3, dtype=torch.float64), atol=1e-6)


def test_similarity_bad_inputs():
    a, c = maps()
    with pytest.raises(XaiError, match="same shape"):
        spearman(a, c[:, :5])
    with pytest.raises(XaiError, match="at least 7x7"):
        ssim(a[:, :5, :5], c[:, :5, :5])
    with pytest.raises(XaiError, match="odd"):
        ssim(a, c, win_size=4)
    with pytest.raises(XaiError, match="at least 24x24"):
        hog_similarity(a[:, :20], c[:, :20])


# --------------------------------------------------------------------------------------------
# similarity functions: parity with scipy / scikit-image
@pytest.mark.parity
@pytest.mark.parametrize("ties", [False, True])
def test_spearman_parity_scipy(ties):
    from scipy.stats import spearmanr

    a, c = maps(b=4, ties=ties)
    for absolute in (False, True):
        ours = spearman(a, c, absolute=absolute)
        f = np.abs if absolute else (lambda v: v)
        ref = torch.tensor([spearmanr(f(a[i].flatten().numpy()), f(c[i].flatten().numpy())).statistic
                            for i in range(4)])
        assert (ours - ref).abs().max() < 1e-12


@pytest.mark.parity
@pytest.mark.parametrize("shape,win", [((30, 30), 7), ((25, 41), 7), ((16, 12), 5)])
def test_ssim_parity_skimage(shape, win):
    from skimage.metrics import structural_similarity

    a, c = maps(b=3, h=shape[0], w=shape[1], seed=4)
    ours = ssim(a, c, data_range=5.0, win_size=win)
    ref = [structural_similarity(a[i].numpy(), c[i].numpy(), data_range=5.0, win_size=win) for i in range(3)]
    assert (ours - torch.tensor(ref)).abs().max() < 1e-12
    # data_range=None: the joint range of each pair
    ours = ssim(a, c, win_size=win)
    ref = [structural_similarity(a[i].numpy(), c[i].numpy(), win_size=win,
                                 data_range=float(max(a[i].max(), c[i].max()) - min(a[i].min(), c[i].min())))
           for i in range(3)]
    assert (ours - torch.tensor(ref)).abs().max() < 1e-12


@pytest.mark.parity
def test_hog_parity_skimage():
    from scipy.stats import pearsonr
    from skimage.feature import hog

    a, c = maps(b=3, h=48, w=40, seed=5)
    for kw in ({}, {"pixels_per_cell": (16, 16), "cells_per_block": (2, 2)}):
        ours = hog_similarity(a, c, **kw)
        ref = [pearsonr(hog(a[i].numpy(), **kw), hog(c[i].numpy(), **kw)).statistic for i in range(3)]
        assert (ours - torch.tensor(ref)).abs().max() < 1e-12
