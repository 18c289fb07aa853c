"""LIME on superpixels: the ridge against scikit-learn, parity with the lime package, call
counts, seeds, bad inputs, no trace (the shared superpixel pieces: test_region_superpixel.py)."""
import functools

import numpy as np
import pytest
import torch
from test_region_superpixel import grid
from torch import nn

import xai_torch as xt
from xai_torch.region import LIME, weighted_ridge
from xai_torch.region.lime import cosine_to_ones, lime_kernel
from xai_torch.region.superpixel import Design, paint, segment_means

from conftest import Counting, Scaled, SmallNet, assert_no_trace, snapshot


@pytest.fixture
def sharp():
    return Scaled().eval()


@pytest.fixture
def x24():
    return torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(5))


# --- pure pieces ----------------------------------------------------------------------------------
def test_weighted_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    g = np.random.default_rng(0)
    z = g.integers(0, 2, (3, 200, 7)).astype(np.float64)
    y = z @ g.normal(size=(7, 2)) + 0.3 * g.normal(size=(3, 200, 2))
    w = g.uniform(0.1, 2.0, (3, 200))
    fit = weighted_ridge(torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(w), alpha=1.0)
    for b in range(3):
        for k in range(2):
            ref = Ridge(alpha=1.0, fit_intercept=True).fit(z[b], y[b, :, k], sample_weight=w[b])
            np.testing.assert_allclose(fit["coef"][b, k].numpy(), ref.coef_, rtol=1e-10, atol=1e-12)
            assert float(fit["intercept"][b, k]) == pytest.approx(ref.intercept_, rel=1e-10, abs=1e-12)
            r2 = r2_score(y[b, :, k], ref.predict(z[b]), sample_weight=w[b])
            assert float(fit["r2"][b, k]) == pytest.approx(r2, rel=1e-10)
            assert float(fit["local_pred"][b, k]) == pytest.approx(ref.predict(np.ones((1, 7)))[0], rel=1e-10)
    # a padding column (all zero) gets a zero coefficient and changes nothing else
    padded = torch.cat([torch.from_numpy(z), torch.zeros(3, 200, 1, dtype=torch.float64)], 2)
    fit2 = weighted_ridge(padded, torch.from_numpy(y), torch.from_numpy(w))
    assert bool((fit2["coef"][..., -1] == 0).all())
    torch.testing.assert_close(fit2["coef"][..., :-1], fit["coef"], rtol=1e-12, atol=1e-14)


def test_constant_targets_r2_like_sklearn():
    z = torch.randint(0, 2, (1, 30, 4)).double()
    fit = weighted_ridge(z, torch.ones(1, 30, 1, dtype=torch.float64), torch.ones(1, 30, dtype=torch.float64))
    assert float(fit["r2"]) == 1.0 and bool((fit["coef"].abs() < 1e-12).all())


def test_kernel_and_cosine_distance_as_lime():
    from sklearn.metrics import pairwise_distances

    z = np.random.default_rng(1).integers(0, 2, (50, 9))
    z[0] = 1
    z[1] = 0
    ref = pairwise_distances(z, z[:1], metric="cosine").ravel()
    d = cosine_to_ones(torch.from_numpy(z), 9)
    np.testing.assert_allclose(d.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(lime_kernel(d, 0.25).numpy(), np.sqrt(np.exp(-(ref**2) / 0.25**2)), rtol=1e-12)


# --- parity with lime ------------------------------------------------------------------------------
def _lime_package(model, x, seg, samples, seed):
    from lime import lime_image

    def classifier(images):
        t = torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
        with torch.no_grad():
            return model(t).softmax(1).numpy()

    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        x[0].permute(1, 2, 0).double().numpy(), classifier, top_labels=1, hide_color=None,
        num_samples=samples, batch_size=100, segmentation_fn=lambda image: seg.numpy())
    label = exp.top_labels[0]
    coef = np.zeros(int(seg.max()) + 1)
    for feature, c in exp.local_exp[label]:
        coef[feature] = c
    return exp, label, coef


