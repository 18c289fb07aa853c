"""KernelSHAP on superpixels: exact Shapley values by enumeration (against brute force),
efficiency, the sampling scheme (against shap), call counts, seeds, bad inputs, no trace."""
import itertools
import math

import numpy as np
import pytest
import torch
from test_region_superpixel import grid

import xai_torch as xt
from xai_torch.region import KernelSHAP, constrained_wls, shapley_coalitions, shapley_kernel

from conftest import Counting, Scaled, assert_no_trace, snapshot


@pytest.fixture
def sharp():
    return Scaled()


@pytest.fixture
def x16():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def brute_force_shapley(model, x, seg, fill, score):
    """Shapley values of the superpixels of one image ``x`` (C, H, W), straight from the
    definition: every coalition composed pixel by pixel, phi_i = sum_S |S|!(M-|S|-1)!/M! dv."""
    m = int(seg.max()) + 1
    values = {}
    images = []
    coalitions = list(itertools.product([0, 1], repeat=m))
    for bits in coalitions:
        img = fill.clone()
        for j, on in enumerate(bits):
            if on:
                img[:, seg == j] = x[:, seg == j]
        images.append(img)
    with torch.no_grad():
        out = score(model(torch.stack(images)).double())
    for bits, v in zip(coalitions, out):
        values[bits] = float(v)
    phi = np.zeros(m)
    for i in range(m):
        for bits in coalitions:
            if bits[i]:
                continue
            s = sum(bits)
            with_i = bits[:i] + (1,) + bits[i + 1:]
            share = math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m)
            phi[i] += share * (values[with_i] - values[bits])
    return phi, values[(0,) * m], values[(1,) * m]


# --- exact values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("hide", ["mean", -0.3, "gray"])
def test_enumeration_gives_brute_force_shapley_values(sharp, x16, hide):
    seg = grid(16, 16, 2, 4)  # 8 superpixels: 254 coalitions
    res = KernelSHAP(sharp, hide=hide).explain(x16, target=[1, 3], segments=seg)
    assert res.exact.tolist() == [True, True] and res.coalitions.tolist() == [254, 254]
    assert res.model_calls == 2 * 256
    for b, c in enumerate([1, 3]):
        if hide == "mean":
            fill = torch.zeros_like(x16[b])
            for j in range(8):
                fill[:, seg == j] = x16[b][:, seg == j].mean(1, keepdim=True)
        elif hide == "gray":
            fill = torch.full_like(x16[b], float(x16[b].min() + x16[b].max()) / 2)
        else:
            fill = torch.full_like(x16[b], hide)
        phi, empty, full = brute_force_shapley(sharp, x16[b], seg, fill, lambda out, c=c: out.softmax(1)[:, c])
        np.testing.assert_allclose(res.weights[b].double().numpy(), phi, rtol=1e-4, atol=1e-7)
        assert float(res.base_values[b]) == pytest.approx(empty, rel=1e-5)
        assert float(res.scores[b]) == pytest.approx(full, rel=1e-5)


def test_enumeration_logit_and_several_targets(sharp, x16):
    seg = grid(16, 16, 2, 3)
    res = KernelSHAP(sharp, output="logit").explain(x16[:1], target=[[0, 4]], segments=seg)
    assert res.attributions.shape == (1, 2, 1, 16, 16) and res.weights.shape == (1, 2, 6)
    fill = torch.zeros_like(x16[0])
    for j in range(6):
        fill[:, seg == j] = x16[0][:, seg == j].mean(1, keepdim=True)
    for k, c in enumerate([0, 4]):
        phi, _, _ = brute_force_shapley(sharp, x16[0], seg, fill, lambda out, c=c: out[:, c])
        np.testing.assert_allclose(res.weights[0, k].double().numpy(), phi, rtol=1e-4, atol=1e-6)


def test_exact_solver_on_a_closed_form_game():
    m = 7
    g = torch.Generator().manual_seed(0)
    table = torch.randn(2**m, dtype=torch.float64, generator=g)  # an arbitrary game, v(code of the coalition)
    powers = 2 ** torch.arange(m)
    z, w, exact = shapley_coalitions(m, 10**6)
    assert exact and z.shape == (2**m - 2, m) and float(w.sum()) == pytest.approx(1.0)
    y = table[(z.long() * powers).sum(1)] - table[0]
    phi = constrained_wls(z[None], y[None, :, None], w[None], (table[-1] - table[0]).view(1, 1),
                          torch.ones(1, m, dtype=torch.bool))[0, 0]
    ref = torch.zeros(m, dtype=torch.float64)
    for code in range(2**m):
        bits = [(code >> i) & 1 for i in range(m)]
        s = sum(bits)
        for i in range(m):
            if not bits[i]:
                ref[i] += math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) * (
                    table[code | (1 << i)] - table[code])
    torch.testing.assert_close(phi, ref, rtol=1e-10, atol=1e-12)


