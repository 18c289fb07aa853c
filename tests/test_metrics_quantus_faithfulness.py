"""The Quantus faithfulness catalogue: faithfulness correlation, monotonicity (Arya; Nguyen &
Martinez), pixel flipping, region perturbation, IROF and sufficiency. Closed forms on a linear
model, model-call counts, bad inputs, no trace, and parity with Quantus 0.6 (with its bugs shown)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch.errors import XaiError
from xai_torch.metrics.faithfulness_sufficiency import standardized_distances

from conftest import Counting, Linear, Scaled, SmallNet, assert_no_trace, lin_x, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
M = xt.metrics


def _contrib(model: Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes, per-element contributions w_c * x to the class logit, baseline 0)."""
    with torch.no_grad():
        cls = model(x).argmax(1)
    return cls, model.w.detach()[cls].view_as(x) * x


def _trapz(c: torch.Tensor) -> torch.Tensor:
    return c.sum(-1) - (c[..., 0] + c[..., -1]) / 2


# --------------------------------------------------------------------------------------------
# Closed forms on F(x) = W vec(x) + c (logits, baseline 0): removing a set of features drops the
# logit by exactly the sum of their contributions w_i x_i.
def test_linear_closed_forms():
    model, x = Linear(), lin_x(2)
    cls, con = _contrib(model, x)                                   # (2, 3, 6, 6)
    f = (model(x)[torch.arange(2), cls]).detach()
    flat = con.flatten(1)

    res = M.faithfulness_correlation(model, x, con, runs=8, subset_size=10, baseline=0.0)
    torch.testing.assert_close(res.sums, res.deltas, rtol=0, atol=1e-9)
    torch.testing.assert_close(res.correlation, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    pix = M.faithfulness_correlation(model, x, con, runs=8, subset_size=5, baseline=0.0, features="pixel")
    torch.testing.assert_close(pix.sums, pix.deltas, rtol=0, atol=1e-9)      # a pixel = its 3 channels

    pf = M.pixel_flipping(model, x, con, features_in_step=10, baseline=0.0, score="logit")
    removed = torch.sort(flat, 1, descending=True).values.cumsum(1)[:, [min(10 * k, 108) - 1 for k in range(1, 12)]]
    torch.testing.assert_close(pf.curve, f[:, None] - removed, rtol=0, atol=1e-9)
    torch.testing.assert_close(pf.auc, _trapz(pf.curve), rtol=0, atol=1e-12)

    ma = M.monotonicity_arya(model, x, con, baseline=0.0, score="logit")
    order = torch.sort(flat.abs(), dim=1, stable=True).indices
    expected = model.c.detach()[cls][:, None] + flat.gather(1, order).cumsum(1)
    torch.testing.assert_close(ma.curve, expected, rtol=0, atol=1e-9)
    assert not ma.monotonic.any()                                   # mixed signs: the logit goes down
    pos = x.abs() * model.w.detach()[cls].sign().view_as(x)          # every contribution >= 0
    assert M.monotonicity_arya(model, pos, _contrib(model, pos)[1], baseline=0.0, score="logit").monotonic.all()

    rp = M.region_perturbation(model, x, con, patch_size=3, regions=3, baseline=0.0, score="logit")
    patch = con.sum(1).view(2, 2, 3, 2, 3).sum((2, 4)).flatten(1)   # (2, 4) per 3x3 patch, raster order
    top = torch.sort(patch, 1, descending=True)
    torch.testing.assert_close(rp.order, top.indices[:, :3])
    torch.testing.assert_close(rp.drops, top.values[:, :3].cumsum(1), rtol=0, atol=1e-9)
    torch.testing.assert_close(rp.aopc, rp.drops.sum(1) / 4, rtol=0, atol=1e-12)
    lerf = M.region_perturbation(model, x, con, patch_size=3, order="lerf", baseline=0.0, score="logit")
    torch.testing.assert_close(lerf.drops[:, -1], patch.sum(1), rtol=0, atol=1e-9)   # all 4 patches at the end

    mn = M.monotonicity_nguyen(model, x, con.abs(), baseline=0.0, score="logit", samples=3)
    torch.testing.assert_close(mn.variances, flat.gather(1, order).pow(2) / f[:, None] ** 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(mn.correlation, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    assert mn.model_calls == 2 * (108 + 1)                          # deterministic fill: one forward per step

    seg = torch.zeros(6, 6, dtype=torch.long)
    seg[:3, 3:], seg[3:, :3], seg[3:, 3:] = 1, 2, 3
    ir = M.irof(model, x, con, segments=seg, baseline=0.0, score="logit")
    seg_sum = con.sum(1).view(2, 2, 3, 2, 3).sum((2, 4)).flatten(1)  # quadrants = labels 0..3, 27 elements each
    curve = torch.cat([f[:, None], f[:, None] - torch.sort(seg_sum, 1, descending=True).values.cumsum(1)], 1)
    curve = curve / f[:, None]
    torch.testing.assert_close(ir.curve, curve, rtol=0, atol=1e-9)
    torch.testing.assert_close(ir.score, 1 - _trapz(curve) / 4, rtol=0, atol=1e-9)
    compat = M.irof(model, x, con, segments=seg, baseline=0.0, score="logit", quantus_compat=True)
    torch.testing.assert_close(compat.score, 4 - _trapz(curve[:, 1:]), rtol=0, atol=1e-9)


def test_sufficiency_by_hand_and_counts():
    model, x = Linear(), lin_x(4)
    pred = model(x).argmax(1)
    a = torch.zeros(4, 1, 6, 6, dtype=torch.float64)                # constant pixels: left out, not NaN
    a[:, 0, 0, :2] = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.0, 1.1]], dtype=torch.float64)
    res = M.sufficiency(Counting(model), x, a)
    assert res.model_calls == 4 and torch.isfinite(res.distances).all()
    partner = torch.tensor([1, 0, 3, 2])
    torch.testing.assert_close(res.sufficiency, (pred == pred[partner]).double())
    assert (res.distances[[0, 2], [1, 3]] < 0.6).all() and (res.distances[0, 2:] > 0.6).all()
    alone = M.sufficiency(model, x, a, threshold=0.0)               # no neighbour: 0, not NaN
    torch.testing.assert_close(alone.sufficiency, torch.zeros(4, dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# Batching, model calls, seeds and no trace
def test_model_calls_batching_seeds_and_no_trace():
    torch.manual_seed(0)
    net = SmallNet().eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    a = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    before = snapshot(net, x, a)
    counted = Counting(net).eval()
    fc = M.faithfulness_correlation(counted, x, xt.Gradient(net), runs=6, subset_size=20, batch_size=5)
    assert fc.model_calls == sum(counted.sizes) == 2 * 7 and max(counted.sizes) <= 5
    two = M.faithfulness_correlation(net, x, a, runs=6, subset_size=20, seed=1, batch_size=4)
    assert torch.equal(two.sums, M.faithfulness_correlation(net, x, a, runs=6, subset_size=20, seed=1).sums)
    counted.sizes.clear()
    mn = M.monotonicity_nguyen(counted, x, a, samples=3, features_in_step=48, features="pixel")
    assert mn.model_calls == sum(counted.sizes) == 2 * (2 * 3 + 1) and mn.sums.shape == (2, 2)  # 2 steps
    counted.sizes.clear()
    pf = M.pixel_flipping(counted, x, a, features_in_step=7, batch_size=9)
    assert pf.model_calls == sum(counted.sizes) == 2 * (28 + 1) and max(counted.sizes) <= 9   # ceil(192 / 7) = 28
    counted.sizes.clear()
    ir = M.irof(counted, x, a)
    assert ir.model_calls == sum(counted.sizes) == 2 + int(ir.segments.sum())
    assert M.region_perturbation(net, x, a, patch_size=4, order="random").model_calls == 2 * 5
    assert M.monotonicity_arya(net, x, a, features_in_step=64).model_calls == 2 * 4
    assert_no_trace(before, snapshot(net, x, a))


def test_bad_inputs_fail_before_any_model_call():
    counted = Counting(SmallNet()).eval()
    x = torch.rand(2, 3, 8, 8)
    a = torch.rand(2, 1, 8, 8)
    cases = [
        (M.faithfulness_correlation, {"subset_size": 193}, "larger than the 192 features"),
        (M.faithfulness_correlation, {"runs": 1}, "runs must be an integer >= 2"),
        (M.faithfulness_correlation, {"features": "voxel"}, "features must be"),
        (M.faithfulness_correlation, {"indices": torch.full((2, 3, 4), 192)}, "indices must lie in"),
        (M.faithfulness_correlation, {"baseline": "grey", "subset_size": 10}, "baseline must be one of"),
        (M.pixel_flipping, {"features_in_step": 0}, "features_in_step must be an integer >= 1"),
        (M.pixel_flipping, {"features_in_step": 65, "features": "pixel"}, "larger than the 64 features"),
        (M.monotonicity_arya, {"features_in_step": -1}, "features_in_step"),
        (M.region_perturbation, {"patch_size": 3}, "must divide the image"),
        (M.region_perturbation, {"patch_size": 16}, "must divide the image"),
        (M.region_perturbation, {"order": "up"}, "order must be one of"),
        (M.region_perturbation, {"regions": 0}, "regions must be"),
        (M.monotonicity_nguyen, {"samples": 0}, "samples must be"),
        (M.monotonicity_nguyen, {"uniform_range": (1.0, 0.0)}, "low <= high"),
        (M.irof, {"segments": torch.zeros(8, 8, dtype=torch.long)}, "at least 2"),
        (M.irof, {"segments": torch.zeros(5, 5, dtype=torch.long)}, "segments must be"),
        (M.sufficiency, {"threshold": 2.0}, "threshold must lie in"),
    ]
    for fn, kwargs, msg in cases:
        with pytest.raises(XaiError, match=msg.replace("(", r"\(")):
            fn(counted, x, a, **kwargs)
    with pytest.raises(XaiError, match="attribution must have shape"):
        M.pixel_flipping(counted, x, torch.rand(2, 1, 4, 4))
    assert counted.sizes == []
    with pytest.raises(XaiError, match="at least 2 images"):      # after the model's checks: one forward
        M.sufficiency(counted, x[:1], a[:1])


# --------------------------------------------------------------------------------------------
# Parity with Quantus 0.6 (its defaults, the random parts made identical), and its bugs
@pytest.mark.parity
def test_parity_with_quantus(monkeypatch):
    quantus = pytest.importorskip("quantus")
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices
    model = Scaled(channels=1)
    x1 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    a1 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    y = model(x1).argmax(1)
    xn, an, yn = x1.numpy(), a1.numpy(), y.numpy()
    kw = {"channel_first": True, "device": "cpu", "batch_size": 2}

    def q(metric, a=an, x=xn):
        return np.asarray(metric(model=model, x_batch=x, y_batch=yn, a_batch=a, **kw), dtype=np.float64)

    def close(ours, ref, tol=1e-6):
        np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=tol)

    close(M.pixel_flipping(model, x1, a1, y, features_in_step=4).curve,
          q(quantus.PixelFlipping(features_in_step=4, disable_warnings=True)))
    for order in ("morf", "lerf"):
        close(M.region_perturbation(model, x1, a1, y, patch_size=2, order=order, regions=10).drops,
              q(quantus.RegionPerturbation(patch_size=2, order=order, regions_evaluation=10, disable_warnings=True)))
    close(M.monotonicity_nguyen(model, x1, a1, y, baseline=0.0, features_in_step=4).correlation,
          q(quantus.MonotonicityCorrelation(features_in_step=4, nr_samples=2, perturb_baseline=0.0,
                                            disable_warnings=True)))
    # Quantus's Monotonicity refills the baseline image with the baseline: it reports every map monotonic
    qm = quantus.Monotonicity(features_in_step=4, disable_warnings=True)
    assert q(qm).all() and q(qm, a=-an).all()
    ours = [M.monotonicity_arya(model, x1, s * a1, y, features_in_step=4).monotonic for s in (1, -1)]
    assert not torch.cat(ours).all()

    x3 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    model3 = Scaled(channels=3)
    y3 = model3(x3).argmax(1)
    kw3 = {"model": model3, "x_batch": x3.numpy(), "y_batch": y3.numpy(), "a_batch": an, **kw}
    drawn = []                                                      # Quantus's own random subsets, recorded

    def record(arr, indices, **kwargs):
        drawn.append(indices.copy())
        return batch_baseline_replacement_by_indices(arr, indices, **kwargs)

    ref = quantus.FaithfulnessCorrelation(nr_runs=5, subset_size=16, return_aggregate=False, perturb_func=record,
                                          disable_warnings=True)(**kw3)
    ours_fc = M.faithfulness_correlation(model3, x3, a1, y3, indices=torch.from_numpy(np.stack(drawn, 1)))
    close(ours_fc.correlation, np.asarray(ref))
    # Quantus's IROF asserts a (B, 1, H, W) mask against (B, C, H, W) images: one channel only
    ir = M.irof(model, x1, a1, y, baseline=0.0, quantus_compat=True)
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus 0.6 calls np.trapz, gone in numpy 2
    ref_ir = q(quantus.IROF(perturb_baseline=0.0, return_aggregate=False, disable_warnings=True))
    assert int(ir.segments[0]) == int(ir.segments[1])              # Quantus pads unequal counts (see irof)
    np.testing.assert_allclose(ir.score.numpy(), ref_ir, rtol=1e-5, atol=0)    # Quantus sums in float32
    a4 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    x4 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    kw4 = {"model": model3, "x_batch": x4.numpy(), "y_batch": np.zeros(4, dtype=int), "a_batch": a4.numpy(), **kw}
    kw4["batch_size"] = 4
    suff = M.sufficiency(model3, x4, a4, threshold=0.95)
    close(suff.sufficiency, np.asarray(quantus.Sufficiency(threshold=0.95, disable_warnings=True)(**kw4)))
    from scipy.spatial.distance import cdist
    d = cdist(a4.abs().flatten(1).numpy(), a4.abs().flatten(1).numpy(), "seuclidean")
    np.testing.assert_allclose(standardized_distances(a4.abs().flatten(1)).numpy(), d, rtol=1e-10, atol=1e-10)
    a4[:, :, 0] = 0.0                                               # a zero border: scipy's distances are all NaN
    assert np.isnan(cdist(a4.flatten(1).numpy(), a4.flatten(1).numpy(), "seuclidean")).all()
    assert torch.isfinite(M.sufficiency(model3, x4, a4, threshold=0.95).distances).all()