@pytest.mark.parity
def test_parity_with_lime_on_its_own_design(sharp, x24):
    """With lime's random design matrix, the whole pipeline (mean fill, composition, softmax,
    kernel, weighted ridge) gives lime's coefficients, intercept, R^2 and local prediction."""
    seg, samples, seed = grid(24, 24, 3, 4), 300, 7

    class LimeDesign(LIME):
        def _design(self, counts, generator, device):
            rs = np.random.RandomState(seed)
            rs.randint(0, 1000)  # lime draws the segmentation seed first
            data = rs.randint(0, 2, samples * counts[0]).reshape(samples, counts[0])
            data[0] = 1
            z = torch.from_numpy(data).bool()[None]
            return Design(z, torch.tensor([samples]))

    res = LimeDesign(sharp, samples=samples).explain(x24[:1], segments=seg)
    exp, label, coef = _lime_package(sharp, x24[:1], seg, samples, seed)
    assert int(res.targets) == label
    np.testing.assert_allclose(res.weights[0].double().numpy(), coef, rtol=1e-4, atol=1e-7)
    assert float(res.intercept) == pytest.approx(exp.intercept[label], rel=1e-5)
    assert float(res.r2) == pytest.approx(exp.score, rel=1e-4)
    assert float(res.local_pred) == pytest.approx(float(np.ravel(exp.local_pred)[0]), rel=1e-5)


@pytest.mark.parity
def test_weights_correlate_with_lime(sharp, x24):
    seg = grid(24, 24, 4, 4)
    res = LIME(sharp, samples=2000, seed=0).explain(x24[:1], segments=seg)
    exp, label, coef = _lime_package(sharp, x24[:1], seg, 2000, 0)
    assert int(res.targets) == label
    r = np.corrcoef(res.weights[0].numpy(), coef)[0, 1]
    assert r >= 0.95, f"correlation with lime {r:.3f}"
    assert float(res.r2) == pytest.approx(exp.score, abs=0.05)


# --- the result --------------------------------------------------------------------------------------
def test_explain_fields(sharp, x24):
    seg = grid(24, 24, 3, 3)
    res = LIME(sharp, samples=200, seed=0).explain(x24, segments=seg)
    with torch.no_grad():
        prob = sharp(x24).softmax(1)
    assert res.attributions.shape == (2, 1, 24, 24) and res.attributions.dtype == torch.float32
    torch.testing.assert_close(res.targets, prob.argmax(1))
    torch.testing.assert_close(res.scores, prob.max(1).values)
    assert res.weights.shape == (2, 9) and res.num_segments.tolist() == [9, 9]
    assert bool((res.segments == seg).all()) and res.segments.shape == (2, 24, 24)
    torch.testing.assert_close(res.attributions[:, 0], paint(res.weights, res.segments)[:, 0])
    torch.testing.assert_close(res.local_pred, res.intercept + res.weights.sum(1))
    assert bool((res.r2 > 0.5).all() and (res.r2 <= 1).all())
    assert res.model_calls == 400
    logit = LIME(sharp, samples=200, seed=0, output="logit").explain(x24, target=[1, 2], segments=seg)
    with torch.no_grad():
        torch.testing.assert_close(logit.scores, sharp(x24)[[0, 1], [1, 2]])
    # the map of __call__ is the map of explain
    assert torch.equal(LIME(sharp, samples=200, seed=0)(x24, segments=seg), res.attributions)


def test_several_targets_per_image_share_the_samples(sharp, x24):
    seg = grid(24, 24, 2, 3)
    lime = LIME(sharp, samples=100, seed=3)
    both = lime.explain(x24, target=[[0, 3], [1, 4]], segments=seg)
    assert both.attributions.shape == (2, 2, 1, 24, 24) and both.weights.shape == (2, 2, 6)
    assert both.targets.tolist() == [[0, 3], [1, 4]] and both.model_calls == 200
    one = lime.explain(x24, target=[3, 4], segments=seg)
    torch.testing.assert_close(both.weights[:, 1], one.weights)
    torch.testing.assert_close(both.r2[:, 1], one.r2)


