"""PIC's curve side: closed forms of the interpolation, the curve and its aggregation, and
parity with PAIR's ``aggregate_individual_pic_results``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d

from xai_torch.errors import XaiError
from xai_torch.metrics.pic_curve import aggregate, interpolate_curve, pic_curve


def test_interpolate_curve_duplicate_rule_closed_form():
    # points in PAIR's order: thresholds, then (0, 0) and (1, 1)
    cx, cy = interpolate_curve([0.5, 0.5, 0.0, 1.0], [0.2, 0.6, 0.0, 1.0], 4)
    assert torch.equal(cx, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    # left of 0.5 the segment ends at the first duplicate (0.2); from 0.5 on it starts at the last (0.6)
    torch.testing.assert_close(cy, torch.tensor([0.0, 0.1, 0.6, 0.8, 1.0], dtype=torch.float64))
    # a threshold whose x clips to 0 is shadowed by the appended (0, 0)
    _, cy = interpolate_curve([0.0, 0.5, 0.0, 1.0], [0.3, 0.5, 0.0, 1.0], 4)
    torch.testing.assert_close(cy, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    # thresholds at x = 1 set where the curve heads, the appended (1, 1) only the last sample
    _, cy = interpolate_curve([1.0, 1.0, 0.0, 1.0], [0.4, 0.8, 0.0, 1.0], 4)
    torch.testing.assert_close(cy, torch.tensor([0.0, 0.1, 0.2, 0.3, 1.0], dtype=torch.float64))
    # "dedupe, keep the max y" would give a different curve: 0.8 * 0.75 at x = 0.75, not 0.3
    assert cy[3] != 0.8 * 0.75


def test_interpolate_curve_equals_interp1d_with_ties():
    g = np.random.default_rng(0)
    xs = np.round(g.random((4, 9)) * 4) / 4  # many ties, 0 and 1 included
    ys = g.random((4, 9))
    cx, cy = interpolate_curve(torch.from_numpy(xs), torch.from_numpy(ys), 50)
    for row in range(4):
        px = np.append(xs[row], [0.0, 1.0])
        py = np.append(ys[row], [0.0, 1.0])
        ref = interp1d(px, py)(np.linspace(0, 1, 51))
        _, mine = interpolate_curve(px, py, 50)
        assert np.array_equal(mine.numpy(), ref)
    assert cy.shape == (4, 51) and cx.shape == (51,)
    # outside the points' range the end values extend, as np.interp
    _, cy = interpolate_curve([0.25, 0.75], [2.0, 4.0], 4)
    assert cy.tolist() == [2.0, 2.0, 3.0, 4.0, 4.0]
    _, cy = interpolate_curve([0.5], [7.0], 2)
    assert cy.tolist() == [7.0, 7.0, 7.0]


def test_pic_curve_closed_form():
    # two thresholds with the same information (x = 0.5), scores 0.5 then 0.25 (normalised)
    e = [[100.0, 150.0, 150.0, 200.0]]
    s = [[0.2, 0.6, 0.4, 1.0]]
    cx, cy, auc = pic_curve(e, s, num_points=4)
    torch.testing.assert_close(cy, torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(auc, torch.tensor([0.5], dtype=torch.float64))
    assert cx.shape == (1, 5)
    # without the running max the last duplicate (0.25) starts the right segment
    _, cy, auc = pic_curve(e, s, num_points=4, keep_monotonous=False)
    torch.testing.assert_close(cy, torch.tensor([[0.0, 0.25, 0.25, 0.625, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(auc, torch.tensor([0.40625], dtype=torch.float64))
    # clipping: an image above the original counts as 1, below the blurred as 0
    _, _, auc = pic_curve([[0.0, 2.0, 1.0]], [[0.0, -1.0, 1.0]], num_points=2)
    # points (1, 0), (0, 0), (1, 1): y = 0 on [0, 1), 1 at 1 -> trapezoid 0.5 * (0 + 0) / 2 + 0.5 * (0 + 1) / 2
    torch.testing.assert_close(auc, torch.tensor([0.25], dtype=torch.float64))


def test_aggregate_closed_form():
    # PAIR's pic_test example: mean of two curves on 5 points
    ys = torch.tensor([[0.0, 0.2, 0.4, 0.6, 1.0], [0.0, 0.4, 0.4, 0.4, 1.0]], dtype=torch.float64)
    agg = aggregate(ys, "mean")
    torch.testing.assert_close(agg.curve_y, torch.tensor([0.0, 0.3, 0.4, 0.5, 1.0], dtype=torch.float64))
    assert float(agg.auc) == pytest.approx((0 + 0.3) / 8 + (0.3 + 0.4) / 8 + (0.4 + 0.5) / 8 + (0.5 + 1.0) / 8)
    # median: the middle row (odd), the mean of the middle two (even); NaN rows are left out
    ys3 = torch.tensor([[0.0, 0.1, 1.0], [0.0, 0.9, 1.0], [0.0, 0.5, 1.0], [float("nan")] * 3], dtype=torch.float64)
    agg = aggregate(ys3)
    assert agg.curve_y.tolist() == [0.0, 0.5, 1.0] and agg.images == 3
    agg = aggregate(ys3[:2])
    assert agg.curve_y.tolist() == [0.0, 0.5, 1.0] and agg.images == 2
    with pytest.raises(XaiError, match="skipped"):
        aggregate(ys3[3:])
    with pytest.raises(XaiError, match="method"):
        aggregate(ys, "max")


@pytest.mark.parity
def test_parity_pair_aggregate(monkeypatch):
    from saliency.metrics import pic as P

    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # removed in NumPy 2.4
    g = np.random.default_rng(4)
    g.integers(0, 256, (24, 20, 3), dtype=np.uint8)  # the draws of the bokeh parity test, then the curves
    for _ in range(3):
        g.random((24, 20))
    # aggregation of odd and even counts (the median of an even count averages the middle two)
    ys = np.sort(g.random((5, 11)), axis=1)
    ys[:, 0], ys[:, -1] = 0.0, 1.0
    xs = np.linspace(0, 1, 11)
    for n in (4, 5):
        rows = [P.PicMetricResult(xs, y, [], [], [], 0.0) for y in ys[:n]]
        for method in ("median", "mean"):
            ref = P.aggregate_individual_pic_results(rows, method)
            mine = aggregate(torch.from_numpy(ys[:n]), method)
            np.testing.assert_allclose(mine.curve_y.numpy(), ref.curve_y, rtol=0, atol=1e-15)
            assert np.array_equal(mine.curve_x.numpy(), ref.curve_x)
            assert float(mine.auc) == pytest.approx(float(ref.auc), abs=1e-15)
