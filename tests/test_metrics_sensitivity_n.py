"""Sensitivity-n: the grid, feature maps and subsets, correlation 1 for gradient x input of a
linear model, model-call counts, baseline, seeds, bad inputs and no trace."""
from __future__ import annotations

import math

import pytest
import torch

import xai_torch as xt
from xai_torch.errors import XaiError
from xai_torch.metrics._common import correlation
from xai_torch.metrics.sensitivity_n import feature_map, sensitivity_n, sensitivity_n_grid, subset_masks

from conftest import Counting, Linear, SmallNet, assert_no_trace, lin_x, snapshot


# --------------------------------------------------------------------------------------------
# Model-free numerics
def test_pearson_and_grid():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    assert torch.allclose(correlation(a, 3 * a + 1), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(correlation(a, -a), -torch.ones(1, dtype=torch.float64))
    assert torch.isnan(correlation(a, torch.ones_like(a))).all()
    b = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)  # centred: cov -1, squares 5 and 1
    assert correlation(a, b).item() == pytest.approx(-1 / math.sqrt(5), abs=1e-12)
    assert sensitivity_n_grid(144) == [1, 2, 3, 5, 8, 14, 24, 40, 68, 115]
    assert sensitivity_n_grid(1) == [1]



def test_feature_map_and_subsets():
    fmap, d = feature_map(5, 7, 3)  # cells of 3 px, the last row/col cropped: 2 x 3 features
    assert d == 6
    assert fmap.view(5, 7)[0].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert fmap.view(5, 7)[:, 0].tolist() == [0, 0, 0, 3, 3]
    keys = torch.rand(4, 10, generator=torch.Generator().manual_seed(0))
    counts = torch.tensor([1, 3, 10, 5])
    m = subset_masks(keys, counts)
    assert m.sum(1).tolist() == counts.tolist()
    assert torch.equal(m[1], keys[1] <= keys[1].sort().values[2])  # the 3 smallest keys


# --------------------------------------------------------------------------------------------
# The metric
@pytest.mark.parametrize("features", ["pixel", 3])
def test_sensitivity_n_linear_gxi_is_one(features):
    model, x = Linear(), lin_x()
    gxi = xt.InputXGradient(model)(x, target=3)
    res = sensitivity_n(model, x, gxi, target=3, subsets=12, features=features)
    d = 36 if features == "pixel" else 4
    assert res.n.tolist() == sensitivity_n_grid(d)
    assert res.correlation.shape == (2, len(res.n)) and res.sums.shape == (2, len(res.n), 12)
    assert torch.allclose(res.sums, res.deltas, rtol=1e-10, atol=1e-12)
    assert torch.allclose(res.correlation, torch.ones_like(res.correlation), atol=1e-9)
    # the subsets have n features each: with a constant relevance the sums count them
    ones = sensitivity_n(model, x, torch.ones(2, 1, 6, 6), target=3, n=[1, 2], subsets=3, features=features)
    per = 1 if features == "pixel" else 9
    assert ones.sums[:, 0].eq(per).all() and ones.sums[:, 1].eq(2 * per).all()


def test_sensitivity_n_calls_baseline_and_seeds(small, small_x):
    counting = Counting(small, keep_inputs=True)
    attr = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    res = sensitivity_n(counting, small_x, attr, n=[1, 5], subsets=3, baseline=-7.0, batch_size=7)
    assert counting.sizes == [3, 7, 7, 4]
    # rows are image-major: (image, n, draw, C, H, W)
    z = torch.cat(counting.inputs[1:]).view(3, 2, 3, 3, 12, 12)
    removed = (z == -7.0).all(3)
    assert removed[:, 0].flatten(2).sum(-1).eq(1).all() and removed[:, 1].flatten(2).sum(-1).eq(5).all()
    assert torch.equal(z[1, 0][~removed[1, 0][:, None].expand(-1, 3, -1, -1)],
                       small_x[1].expand(3, -1, -1, -1)[~removed[1, 0][:, None].expand(-1, 3, -1, -1)])
    # the subsets of the same seed do not depend on batch_size
    again = sensitivity_n(small, small_x, attr, n=[1, 5], subsets=3, baseline=-7.0)
    assert torch.equal(res.sums, again.sums) and torch.allclose(res.deltas, again.deltas, rtol=1e-12)
    other = sensitivity_n(small, small_x, attr, n=[1, 5], subsets=3, baseline=-7.0, seed=1)
    assert not torch.equal(res.sums, other.sums)