def test_callable_target(sharp, x24):
    seg = grid(24, 24, 2, 2)
    res = LIME(sharp, samples=64, seed=0).explain(x24, target=lambda out: out[:, 2] - out[:, 0], segments=seg)
    assert res.targets is None and res.attributions.shape == (2, 1, 24, 24)
    with torch.no_grad():
        out = sharp(x24)
    torch.testing.assert_close(res.scores, out[:, 2] - out[:, 0])


def test_model_calls_follow_the_batching_plan(sharp, x24):
    model = Counting(sharp)
    seg = grid(24, 24, 2, 2)
    res = LIME(model, samples=50, batch_size=16, seed=0).explain(x24, segments=seg)
    # the clean images (row 0 of both), then 2 x 49 perturbations in chunks of 16
    assert model.sizes == [2] + [16] * 6 + [2] and res.model_calls == 100
    model.sizes.clear()
    LIME(model, samples=50, seed=0)(x24[:1], segments=seg)
    assert model.sizes == [1, 49]  # automatic chunks: all 49 perturbations of a small image at once


def test_seeded_runs_repeat(sharp, x24):
    seg = grid(24, 24, 3, 3)
    a = LIME(sharp, samples=64, seed=11)(x24, segments=seg)
    b = LIME(sharp, samples=64, seed=11)(x24, segments=seg)
    assert torch.equal(a, b)
    c = LIME(sharp, samples=64, seed=12)(x24, segments=seg)
    assert not torch.equal(a, c)
    # an image's draws do not depend on the rest of the batch
    d = LIME(sharp, samples=64, seed=11)(x24[:1], segments=seg)
    torch.testing.assert_close(d, a[:1])


def test_labels_are_contiguous(sharp, x24):
    # labels 3, 10, 42: three features, none void, and every one of them is switched
    seg = torch.full((24, 24), 3)
    seg[:, 8:16] = 10
    seg[:, 16:] = 42
    model = Counting(sharp)
    res = LIME(model, samples=40, seed=0, batch_size=64).explain(x24[:1], segments=seg)
    assert res.segments.unique().tolist() == [0, 1, 2] and res.weights.shape == (1, 3)
    assert bool((res.weights != 0).all())
    # slic through the segmenter: labels from 0, no empty feature
    from xai_torch import segmentation

    res = LIME(sharp, samples=40, seed=0, segmenter="slic").explain(x24)
    for b in range(2):
        n = int(res.num_segments[b])
        assert res.segments[b].unique().tolist() == list(range(n))
        assert bool((res.weights[b, :n] != 0).all()) and bool((res.weights[b, n:] == 0).all())
    assert torch.equal(res.segments, segmentation.slic(x24))


def test_greyscale_input():
    from xai_torch import segmentation

    model = Scaled(channels=1)
    g = torch.Generator().manual_seed(0)
    x = nn.functional.interpolate(torch.rand(2, 1, 4, 4, generator=g), size=32, mode="nearest")
    x = x + 0.05 * torch.randn(2, 1, 32, 32, generator=g)
    quick = functools.partial(segmentation.quickshift, kernel_size=2, max_dist=6)  # small image: finer
    for hide, segmenter in (("mean", quick), ("gray", "slic"), ("blur", "felzenszwalb"), (0.0, quick)):
        res = LIME(model, samples=40, seed=0, hide=hide, segmenter=segmenter).explain(x)
        assert res.attributions.shape == (2, 1, 32, 32) and bool(torch.isfinite(res.attributions).all())
        assert int(res.num_segments.min()) >= 2