# --- sampling ------------------------------------------------------------------------------------------
def test_coalition_design():
    g = torch.Generator().manual_seed(0)
    for m, budget in ((2, 1), (5, 20), (10, 300), (12, 2072), (40, 500), (11, 2045)):
        z, w, exact = shapley_coalitions(m, budget, g)
        assert not exact and z.shape == (budget, m)
        assert torch.unique(z, dim=0).shape[0] == budget  # distinct: repeats add weight, not rows
        sizes = z.sum(1)
        assert bool(((sizes > 0) & (sizes < m)).all())
        assert float(w.sum()) == pytest.approx(1.0) and bool((w > 0).all())
    # m = 10, budget 300: sizes 1 and 9 (20 coalitions) then 2 and 8 (90) are enumerated whole
    z, w, _ = shapley_coalitions(10, 300, torch.Generator().manual_seed(0))
    sizes = z.sum(1)
    for s in (1, 2, 8, 9):
        assert int((sizes == s).sum()) == math.comb(10, s)
    kernel = shapley_kernel(10, sizes)
    full = (sizes <= 2) | (sizes >= 8)
    ratio = w[full] / kernel[full]  # the enumerated part carries the kernel itself, up to one factor
    torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio))
    # random coalitions come with their complement
    rest = z[~full]
    have = {tuple(r) for r in rest.tolist()}
    paired = [r for r in rest.tolist() if sum(r) < 5]
    assert paired and all(tuple(1 - v for v in r) in have for r in paired)
    # seeded
    a = shapley_coalitions(16, 200, torch.Generator().manual_seed(4))
    b = shapley_coalitions(16, 200, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _game(m):
    g = np.random.default_rng(0)
    lin, quad = g.normal(size=m), g.normal(size=(m, m)) * 0.3

    def value(z):
        z = np.asarray(z, dtype=np.float64)
        return np.tanh(0.5 * z @ lin + 0.2 * np.einsum("ni,ij,nj->n", z, quad, z))

    return value


def _ours(value, m, budget, seed):
    z, w, _ = shapley_coalitions(m, budget, torch.Generator().manual_seed(seed))
    empty, full = value(np.zeros((1, m)))[0], value(np.ones((1, m)))[0]
    y = torch.from_numpy(value(z.numpy()) - empty)
    return constrained_wls(z[None], y[None, :, None], w[None], torch.tensor([[full - empty]]),
                           torch.ones(1, m, dtype=torch.bool))[0, 0].numpy()


@pytest.mark.parity
def test_sampling_is_as_accurate_as_shap():
    """On a 13-player game, our sampled estimate is as close to the exact values as shap's
    KernelExplainer (l1_reg=False) at the same number of samples."""
    import shap

    m, budget = 13, 300
    value = _game(m)
    exact = _ours(value, m, 2**m, 0)
    ours, theirs = [], []
    for seed in range(5):
        ours.append(np.abs(_ours(value, m, budget, seed) - exact).mean())
        np.random.seed(seed)
        explainer = shap.KernelExplainer(value, np.zeros((1, m)))
        sv = explainer.shap_values(np.ones((1, m)), nsamples=budget, l1_reg=False, silent=True)
        theirs.append(np.abs(np.asarray(sv).ravel() - exact).mean())
    assert np.mean(ours) <= 1.3 * np.mean(theirs), (ours, theirs)
    assert np.mean(ours) < 0.15 * np.abs(exact).mean()


def test_efficiency_holds_when_sampling(sharp, x16):
    seg = grid(16, 16, 4, 5)  # 20 superpixels
    res = KernelSHAP(sharp, samples=150, seed=0).explain(x16, target=[[0, 2], [1, 3]], segments=seg)
    assert res.exact.tolist() == [False, False] and res.coalitions.tolist() == [150, 150]
    torch.testing.assert_close(res.weights.double().sum(-1), (res.scores - res.base_values).double(),
                               rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        fill = xt.region.superpixel.segment_means(x16, seg.expand(2, 16, 16))
        prob = sharp(fill).softmax(1)
    torch.testing.assert_close(res.base_values, prob[[[0], [1]], [[0, 2], [1, 3]]])


def test_auto_samples_and_call_counts(sharp, x16):
    model = Counting(sharp)
    seg = grid(16, 16, 2, 2)  # M = 4: 14 coalitions + the image + all hidden
    res = KernelSHAP(model, batch_size=10).explain(x16, segments=seg)
    assert model.sizes == [2, 10, 10, 10] and res.model_calls == 32 and res.exact.all()
    model.sizes.clear()
    res = KernelSHAP(model, samples=5, batch_size=4, seed=0).explain(x16, segments=grid(16, 16, 3, 3))
    assert model.sizes == [2, 4, 4, 4] and res.model_calls == 2 * 7 and res.coalitions.tolist() == [5, 5]
    shap = KernelSHAP(sharp)
    assert shap.budget(4) == 14 and shap.budget(20) == 2088 and shap.budget(100) == 2248


def test_per_image_segments_of_different_sizes(sharp, x16):
    seg = torch.stack([grid(16, 16, 2, 2), grid(16, 16, 3, 4)])
    res = KernelSHAP(sharp, samples=100, seed=1).explain(x16, segments=seg)
    assert res.num_segments.tolist() == [4, 12] and res.weights.shape == (2, 12)
    assert res.exact.tolist() == [True, False] and res.coalitions.tolist() == [14, 100]
    assert bool((res.weights[0, 4:] == 0).all())
    torch.testing.assert_close(res.weights.sum(1), res.scores - res.base_values, rtol=1e-5, atol=1e-7)
    alone = KernelSHAP(sharp, samples=100, seed=1).explain(x16[:1], segments=seg[:1])
    torch.testing.assert_close(alone.weights[0], res.weights[0, :4])


def test_seeded_runs_repeat(sharp, x16):
    seg = grid(16, 16, 4, 4)
    a = KernelSHAP(sharp, samples=60, seed=5)(x16, segments=seg)
    assert torch.equal(a, KernelSHAP(sharp, samples=60, seed=5)(x16, segments=seg))
    assert not torch.equal(a, KernelSHAP(sharp, samples=60, seed=6)(x16, segments=seg))


def test_greyscale_input():
    model = Scaled(channels=1)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    res = KernelSHAP(model, hide="gray", segmenter="slic", samples=64, seed=0).explain(x)
    assert res.attributions.shape == (2, 1, 16, 16) and int(res.num_segments.min()) >= 2
    torch.testing.assert_close(res.weights.sum(1), res.scores - res.base_values, rtol=1e-5, atol=1e-7)


def test_no_trace(sharp, x16):
    before = snapshot(sharp, x16)
    KernelSHAP(sharp, samples=20, seed=0).explain(x16, segments=grid(16, 16, 2, 3))
    assert_no_trace(before, snapshot(sharp, x16))


def test_bad_inputs_raise_before_any_model_call(sharp, x16):
    model = Counting(sharp)
    shap = KernelSHAP(model)
    for kwargs, match in [({"segments": torch.zeros(16, 16, dtype=torch.long)}, "1 segment"),
                          ({"segments": torch.zeros(2, 8, 16, dtype=torch.long)}, "segments must be"),
                          ({"segments": grid(16, 16, 2, 2)[None].expand(3, 16, 16)}, "segments must be")]:
        with pytest.raises(xt.XaiError, match=match):
            shap(x16, **kwargs)
    assert model.sizes == []
    for kwargs, match in [({"samples": 0}, "samples"), ({"samples": "many"}, "samples"), ({"samples": -4}, "samples"),
                          ({"hide": "zero"}, "hide"), ({"hide": float("nan")}, "hide"), ({"output": "prob"}, "output")]:
        with pytest.raises(xt.XaiError, match=match):
            KernelSHAP(sharp, **kwargs)


def test_too_few_samples_warns_and_stays_efficient(sharp, x16):
    seg = grid(16, 16, 4, 4)
    with pytest.warns(xt.XaiWarning, match="too few coalitions"):
        res = KernelSHAP(sharp, samples=3, seed=0).explain(x16[:1], segments=seg)
    torch.testing.assert_close(res.weights.sum(1), res.scores - res.base_values, rtol=1e-5, atol=1e-7)


# --- a background data set (shap's KernelExplainer with data) ---------------------------------------
def _background():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(8)) * 2 - 1


@pytest.mark.parity
def test_background_parity_with_shap(sharp, x16):
    """shap's KernelExplainer with the background images as its data and the superpixels as
    feature groups: with every coalition enumerated, the same values and base values."""
    import shap
    from shap.utils._legacy import DenseData

    seg, bg = grid(16, 16, 2, 3), _background()  # 6 superpixels: all 62 coalitions
    res = KernelSHAP(sharp, background=bg).explain(x16, target=[1, 4], segments=seg)
    assert res.exact.all() and res.model_calls == 2 * (1 + 3 * 63)
    groups = [np.nonzero(seg.expand(3, 16, 16).flatten().numpy() == j)[0] for j in range(6)]

    def f(rows):
        with torch.no_grad():
            return sharp(torch.from_numpy(np.asarray(rows, dtype=np.float32)).view(-1, 3, 16, 16)).softmax(1).numpy()

    data = DenseData(bg.flatten(1).double().numpy(), [str(j) for j in range(6)], groups)
    explainer = shap.KernelExplainer(f, data)
    for b, c in enumerate([1, 4]):
        sv = explainer.shap_values(x16[b:b + 1].flatten(1).double().numpy(), nsamples=1000, l1_reg=False,
                                   silent=True)
        np.testing.assert_allclose(res.weights[b].double().numpy(), np.asarray(sv)[0, :, c], rtol=1e-4, atol=1e-6)
        assert float(res.base_values[b]) == pytest.approx(float(explainer.expected_value[c]), rel=1e-5)


def test_background_values_by_brute_force(sharp, x16):
    """The game averaged over the background, v(S) = mean_n F(x on S, background n elsewhere):
    exact Shapley values, efficiency against the background's mean score, any chunking."""
    seg, bg = grid(16, 16, 2, 2), _background()[:2]
    score = lambda out: out.softmax(1)[:, 3]  # noqa: E731
    model = Counting(sharp).eval()
    res = KernelSHAP(model, background=bg, batch_size=7).explain(x16[:1], target=3, segments=seg)
    assert model.sizes[0] == 1 and sum(model.sizes) == 1 + 2 * 15 and max(model.sizes) <= 7
    phis = [brute_force_shapley(sharp, x16[0], seg, bg[n], score)[0] for n in range(2)]
    np.testing.assert_allclose(res.weights[0].double().numpy(), np.mean(phis, 0), rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        mean_bg = float(score(sharp(bg)).mean())
    assert float(res.base_values[0]) == pytest.approx(mean_bg, rel=1e-5)
    torch.testing.assert_close(res.weights.sum(1), res.scores - res.base_values, rtol=1e-5, atol=1e-7)
    # one background image is the game of a hidden image: the same as hide=that image
    one = KernelSHAP(sharp, background=bg[:1]).explain(x16[:1], target=3, segments=seg)
    torch.testing.assert_close(one.weights, KernelSHAP(sharp, hide=bg[0]).explain(x16[:1], target=3,
                                                                                   segments=seg).weights)
    # sampled: seeded, efficient
    a = KernelSHAP(sharp, background=bg, samples=20, seed=0).explain(x16, segments=grid(16, 16, 2, 4))
    torch.testing.assert_close(a.weights.sum(1), a.scores - a.base_values, rtol=1e-5, atol=1e-7)
    assert "background='tensor(2, 3, 16, 16)'" in repr(KernelSHAP(sharp, background=bg))


def test_bad_background(sharp, x16):
    model = Counting(sharp).eval()
    seg = grid(16, 16, 2, 2)
    for bg, match in [(torch.zeros(3, 16, 16), r"\(N, C, H, W\)"),
                      (torch.zeros(2, 3, 16, 16, dtype=torch.long), "float"),
                      (np.zeros((2, 3, 16, 16)), "float tensor"), (torch.zeros(0, 3, 16, 16), "N >= 1")]:
        with pytest.raises(xt.XaiError, match=match):
            KernelSHAP(model, background=bg)
    for bg, match in [(torch.zeros(2, 3, 8, 16), r"\(N, 3, 16, 16\) images shaped like x; got \(2, 3, 8, 16\)"),
                      (torch.zeros(2, 1, 16, 16), r"\(N, 3, 16, 16\)"),
                      (torch.full((2, 3, 16, 16), float("nan")), "NaN")]:
        with pytest.raises(xt.XaiError, match=match):
            KernelSHAP(model, background=bg)(x16, segments=seg)
    assert model.sizes == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU path; CI has none)")
def test_background_on_cuda(x16):
    seg, bg = grid(16, 16, 2, 2), _background()
    cpu = KernelSHAP(Scaled(), background=bg).explain(x16, segments=seg)
    gpu = KernelSHAP(Scaled().cuda(), background=bg, batch_size=5).explain(x16, segments=seg)
    assert gpu.weights.device.type == "cpu"
    torch.testing.assert_close(gpu.weights, cpu.weights, rtol=1e-4, atol=1e-6)