def test_sensitivity_n_draws_per_image(small, small_x):
    """Image i's subsets depend only on (seed, i): the same alone, in a batch of any size and for
    any batch_size (issue 19 item 3; they used to be drawn as rand((B, D)) blocks)."""
    attr = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    full = sensitivity_n(small, small_x, attr, n=[5, 30], subsets=4, seed=2)
    for b in (1, 2):
        for batch_size in (None, 1, 5):
            part = sensitivity_n(small, small_x[:b], attr[:b], n=[5, 30], subsets=4, seed=2, batch_size=batch_size)
            assert torch.equal(part.sums, full.sums[:b])  # no model involved: bit for bit
            torch.testing.assert_close(part.deltas, full.deltas[:b], rtol=1e-5, atol=1e-6)
    # the removed pixels themselves: image 0's perturbed inputs are the same alone and in the batch
    seen = []
    for xs in (small_x, small_x[:1]):
        counting = Counting(small, keep_inputs=True)
        sensitivity_n(counting, xs, attr[:len(xs)], n=[5], subsets=4, baseline=-7.0, seed=2)
        seen.append(torch.cat(counting.inputs[1:])[:4])  # image 0's 4 subsets come first
    assert torch.equal(seen[0], seen[1])
    # the subsets depend on the position, not on the image: other images, the same relevance per
    # pixel (all distinct), the same sums
    rel = torch.arange(144.0).view(1, 1, 12, 12).expand(3, -1, -1, -1)
    flipped = sensitivity_n(small, small_x.flip(0), rel, n=[5, 30], subsets=4, seed=2)
    assert torch.equal(flipped.sums, sensitivity_n(small, small_x, rel, n=[5, 30], subsets=4, seed=2).sums)
    assert not torch.equal(flipped.sums[0], flipped.sums[1])



# --------------------------------------------------------------------------------------------
# Bad inputs: refused before any model call; no trace
def test_sensitivity_n_bad_inputs_before_any_call(small, small_x):
    counting = Counting(small)
    attr = torch.ones(3, 3, 12, 12)
    bad = [
        lambda: sensitivity_n(counting, small_x, attr, subsets=1),
        lambda: sensitivity_n(counting, small_x, attr, n=[0, 3]),
        lambda: sensitivity_n(counting, small_x, attr, n=145),
        lambda: sensitivity_n(counting, small_x, attr, features="patch"),
        lambda: sensitivity_n(counting, small_x, attr, features=13),
        lambda: sensitivity_n(counting, small_x, attr, reduce="median"),
        lambda: sensitivity_n(counting, small_x, attr, baseline=float("nan")),
        lambda: sensitivity_n(counting, small_x, torch.full((3, 12, 12), float("nan"))),
    ]
    for call in bad:
        with pytest.raises(XaiError):
            call()
    assert counting.sizes == []


def test_sensitivity_n_no_trace(small_x):
    torch.manual_seed(0)
    model = SmallNet().train()  # BatchNorm statistics must come back
    attr = torch.randn(3, 3, 12, 12)
    before = snapshot(model, small_x, attr)
    with pytest.warns(xt.XaiWarning):
        sensitivity_n(model, small_x, attr, n=[2], subsets=3)
    assert_no_trace(before, snapshot(model, small_x, attr))