def test_hide_modes_reach_the_model(sharp, x24):
    seg = grid(24, 24, 2, 2)
    model = Counting(sharp, keep_inputs=True)
    for hide, expect in (("mean", segment_means(x24[:1], seg[None])), (0.25, torch.full_like(x24[:1], 0.25)),
                         ("blur", xt.path.gaussian_blur(x24[:1], 10.0))):
        model.inputs.clear()
        LIME(model, samples=200, seed=0, hide=hide, batch_size=500).explain(x24[:1], segments=seg)
        z = model.inputs[1]
        hidden = (z == expect).flatten(1).all(1)  # some perturbations hide every superpixel
        assert bool(hidden.any()), hide


def test_no_trace(sharp, x24):
    before = snapshot(sharp, x24)
    LIME(sharp, samples=30, seed=0).explain(x24, segments=grid(24, 24, 2, 2))
    assert_no_trace(before, snapshot(sharp, x24))
    train = Scaled().train()  # BatchNorm statistics must come back
    before = snapshot(train, x24)
    with pytest.warns(xt.XaiWarning, match="training mode"):
        LIME(train, samples=30, seed=0)(x24, segments=grid(24, 24, 2, 2))
    assert_no_trace(before, snapshot(train, x24))


def test_bad_inputs_raise_before_any_model_call(sharp, x24):
    model = Counting(sharp)
    lime = LIME(model, samples=20)
    seg = grid(24, 24, 2, 2)
    cases = [
        ({"segments": torch.zeros(3, 24, 24, dtype=torch.long)}, "segments must be"),
        ({"segments": torch.zeros(24, 23, dtype=torch.long)}, "segments must be"),
        ({"segments": torch.zeros(24, 24, dtype=torch.long)}, "1 segment"),
        ({"segments": seg.float()}, "integer labels"),
        ({"segments": seg, "image": x24}, "not both"),
        ({"segments": seg, "baseline": 0}, "unexpected call argument"),
    ]
    for kwargs, match in cases:
        with pytest.raises(xt.XaiError, match=match):
            lime(x24, **kwargs)
    with pytest.raises(xt.XaiError, match="hide of shape"):
        LIME(model, hide=torch.zeros(5, 1, 1))(x24, segments=seg)
    with pytest.raises(xt.XaiError, match="segmenter's labels"):
        LIME(model, segmenter=lambda x, image=None: torch.zeros(2, 24, 24, dtype=torch.long))(x24)
    assert model.sizes == []
    for kwargs, match in [({"samples": 0}, "samples"), ({"samples": 1}, "samples"), ({"samples": 2.5}, "samples"),
                          ({"hide": "grey"}, "hide"), ({"hide": "noise"}, "hide"), ({"hide": None}, "hide"),
                          ({"output": "probability"}, "output"), ({"kernel_width": 0}, "kernel_width"),
                          ({"alpha": -1}, "alpha"), ({"segmenter": "watershed"}, "segmenter"),
                          ({"segmenter": 3}, "segmenter"), ({"seed": 1.5}, "seed"), ({"blur_sigma": -1}, "blur_sigma"),
                          ({"normalize": (0.5, 0.0)}, "std")]:
        with pytest.raises(xt.XaiError, match=match):
            LIME(sharp, **kwargs)
    with pytest.raises(xt.XaiError, match="out of range"):  # checked on the clean pass, the first call
        lime(x24, target=7, segments=seg)


def test_repr():
    text = repr(LIME(SmallNet(), samples=500, hide="blur", blur_sigma=3, seed=1))
    assert text.startswith("LIME(model=SmallNet, samples=500, kernel_width=0.25")
    assert "hide='blur'" in text and "blur_sigma=3.0" in text and "segmenter='quickshift'" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU path; CI has none)")
def test_cuda_model_cpu_input(x24):
    model = Scaled().cuda()
    seg = grid(24, 24, 3, 3)
    res = LIME(model, samples=100, seed=0).explain(x24, segments=seg)
    assert res.attributions.device.type == "cpu" and res.segments.device.type == "cpu"
    cpu = LIME(Scaled(), samples=100, seed=0).explain(x24, segments=seg)
    assert res.weights.shape == cpu.weights.shape


