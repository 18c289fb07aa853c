"""The rest of the Quantus catalogue (issue 21 item 6): complexity, localisation scores,
robustness (local Lipschitz, relative input/output stability) and random logit.

Closed forms from the papers, parity with Quantus 0.6 where its definition is right (one image
at a time where Quantus normalises over the whole batch; the same noise fed to both for the
random metrics), and the places where Quantus is wrong shown on a case."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_torch as xt
import xai_torch.metrics as xm

from conftest import SmallNet, assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _gini_hurley_rickard(c: np.ndarray) -> float:
    """The Gini index as Hurley & Rickard (2009) write it: 1 - 2 sum_k c_(k)/|c|_1 (N - k + 1/2)/N."""
    c = np.sort(np.abs(c.ravel()))
    n = c.size
    k = np.arange(1, n + 1)
    return float(1 - 2 * np.sum(c / c.sum() * (n - k + 0.5) / n))


def test_complexity_family_closed_forms_and_bad_input():
    n = 4 * 5
    one_hot = torch.zeros(2, 4, 5)
    one_hot[0, 1, 2] = -3.0
    one_hot[1] = 0.7                       # image 1: uniform
    sp = xm.sparseness(one_hot)
    torch.testing.assert_close(sp, torch.tensor([(n - 1) / n, 0.0], dtype=torch.float64))
    cx = xm.complexity(one_hot)
    torch.testing.assert_close(cx, torch.tensor([0.0, math.log(n)], dtype=torch.float64))
    assert xm.effective_complexity(one_hot).tolist() == [1.0, float(n)]
    # a random map: the paper's Gini (Hurley & Rickard's form), the entropy, the count
    a = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for i in range(3):
        assert xm.sparseness(a)[i].item() == pytest.approx(_gini_hurley_rickard(a[i].numpy()), abs=1e-12)
        p = a[i].abs().flatten() / a[i].abs().sum()
        assert xm.complexity(a)[i].item() == pytest.approx(float(-(p * p.log()).sum()), abs=1e-12)
        top = a[i].abs().max()
        assert xm.effective_complexity(a, eps=0.5)[i].item() == float((a[i].abs() / top > 0.5).sum())
    # channel reduction: one feature per pixel; scale invariance; the input is left as it was
    assert xm.effective_complexity(a, eps=0.0, reduce="abs").tolist() == [16.0] * 3
    torch.testing.assert_close(xm.sparseness(a * 7.0), xm.sparseness(a))
    assert math.isnan(xm.sparseness(torch.zeros(1, 3, 3)).item())
    assert xm.sparseness(torch.zeros(1, 3, 3), offset=1e-7).item() == pytest.approx(0.0, abs=1e-12)
    # Quantus' 1e-7 shift is not negligible on an unnormalised small map: one-hot -> (N-1)/N * s/(s + N 1e-7)
    tiny = one_hot[:1] * 1e-6 / 3.0
    assert xm.sparseness(tiny, normalise=False).item() == pytest.approx((n - 1) / n)
    assert xm.sparseness(tiny, normalise=False, offset=1e-7).item() == pytest.approx((n - 1) / n / 3.0)
    for call in (lambda: xm.effective_complexity(a, eps=-1e-3), lambda: xm.sparseness(a, offset=-1.0),
                 lambda: xm.complexity(torch.rand(4)), lambda: xm.complexity(a, reduce="nope"),
                 lambda: xm.sparseness(a.clone().fill_(float("nan")))):
        with pytest.raises(xt.XaiError):
            call()


def test_localisation_scores_closed_forms_and_bad_input():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2] = True                                     # the top half
    ramp = torch.arange(16.0).flip(0).reshape(1, 4, 4)      # top half most relevant, no ties
    maps = torch.cat([ramp, -ramp])                         # image 1: the opposite
    assert xm.top_k_intersection(maps, masks, k=8).tolist() == [1.0, 0.0]
    assert xm.top_k_intersection(maps, masks, k=10).tolist() == [0.8, 0.2]      # 8 outside + 2 inside
    assert xm.top_k_intersection(maps, masks, k=4, concept_influence=True).tolist() == [2.0, 0.0]
    assert xm.auc(maps, masks).tolist() == [1.0, 0.0]
    assert xm.auc(torch.ones(1, 4, 4), masks[:1]).item() == 0.5          # ties count one half
    tied = torch.tensor([[[2.0, 1.0], [1.0, 0.0]]])                      # pos {2, 1} vs neg {1, 0}
    assert xm.auc(tied, torch.tensor([[[True, True], [False, False]]])).item() == pytest.approx(0.875)
    # focus: positive relevance on the target quadrants over all positive relevance
    m = torch.zeros(1, 1, 4, 4)
    m[0, 0, :2, :2], m[0, 0, 2:, 2:], m[0, 0, :2, 2:] = 3.0, 1.0, -5.0
    assert xm.focus(m, torch.tensor([[1, 0, 0, 0]])).item() == pytest.approx(0.75)
    assert xm.focus(m, torch.tensor([[1, 1, 0, 1]])).item() == pytest.approx(1.0)
    assert math.isnan(xm.focus(-m.abs(), torch.tensor([[1, 0, 0, 1]])).item())   # Quantus: 0
    empty, full = torch.zeros(1, 4, 4, dtype=torch.bool), torch.ones(1, 4, 4, dtype=torch.bool)
    bad = [lambda: xm.top_k_intersection(ramp, masks[:1], k=17), lambda: xm.top_k_intersection(ramp, empty, k=2),
           lambda: xm.top_k_intersection(ramp, masks[:1], k=0), lambda: xm.auc(ramp, empty),
           lambda: xm.auc(ramp, full), lambda: xm.auc(ramp, masks),
           lambda: xm.focus(torch.rand(1, 5, 4), [[1, 0, 0, 1]]),
           lambda: xm.focus(m, torch.tensor([[1, 0, 0]])), lambda: xm.focus(m, torch.tensor([[0, 0, 0, 0]]))]
    for call in bad:
        with pytest.raises(xt.XaiError):
            call()


def test_make_mosaics_places_the_images_it_reports_and_an_oracle_map_gets_focus_one():
    imgs = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    mos = xm.make_mosaics(imgs, labels, per_class=2, seed=3)
    assert mos.images.shape == (6, 3, 8, 8) and mos.targets.tolist() == [0, 0, 1, 1, 2, 2]
    corners = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4)),
               (slice(4, 8), slice(4, 8))]
    for i in range(6):
        assert int(mos.quadrants[i].sum()) == 2
        assert len(set(mos.indices[i].tolist())) == 4                     # four distinct images
        for q, (r, c) in enumerate(corners):
            src = int(mos.indices[i, q])
            assert torch.equal(mos.images[i, :, r, c], imgs[src])
            assert bool(mos.quadrants[i, q]) == (int(labels[src]) == int(mos.targets[i]))
    oracle = torch.zeros(6, 8, 8)
    for q, (r, c) in enumerate(corners):
        oracle[:, r, c] = mos.quadrants[:, q, None, None].float()
    assert xm.focus(oracle, mos.quadrants).tolist() == [1.0] * 6
    again = xm.make_mosaics(imgs, labels, per_class=2, seed=3)
    assert torch.equal(again.indices, mos.indices) and torch.equal(again.quadrants, mos.quadrants)
    with pytest.raises(xt.XaiError, match="two images of each class"):
        xm.make_mosaics(imgs[:5], labels[:5])
    with pytest.raises(xt.XaiError, match="two classes"):
        xm.make_mosaics(imgs[:2], labels[:2])


@pytest.mark.parity
def test_model_free_metrics_equal_quantus():
    quantus = pytest.importorskip("quantus")
    g = np.random.default_rng(0)
    x = g.random((1, 3, 8, 8)).astype(np.float32)
    y = np.array([0])
    s = np.zeros((1, 1, 8, 8))
    s[0, 0, 2:5, 3:7] = 1

    def q(metric, a, **kw):
        out = metric(model=None, x_batch=x, y_batch=y, a_batch=a.copy(), s_batch=s, channel_first=True, **kw)
        return float(np.asarray(out).ravel()[0])

    for seed in range(3):
        a = np.random.default_rng(seed).standard_normal((1, 1, 8, 8)).astype(np.float32)
        a[0, 0, :2] = 0.0
        a_t = torch.from_numpy(a)
        for ours, ref in ((xm.sparseness(a_t, offset=1e-7), q(quantus.Sparseness(disable_warnings=True), a)),
                          (xm.complexity(a_t), q(quantus.Complexity(disable_warnings=True), a)),
                          (xm.effective_complexity(a_t, eps=0.2),
                           q(quantus.EffectiveComplexity(eps=0.2, disable_warnings=True), a)),
                          (xm.top_k_intersection(a_t, s[:, 0], k=10),
                           q(quantus.TopKIntersection(k=10, disable_warnings=True), a)),
                          (xm.auc(a_t, s[:, 0]), q(quantus.AUC(disable_warnings=True), a)),
                          (xm.auc(a_t.round(), s[:, 0]), q(quantus.AUC(disable_warnings=True), a.round())),
                          (xm.focus(a_t, [[1, 0, 0, 1]]),
                           float(quantus.Focus(disable_warnings=True).evaluate_batch(a_batch=a.copy(),
                                                                                    c_batch=[[1, 0, 0, 1]])[0]))):
            assert ours.item() == pytest.approx(ref, abs=1e-6)
    # Quantus normalises by the batch's maximum: image 0's effective complexity changes when a map
    # with a larger maximum joins it; here each map keeps its own score
    a0 = np.random.default_rng(5).standard_normal((1, 1, 8, 8)).astype(np.float32)
    pair = np.concatenate([a0, 10 * a0])
    x2, y2 = np.concatenate([x, x]), np.array([0, 0])
    ec = quantus.EffectiveComplexity(eps=0.2, disable_warnings=True)
    alone = ec(model=None, x_batch=x, y_batch=y, a_batch=a0.copy(), channel_first=True)[0]
    batched = ec(model=None, x_batch=x2, y_batch=y2, a_batch=pair.copy(), channel_first=True)[0]
    assert alone != batched
    assert xm.effective_complexity(torch.from_numpy(pair), eps=0.2).tolist() == [float(alone)] * 2


class _Shifted(nn.Module):
    """Two logits: [mean(x), 1 - mean(x)]; the prediction flips when noise lifts the mean past 0.5."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([m, 1 - m], 1)


