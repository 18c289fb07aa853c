"""ROAD and its noisy linear imputation: closed forms, parity with pytorch-grad-cam, pixel
semantics of MoRF/LeRF, call counts, reproducibility, bad inputs, no trace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_torch.errors import XaiError
from xai_torch.metrics.road import noisy_linear_impute, road

from conftest import Counting, SmallNet, assert_no_trace, snapshot

SOLVERS = ("cg", "spsolve")
W4, WD = 1 / 6, 1 / 12  # 4-neighbour and diagonal weights


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _masks(b, h, w, seed):
    """Random masks with a removed border row/column and a large removed blob."""
    g = _gen(seed)
    m = torch.rand(b, h, w, generator=g) < 0.4
    m[0, 0, :] = True
    m[0, :, -1] = True
    m[1, 2:h - 2, 3:w - 1] = True  # large blob touching the right border
    m[-1, -1, 0] = True  # a corner
    m[:, h // 2, w // 2] = False  # every image keeps pixels
    return m


# ---------------------------------------------------------------------------------------------
# imputation: closed forms
@pytest.mark.parametrize("solver", SOLVERS)
def test_single_pixel_is_weighted_neighbour_mean(solver):
    x = torch.randn(1, 2, 5, 6, generator=_gen(0), dtype=torch.float64)
    m = torch.zeros(1, 5, 6, dtype=torch.bool)
    m[0, 2, 3] = True  # interior
    m[0, 0, 0] = True  # corner: right (1/6), down (1/6), diagonal (1/12) remain, renormalised by 5/12
    m[0, 4, 2] = True  # bottom edge: 3 four-neighbours and 2 diagonals remain (weight 2/3)
    out = noisy_linear_impute(x, m, noise=0.0, solver=solver)
    v = x[0]
    interior = W4 * (v[:, 1, 3] + v[:, 3, 3] + v[:, 2, 2] + v[:, 2, 4]) + WD * (
        v[:, 1, 2] + v[:, 1, 4] + v[:, 3, 2] + v[:, 3, 4])
    corner = (W4 * (v[:, 0, 1] + v[:, 1, 0]) + WD * v[:, 1, 1]) / (5 / 12)
    edge = (W4 * (v[:, 3, 2] + v[:, 4, 1] + v[:, 4, 3]) + WD * (v[:, 3, 1] + v[:, 3, 3])) / (2 / 3)
    torch.testing.assert_close(out[0, :, 2, 3], interior, rtol=0, atol=1e-10)
    torch.testing.assert_close(out[0, :, 0, 0], corner, rtol=0, atol=1e-10)
    torch.testing.assert_close(out[0, :, 4, 2], edge, rtol=0, atol=1e-10)
    keep = ~m[:, None].expand_as(x)
    assert torch.equal(out[keep], x[keep])
    assert out.dtype == x.dtype and out.shape == x.shape


@pytest.mark.parametrize("solver", SOLVERS)
def test_constant_stays_constant_and_linear_ramp_is_reproduced(solver):
    atol = 1e-7 if solver == "cg" else 1e-12  # CG stops at a 1e-8 relative residual
    m = _masks(3, 16, 13, seed=1)
    const = torch.full((3, 2, 16, 13), 0.37, dtype=torch.float64)
    torch.testing.assert_close(noisy_linear_impute(const, m, noise=0.0, solver=solver), const, rtol=0, atol=atol)
    # The symmetric stencil reproduces any linear function away from the border (where the
    # renormalisation breaks the symmetry): a removed interior blob is filled exactly.
    d = torch.float64
    i, j = torch.meshgrid(torch.arange(16.0, dtype=d), torch.arange(13.0, dtype=d), indexing="ij")
    ramp = torch.stack([0.3 * i - 0.2 * j + 1, -0.1 * i + 0.05 * j])[None]
    blob = torch.zeros(1, 16, 13, dtype=torch.bool)
    blob[0, 2:14, 2:11] = True
    blob[0, 5, 5] = False
    torch.testing.assert_close(noisy_linear_impute(ramp, blob, noise=0.0, solver=solver), ramp, rtol=0, atol=atol)


def test_solvers_agree_on_a_large_blob():
    h = 64
    i, j = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
    m = (((i - 28) ** 2 + (j - 34) ** 2) < 26 ** 2)[None]  # ~50% of the image, one blob
    x = torch.randn(1, 3, h, h, generator=_gen(3), dtype=torch.float64)
    a = noisy_linear_impute(x, m, noise=0.0, solver="cg")
    b = noisy_linear_impute(x, m, noise=0.0, solver="spsolve")
    assert (a - b).abs().max().item() < 1e-6


def test_noise_only_on_removed_pixels_and_reproducible():
    x = torch.randn(2, 3, 10, 11, generator=_gen(4))
    m = _masks(2, 10, 11, seed=5)
    clean = noisy_linear_impute(x, m, noise=0.0)
    a = noisy_linear_impute(x, m, noise=0.5, generator=_gen(7))
    b = noisy_linear_impute(x, m, noise=0.5, generator=_gen(7))
    c = noisy_linear_impute(x, m, noise=0.5, generator=_gen(8))
    keep = ~m[:, None].expand_as(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[keep], x[keep])
    d = (a - clean)[~keep]
    assert bool((d != 0).all())
    assert 0.4 < d.std().item() < 0.6  # N(0, 0.5²) on ~190 values
    assert torch.equal(x, torch.randn(2, 3, 10, 11, generator=_gen(4)))  # x untouched


def test_impute_bad_inputs():
    x = torch.randn(1, 3, 6, 6)
    ok = torch.zeros(1, 6, 6, dtype=torch.bool)
    with pytest.raises(XaiError, match="bool"):
        noisy_linear_impute(x, ok.float())
    with pytest.raises(XaiError, match="shape"):
        noisy_linear_impute(x, torch.zeros(1, 6, 5, dtype=torch.bool))
    with pytest.raises(XaiError, match="every pixel"):
        noisy_linear_impute(x, torch.ones(1, 6, 6, dtype=torch.bool))
    with pytest.raises(XaiError, match="noise"):
        noisy_linear_impute(x, ok, noise=-1.0)
    with pytest.raises(XaiError, match="solver"):
        noisy_linear_impute(x, ok, solver="lu")


# ---------------------------------------------------------------------------------------------
# parity with pytorch-grad-cam
@pytest.mark.parity
@pytest.mark.parametrize("solver", SOLVERS)
def test_imputation_parity_with_jacobgil(solver):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    x = torch.randn(3, 3, 20, 17, generator=_gen(10))
    m = _masks(3, 20, 17, seed=11)
    ours = noisy_linear_impute(x, m, noise=0.0, solver=solver)
    ref = torch.stack([NoisyLinearImputer(noise=0)(x[i], (~m[i]).float()) for i in range(3)])  # its mask: 1 = keep
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parity
def test_road_scores_parity_with_jacobgil():
    """ROADMostRelevantFirst(p) removes the top pixels not kept by cam < percentile(cam, p) and
    scores the logit change: ours with fractions = removed/HW, score='logit', minus clean."""
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    net = SmallNet().eval()
    x = torch.randn(2, 3, 12, 12, generator=_gen(12))
    cam = torch.rand(2, 12, 12, generator=_gen(13))  # distinct values: no ties at thresholds
    targets = [ClassifierOutputTarget(int(t)) for t in net(x).argmax(1)]
    percentiles = [10, 35, 60, 90]
    fr, ref_m, ref_l = [], [], []
    for p in percentiles:
        kept = {int((cam[i] < np.percentile(cam[i].numpy(), p)).sum()) for i in range(2)}
        assert len(kept) == 1  # same count in both images, so one fraction serves both
        fr.append((144 - kept.pop()) / 144)
        for cls, out in ((ROADMostRelevantFirst, ref_m), (ROADLeastRelevantFirst, ref_l)):
            metric = cls(p)
            metric.perturbation.imputer.noise = 0
            out.append(metric(x, cam.numpy(), targets, net))
    res = road(net, x, cam, fractions=fr, score="logit", noise=0.0)
    assert res.removed.tolist() == [round(f * 144) for f in fr]
    np.testing.assert_allclose((res.morf - res.clean[:, None]).numpy(), np.stack(ref_m, 1), rtol=0, atol=2e-6)
    np.testing.assert_allclose((res.lerf - res.clean[:, None]).numpy(), np.stack(ref_l, 1), rtol=0, atol=2e-6)
    # its ROADCombined over these percentiles is combined / 2
    np.testing.assert_allclose((res.combined / 2).numpy(), (np.stack(ref_l, 1) - np.stack(ref_m, 1)).mean(1) / 2,
                               rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# ROAD
def test_road_removes_exactly_the_ranked_pixels_and_counts_calls(small, small_x):
    rel = torch.rand(3, 12, 12, generator=_gen(20))
    rel[0, :6] = 0.5  # a plateau of 72 equal values: the stable raster tie-break decides
    fractions = (0.25, 0.5, 0.75)
    model = Counting(small, keep_inputs=True)
    res = road(model, small_x, rel, fractions=fractions, noise=0.0, batch_size=4)
    n = 3 + 2 * 3 * 3
    assert sum(model.sizes) == n and max(model.sizes) <= 4
    seen = torch.cat(model.inputs)[3:].view(2, 3, 3, 3, 12, 12)  # (order, fraction, image, C, H, W)
    order = torch.sort(rel.flatten(1), dim=1, descending=True, stable=True).indices
    for o in range(2):
        for f, frac in enumerate(fractions):
            k = round(frac * 144)
            assert res.removed[f] == k
            for i in range(3):
                changed = (seen[o, f, i] != small_x[i]).any(0).flatten()
                expect = torch.zeros(144, dtype=torch.bool)
                expect[order[i, :k] if o == 0 else order[i, 144 - k:]] = True
                assert torch.equal(changed, expect)
    assert res.morf.shape == res.lerf.shape == (3, 3) and res.morf.dtype == torch.float64
    torch.testing.assert_close(res.combined, (res.lerf - res.morf).mean(1))
    torch.testing.assert_close(res.morf_mean, res.morf.mean(1))
    torch.testing.assert_close(res.clean, small(small_x).softmax(1).max(1).values.double())


def test_road_noise_reproducible_and_independent_of_batch_size(small, small_x):
    rel = torch.rand(3, 3, 12, 12, generator=_gen(21))
    a = road(small, small_x, rel, fractions=(0.3, 0.6), score="logit", seed=3, batch_size=5)
    b = road(small, small_x, rel, fractions=(0.3, 0.6), score="logit", seed=3, batch_size=2)
    c = road(small, small_x, rel, fractions=(0.3, 0.6), score="logit", seed=4)
    assert torch.equal(a.morf, b.morf) and torch.equal(a.lerf, b.lerf)
    assert not torch.equal(a.morf, c.morf)
    model = Counting(small)
    one = road(model, small_x, rel, fractions=(0.3, 0.6), order="lerf", score="accuracy", seed=3)
    assert model.sizes == [3, 6]  # clean, then one batched call for 2 fractions x 3 images
    assert one.morf is None and one.combined is None and one.morf_mean is None
    assert set(one.lerf.unique().tolist()) <= {0.0, 1.0}


def test_road_with_explainer_and_no_trace(small_x):
    torch.manual_seed(0)
    net = SmallNet().train()  # training mode: BatchNorm buffers must come back
    attr = torch.rand(3, 1, 12, 12, generator=_gen(22))
    seen = []

    def explainer(x, target=None):
        seen.append(target)
        return attr

    before = snapshot(net, small_x, attr)
    with pytest.warns(Warning, match="training mode"):
        res = road(net, small_x, explainer, target=[1, 2, 3], fractions=(0.5,), order="morf")
    assert_no_trace(before, snapshot(net, small_x, attr))
    assert len(seen) == 1 and seen[0].tolist() == [1, 2, 3]
    assert res.targets.tolist() == [1, 2, 3]


@pytest.mark.parametrize("kwargs, match", [
    ({"fractions": (0.0, 0.5)}, "fractions"),
    ({"fractions": (0.5, 1.0)}, "fractions"),
    ({"fractions": (1.5,)}, "fractions"),
    ({"fractions": ()}, "fractions"),
    ({"fractions": "0.5"}, "fractions"),
    ({"order": "random"}, "order"),
    ({"score": "prob"}, "score"),
    ({"noise": -0.1}, "noise"),
    ({"seed": -1}, "seed"),
    ({"solver": "lu"}, "solver"),
    ({"attribution": torch.rand(3, 12, 11)}, "attribution"),
    ({"attribution": torch.rand(2, 12, 12)}, "attribution"),
    ({"attribution": torch.full((3, 12, 12), float("nan"))}, "NaN"),
])
def test_road_bad_inputs_raise_before_any_call(small, small_x, kwargs, match):
    model = Counting(small)
    attr = kwargs.pop("attribution", torch.rand(3, 12, 12))
    with pytest.raises(XaiError, match=match):
        road(model, small_x, attr, **kwargs)
    assert model.sizes == []


def test_road_fraction_removing_every_pixel_raises():
    model = Counting(SmallNet().eval())
    with pytest.raises(XaiError, match="every pixel"):
        road(model, torch.randn(1, 3, 1, 2), torch.rand(1, 1, 2), fractions=(0.8,))
    assert model.sizes == []