# --- Captum's options: lasso surrogate, user similarity and perturbation ---------------------------
def test_weighted_lasso_matches_sklearn():
    from sklearn.linear_model import Lasso

    from xai_torch.region import weighted_lasso

    g = np.random.default_rng(0)
    z = g.integers(0, 2, (2, 300, 12)).astype(np.float64)
    y = z @ g.normal(size=(12, 2)) * 0.1 + 0.05 * g.normal(size=(2, 300, 2))
    w = g.uniform(0.1, 2.0, (2, 300))
    padded = np.concatenate([z, np.zeros((2, 300, 1))], 2)  # a padding column gets 0
    fit = weighted_lasso(torch.from_numpy(padded), torch.from_numpy(y), torch.from_numpy(w), alpha=0.01)
    assert bool((fit["coef"][..., -1] == 0).all())
    zeros = 0
    for b in range(2):
        for k in range(2):
            ref = Lasso(alpha=0.01, tol=1e-14, max_iter=100000).fit(z[b], y[b, :, k], sample_weight=w[b])
            np.testing.assert_allclose(fit["coef"][b, k, :-1].numpy(), ref.coef_, rtol=1e-9, atol=1e-12)
            assert float(fit["intercept"][b, k]) == pytest.approx(ref.intercept_, rel=1e-9, abs=1e-12)
            assert float(fit["local_pred"][b, k]) == pytest.approx(ref.predict(np.ones((1, 12)))[0], rel=1e-9)
            zeros += int((ref.coef_ == 0).sum())
            assert torch.equal(fit["coef"][b, k, :-1] == 0, torch.from_numpy(ref.coef_ == 0))  # the same support
    assert zeros > 0  # the penalty does select


def _captum_design(n, s):
    return (torch.rand(n, s, generator=torch.Generator().manual_seed(1)) > 0.5).long()


@pytest.mark.parity
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_lasso_parity_with_captum_lime():
    """Captum's Lime (SkLearnLasso, its default exponential cosine kernel, baseline 0) and ours
    with the same coalitions: the same weights, sparsity included."""
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr import Lime

    from xai_torch.region import exp_kernel_similarity

    model = Scaled(scale=100.0)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    seg, n = grid(12, 12, 3, 3), 80
    z = _captum_design(n, 9)

    def replay(inp, **kwargs):
        yield from (row[None] for row in z)

    for alpha in (0.01, 0.03):
        captum = Lime(model, interpretable_model=SkLearnLasso(alpha=alpha, tol=1e-8, max_iter=100000),
                      perturb_func=replay)
        ref = captum.attribute(x, target=2, feature_mask=seg[None, None].expand(1, 3, 12, 12), baselines=0.0,
                               n_samples=n, perturbations_per_eval=n)
        res = LIME(model, samples=n, surrogate="lasso", alpha=alpha, hide=0.0, output="logit",
                   similarity=exp_kernel_similarity(), perturbation=lambda x, s, k, g: z).explain(
            x, target=2, segments=seg)
        theirs = torch.stack([ref[0, 0][seg == j][0] for j in range(9)])
        torch.testing.assert_close(res.weights[0], theirs, rtol=1e-4, atol=1e-6)
        assert torch.equal(res.weights[0] == 0, theirs == 0) and int((theirs == 0).sum()) >= 2
        assert res.model_calls == n + 1  # the clean image, scored besides the user's rows