def _feed(noises: list[np.ndarray]):
    """A perturbation handing out the given noise rows in order (Quantus' float64 sum, cast back)."""
    rows = iter(noises)

    def perturb(xr, generator):
        return torch.stack([(xr[i].double() + torch.from_numpy(next(rows)).reshape(xr[i].shape)).to(xr.dtype)
                            for i in range(len(xr))])
    return perturb


@pytest.mark.parity
def test_robustness_metrics_equal_quantus_on_the_same_noise():
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = model(x).argmax(1)
    grad = xt.Gradient(model)

    def explain(model, inputs, targets, **kwargs):
        return grad(torch.from_numpy(np.asarray(inputs)), target=torch.as_tensor(targets)).numpy()

    kw = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, channel_first=True,
              explain_func=explain)
    d, samples = x.numel(), 4

    np.random.seed(7)
    ref = quantus.LocalLipschitzEstimate(nr_samples=samples, disable_warnings=True)(**kw)[0]
    np.random.seed(7)
    noise = [np.random.normal(0.0, 0.1, size=(1, d)) for _ in range(samples)]
    before = snapshot(model, x)
    ours = xm.local_lipschitz_estimate(grad, x, samples=samples, perturbation=_feed(noise))
    assert ours.item() == pytest.approx(float(ref), rel=1e-5)
    for metric, fn in ((quantus.RelativeInputStability, xm.relative_input_stability),
                       (quantus.RelativeOutputStability, xm.relative_output_stability)):
        np.random.seed(7)
        ref = metric(nr_samples=samples, disable_warnings=True)(**kw)[0]
        np.random.seed(7)
        noise = [np.random.uniform(0.02, 0.2, size=(1, d)) for _ in range(samples)]
        res = fn(grad, x, samples=samples, perturbation=_feed(noise))
        assert res.kept.item() == samples and res.stability.item() == pytest.approx(float(ref), rel=1e-5)
    assert_no_trace(before, snapshot(model, x))

    # representation stability: every layer (Quantus' default) or a named one; a model without
    # in-place ops (Quantus keeps a view of each output, which a later in-place ReLU rewrites)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()
    sgrad = xt.Gradient(seq)
    kw.update(model=seq, y_batch=seq(x).argmax(1).numpy(),
              explain_func=lambda model, inputs, targets, **k: sgrad(torch.from_numpy(inputs),
                                                                     target=torch.as_tensor(targets)).numpy())
    before = snapshot(seq, x)
    for q_layers, layers in (({}, None), ({"layer_names": ["1"]}, ["1"])):
        np.random.seed(7)
        ref = quantus.RelativeRepresentationStability(nr_samples=samples, disable_warnings=True, **q_layers)(**kw)[0]
        np.random.seed(7)
        noise = [np.random.uniform(0.02, 0.2, size=(1, d)) for _ in range(samples)]
        res = xm.relative_representation_stability(sgrad, x, layers=layers, samples=samples,
                                                   perturbation=_feed(noise))
        assert res.stability.item() == pytest.approx(float(ref), rel=1e-5)
    assert_no_trace(before, snapshot(seq, x))
    with pytest.raises(xt.XaiError, match="no layer"):
        xm.relative_representation_stability(sgrad, x, layers=["nope"], samples=2)

    # a copy that changes the prediction: Quantus' np.max over NaN gives NaN for the image; the
    # paper's maximum is over the copies that keep it
    flip, xs = _Shifted().eval(), torch.linspace(-0.1, 1.0, 16).reshape(1, 1, 4, 4)  # mean 0.45: class 1
    ex = xt.InputXGradient(flip)
    steps = [np.full((1, 16), v) for v in (0.02, 0.03, 0.1)]     # the last lifts the mean to 0.55
    kws = dict(model=flip, x_batch=xs.numpy(), y_batch=np.array([1]), a_batch=None, channel_first=True,
               explain_func=lambda model, inputs, targets, **k: ex(torch.from_numpy(inputs),
                                                                   target=torch.as_tensor(targets)).numpy())
    it = iter(steps)
    q = quantus.RelativeInputStability(nr_samples=3, disable_warnings=True,
                                       perturb_func=lambda arr, indices, **k: arr + next(it))
    assert np.isnan(q(**kws)[0])
    res = xm.relative_input_stability(ex, xs, samples=3, perturbation=_feed(steps))
    assert res.kept.item() == 2 and math.isfinite(res.stability.item())


