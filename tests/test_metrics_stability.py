"""xt.metrics.stability / samples_needed: sampling variance vs input sensitivity, model calls, errors."""
import math

import pytest
import torch

import xai_torch as xt
from xai_torch.metrics.stability import compare_maps, sample_keyword, top_k_overlap, with_config

from conftest import SmallNet, assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _x(b: int = 3) -> torch.Tensor:
    return torch.rand(b, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _model() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet(classes=5).eval()


def test_closed_form_agreement_of_maps():
    a = torch.arange(16.0).reshape(1, 4, 4).double()
    b = a.clone()
    b[0, 3, 3], b[0, 0, 0] = 0.0, 15.0           # swap the most and the least relevant pixel
    assert top_k_overlap(a, b, 4).item() == 0.75  # {15, 14, 13, 12} vs {14, 13, 12, 0}
    same = compare_maps(a.expand(2, 4, 4), a.expand(2, 4, 4), 3)
    assert same["top_k"].tolist() == [1.0, 1.0] and same["spearman"].tolist() == pytest.approx([1.0, 1.0])
    assert same["ssim"].tolist() == pytest.approx([1.0, 1.0])
    flip = compare_maps(a, -a, 16)
    assert flip["spearman"].item() == pytest.approx(-1.0) and flip["top_k"].item() == 1.0  # k = every pixel


def test_smoothgrad_sampling_variance_sensitivity_and_model_calls():
    model, x = _model(), _x()
    before = snapshot(model, x)
    sg = xt.SmoothGrad(xt.Gradient(model), samples=3, noise=0.2, seed=0)
    res = xt.metrics.stability(sg, x, seeds=3, noise=1e-3, copies=2, k=6, bootstrap=200)
    assert_no_trace(before, snapshot(model, x))
    assert res.seeds == (0, 1, 2) and res.k == 6 and res.sample_keyword == "samples" and res.samples == 3
    # B clean forwards, 3 seeds x B images x 3 noisy gradients, then per copy B forwards + B x 3 gradients
    b = x.shape[0]
    assert res.model_calls == b + 3 * b * 3 + 2 * (b + b * 3)
    assert res.sampling.pairs["spearman"].shape == (b, 3)          # pairs (0,1), (0,2), (1,2)
    # per image: the mean over its pairs; each seed's run is the explainer built with that seed
    runs = [with_config(sg, seed=s)(x).abs().sum(1).double() for s in (0, 1, 2)]
    direct = xt.metrics.spearman(runs[0], runs[2])
    assert torch.allclose(res.sampling.pairs["spearman"][:, 1], direct)
    torch.testing.assert_close(res.sampling.spearman, res.sampling.pairs["spearman"].mean(1))
    # a 1e-3 noise keeps the class and, with the same draws, barely moves the map; seeds move it more
    assert res.kept.tolist() == [1.0, 1.0, 1.0]
    assert res.sensitivity.ci["spearman"].value > 0.99 > res.sampling.ci["spearman"].value
    for scores in (res.sampling, res.sensitivity):
        for m, est in scores.ci.items():
            assert est.low <= est.value <= est.high, m
    # the same seed gives the same numbers
    again = xt.metrics.stability(sg, x, seeds=3, noise=1e-3, copies=2, k=6, bootstrap=200)
    assert again.sampling.ci == res.sampling.ci and torch.equal(again.sensitivity.ssim, res.sensitivity.ssim)


def test_a_factory_and_copies_that_change_the_class():
    model, x = _model(), _x(2)
    noise = torch.rand(8, 8, generator=torch.Generator().manual_seed(5)).double()

    def factory(seed):  # the image's first channel, plus a seed-dependent ripple from seed 1 on
        return lambda z, target=None: (z[:, :1].double() + (seed > 0) * 10 * noise).float()

    res = xt.metrics.stability(factory, x, seeds=[0, 1, 5], noise=50.0, copies=3, model=model, bootstrap=50)
    pairs = res.sampling.pairs["top_k"]
    assert pairs[:, 2].tolist() == [1.0, 1.0]                       # seeds 1 and 5: the same map
    assert res.model_calls == 2 + 3 * 2                              # the factory's maps cost no model call
    flipped = res.kept < 1                                           # a noise of 50 changes some classes
    assert bool(flipped.any())
    nan = torch.isnan(res.sensitivity.pairs["spearman"])
    assert int(nan.sum()) == round(float((1 - res.kept).sum() * 3))  # those copies are left out


def test_samples_needed_doubles_until_the_seeds_agree():
    model, x = _model(), _x(2)
    rise = xt.RISE(model, masks=4, cell=4, seed=0)
    assert sample_keyword(rise) == "masks"
    assert sample_keyword(xt.PartitionSHAP(model, masker="blur(3,3)", max_evals=16, seed=0)) == "max_evals"
    found = xt.metrics.samples_needed(rise, x, threshold=1.0, measure="top_k", max_samples=16, k=4)
    assert [t[0] for t in found.tried] == [4, 8, 16] and found.keyword == "masks"
    assert found.samples is None or found.samples in (4, 8, 16)
    # each step: B clean forwards + 2 seeds x B images x masks (+1 forward per image for RISE's class)
    assert found.model_calls == sum(t[2] for t in found.tried)
    assert all(t[2] >= 2 + 2 * 2 * t[0] for t in found.tried)
    easy = xt.metrics.samples_needed(rise, x, threshold=-1.0, max_samples=16)
    assert easy.samples == 4 and len(easy.tried) == 1


def test_bad_input():
    model, x = _model(), _x(2)
    lime = xt.RISE(model, masks=4, cell=4, seed=0)
    with pytest.raises(xt.XaiError, match="deterministic.*seeds=None"):
        xt.metrics.stability(xt.Gradient(model), x)
    assert xt.metrics.stability(xt.Gradient(model), x, seeds=None, bootstrap=10).sampling is None
    with pytest.raises(xt.XaiError, match=r"k must be an integer in \[1, 64\]"):
        xt.metrics.stability(lime, x, k=65)
    with pytest.raises(xt.XaiError, match="bootstrap must be a positive"):
        xt.metrics.stability(lime, x, bootstrap=0)
    with pytest.raises(xt.XaiError, match="noise must be a positive"):
        xt.metrics.stability(lime, x, noise=0.0)
    with pytest.raises(xt.XaiError, match="at least 2 distinct seeds"):
        xt.metrics.stability(lime, x, seeds=[3])
    with pytest.raises(xt.XaiError, match="nothing to measure"):
        xt.metrics.stability(lime, x, seeds=None, noise=None)
    with pytest.raises(xt.XaiError, match="no sample count"):
        xt.metrics.samples_needed(xt.GradCAM(model, layer="conv2"), x)
    assert math.isnan(compare_maps(torch.ones(1, 2, 2), torch.ones(1, 2, 2), 1)["ssim"].item())