def test_user_similarity_and_perturbation(sharp, x24):
    seg = grid(24, 24, 2, 3)
    seen = []

    def similarity(original, perturbed, z):
        seen.append((original.shape, perturbed.shape, z.shape, z.dtype))
        return 1.0 / (1.0 + (original - perturbed).flatten(1).norm(dim=1))

    def perturbation(x, num_features, samples, generator):
        assert x.shape == (3, 24, 24) and num_features == 6
        return torch.rand(samples, num_features, generator=generator) > 0.3

    model = Counting(sharp).eval()
    res = LIME(model, samples=40, seed=0, similarity=similarity, perturbation=perturbation,
               batch_size=32).explain(x24, segments=seg)
    assert res.model_calls == 2 * 41 and model.sizes == [2, 32, 32, 16]
    assert seen[0] == ((2, 3, 24, 24), (2, 3, 24, 24), (2, 6), x24.dtype)  # row 0: the images themselves
    assert sum(s[0][0] for s in seen) == 2 * 41
    # the same fit by hand: the user's rows and weights, a ridge with intercept, the image weighing 0
    z = torch.stack([perturbation(x24[0], 6, 40, g) for g in [xt.seeding.make_generator(0, torch.device("cpu"))]
                     for _ in range(2)])
    keep = z[:, :, seg]  # (2, 40, 24, 24)
    hidden = segment_means(x24, seg.expand(2, 24, 24))
    imgs = torch.where(keep[:, :, None], x24[:, None], hidden[:, None])
    with torch.no_grad():
        probs = sharp(imgs.flatten(0, 1)).softmax(1).view(2, 40, -1)
    w = 1.0 / (1.0 + (x24[:, None] - imgs).flatten(2).norm(dim=2))
    y = probs[torch.arange(2)[:, None], :, res.targets[:, None]].squeeze(1)  # (2, 40)
    ref = weighted_ridge(z.double(), y[..., None].double(), w.double())
    torch.testing.assert_close(res.weights, ref["coef"][:, 0].float(), rtol=1e-4, atol=1e-6)
    # lime's default kernel with the user's draws, and a user kernel with lime's draws
    LIME(sharp, samples=20, seed=0, perturbation=perturbation)(x24, segments=seg)
    LIME(sharp, samples=20, seed=0, similarity=similarity, surrogate="lasso")(x24, segments=seg)


def test_bad_options_raise_before_any_model_call(sharp, x24):
    model = Counting(sharp).eval()
    seg = grid(24, 24, 2, 2)
    with pytest.raises(xt.XaiError, match=r"surrogate.*'ridge', 'lasso'"):
        LIME(model, surrogate="elasticnet")
    for kwargs, match in [({"similarity": 3}, "similarity must be None or a callable"),
                          ({"perturbation": "bernoulli"}, "perturbation must be None or a callable"),
                          ({"surrogate": "lasso", "alpha": 0}, "alpha")]:
        with pytest.raises(xt.XaiError, match=match):
            LIME(model, **kwargs)
    bad = [({"perturbation": lambda x, s, n, g: torch.ones(n, s + 1)}, r"\(samples, num_features\) = \(30, 4\)"),
           ({"perturbation": lambda x, s, n, g: torch.full((n, s), 0.5)}, "0/1"),
           ({"perturbation": lambda x, s, n, g: [[1] * s] * n}, r"\(30, 4\) tensor"),
           ({"similarity": lambda a, b, z: torch.ones(a.shape[0], 2)}, r"similarity must return a \(2,\) tensor"),
           ({"similarity": lambda a, b, z: -torch.ones(a.shape[0])}, ">= 0")]
    for kwargs, match in bad:
        with pytest.raises(xt.XaiError, match=match):
            LIME(model, samples=30, **kwargs)(x24, segments=seg)
    assert model.sizes == []
    assert "surrogate='lasso', alpha=0.01" in repr(LIME(sharp, surrogate="lasso"))


def test_compose_writes_runs_of_images_straight_into_the_batch():
    """Rows of several images (in runs, one image repeated) equal the gathered reference."""
    from xai_torch.region.superpixel import compose

    g = torch.Generator().manual_seed(0)
    x, hidden = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    labels = torch.randint(0, 5, (3, 4, 4), generator=g)
    z = torch.rand(8, 5, generator=g) > 0.5
    images = torch.tensor([0, 0, 1, 1, 1, 2, 0, 0])  # image 0 in two runs
    keep = z.gather(1, labels.reshape(3, 16)[images]).view(8, 1, 4, 4)
    expected = torch.where(keep, x[images], hidden[images])
    assert torch.equal(compose(x, hidden, labels, z, images, single=False), expected)