def test_robustness_counts_calls_batches_all_copies_and_draws_per_image():
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    grad = xt.Gradient(model)
    calls: list[int] = []

    def explainer(z, target=None):
        calls.append(len(z))
        return grad(z, target=target)

    before = snapshot(model, x)
    res = xm.relative_output_stability(explainer, x, samples=5, model=model, batch_size=8)
    assert calls == [3, 8, 7] and res.kept.shape == (3,)         # x, then 15 copies in chunks of 8
    assert_no_trace(before, snapshot(model, x))
    lle = xm.local_lipschitz_estimate(grad, x, samples=5)
    assert lle.dtype == torch.float64 and bool((lle > 0).all())
    torch.testing.assert_close(xm.local_lipschitz_estimate(grad, x[:1], samples=5), lle[:1])
    # an explanation that ignores the input is perfectly robust
    assert xm.local_lipschitz_estimate(lambda z, target=None: torch.ones_like(z), x, target=0,
                                       samples=3).tolist() == [0.0] * 3
    for call in (lambda: xm.local_lipschitz_estimate(grad, x, samples=0),
                 lambda: xm.local_lipschitz_estimate(grad, x, std=-0.1),
                 lambda: xm.relative_input_stability(grad, x, noise=(0.2, 0.1)),
                 lambda: xm.relative_input_stability(explainer, x, target=1)):     # no model for the check
        with pytest.raises(xt.XaiError):
            call()


@pytest.mark.parity
def test_random_logit_equals_quantus_with_2d_ssim_and_names_the_other_class():
    quantus = pytest.importorskip("quantus")
    from skimage.metrics import structural_similarity
    torch.manual_seed(0)
    model = SmallNet(classes=2).eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    grad = xt.Gradient(model)
    y = model(x).argmax(1)

    def explain(model, inputs, targets, **kwargs):   # one-channel maps, as the metric compares
        return grad(torch.from_numpy(np.asarray(inputs)), target=torch.as_tensor(targets)).sum(1, keepdims=True).numpy()

    def ssim_2d(a, b, batched=True, **kwargs):       # the paper's SSIM: on the 2-D maps
        out = []
        for aa, bb in zip(a, b):
            both = np.concatenate([aa, bb])
            out.append(structural_similarity(aa.reshape(8, 8), bb.reshape(8, 8), data_range=float(np.ptp(both))))
        return out

    kw = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, channel_first=True,
              explain_func=explain)
    ref = quantus.RandomLogit(num_classes=2, similarity_func=ssim_2d, disable_warnings=True)(**kw)[0]
    res = xm.random_logit(grad, x)
    assert res.other.tolist() == [1 - int(y)]                    # two classes: the other one
    assert res.similarity.item() == pytest.approx(float(ref), abs=1e-6)
    flat = quantus.RandomLogit(num_classes=2, disable_warnings=True)(**kw)[0]   # Quantus' 1-D SSIM differs
    assert abs(float(flat) - res.similarity.item()) > 1e-3
    model5 = SmallNet().eval()
    r5 = xm.random_logit(xt.Gradient(model5), torch.rand(4, 3, 8, 8), target=2, seed=1)
    assert (r5.other != 2).all() and torch.equal(r5.other, xm.random_logit(
        xt.Gradient(model5), torch.rand(4, 3, 8, 8), target=2, seed=1).other)
    with pytest.raises(xt.XaiError):
        xm.random_logit(xt.Gradient(model5), torch.rand(1, 3, 8, 8), num_classes=9)
