"""Infidelity, max-sensitivity and sensitivity-n: closed forms on linear and quadratic models,
parity with Captum's ``infidelity`` / ``sensitivity_max``, model-call counts, seeds, bad inputs
and no trace."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.errors import XaiError
from xai_torch.metrics._common import correlation
from xai_torch.metrics.robustness import (
    feature_map,
    infidelity,
    infidelity_from_terms,
    max_sensitivity,
    sensitivity_n,
    sensitivity_n_grid,
    square_masks,
    subset_masks,
)

from conftest import Counting, SmallNet, assert_no_trace, snapshot


class Linear(nn.Module):
    """F(x) = W vec(x) + c in float64: gradients are constant, G x I sums are exact drops."""

    def __init__(self, shape=(3, 6, 6), classes: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        d = math.prod(shape)
        self.w = nn.Parameter(torch.randn(classes, d, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(classes, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.c


class Quadratic(nn.Module):
    """Class k scores (k + 1) / 2 * ||x||^2: the gradient of class k is (k + 1) x."""

    def forward(self, x):
        s = x.flatten(1).pow(2).sum(1, keepdim=True) / 2
        return torch.cat([s, 2 * s], 1)


def lin_x(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def noise_pert(std: float = 0.05, seed: int = 5, raw: bool = True):
    """A Captum-style perturb_func with its own generator: ``(I, x - I)`` (raw) or ``x - I``."""
    g = torch.Generator().manual_seed(seed)

    def f(inputs, *_):
        noise = torch.randn(inputs.shape, generator=g, dtype=inputs.dtype) * std
        return (noise, inputs - noise) if raw else inputs - noise

    return f


# --------------------------------------------------------------------------------------------
# Model-free numerics
def test_infidelity_terms_closed_form():
    a = torch.tensor([[1.0, 2.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[2.0, 4.0, -2.0], [1.0, -1.0, 2.0]], dtype=torch.float64)
    v, beta = infidelity_from_terms(a, b)
    assert torch.allclose(v, torch.tensor([(1 + 4 + 1) / 3, 6 / 3], dtype=torch.float64))
    assert torch.equal(beta, torch.ones(2, dtype=torch.float64))
    v, beta = infidelity_from_terms(a, b, normalize=True)
    # row 0: b = 2a, so beta = 2 and the scaled error is 0; row 1: a = 0 -> beta 0, E[b^2]
    assert torch.allclose(beta, torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert torch.allclose(v, torch.tensor([0.0, 2.0], dtype=torch.float64), atol=1e-15)


def test_pearson_and_grid():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    assert torch.allclose(correlation(a, 3 * a + 1), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(correlation(a, -a), -torch.ones(1, dtype=torch.float64))
    assert torch.isnan(correlation(a, torch.ones_like(a))).all()
    b = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)  # centred: cov -1, squares 5 and 1
    assert correlation(a, b).item() == pytest.approx(-1 / math.sqrt(5), abs=1e-12)
    assert sensitivity_n_grid(144) == [1, 2, 3, 5, 8, 14, 24, 40, 68, 115]
    assert sensitivity_n_grid(1) == [1]


def test_feature_map_subsets_and_squares():
    fmap, d = feature_map(5, 7, 3)  # cells of 3 px, the last row/col cropped: 2 x 3 features
    assert d == 6
    assert fmap.view(5, 7)[0].tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert fmap.view(5, 7)[:, 0].tolist() == [0, 0, 0, 3, 3]
    keys = torch.rand(4, 10, generator=torch.Generator().manual_seed(0))
    counts = torch.tensor([1, 3, 10, 5])
    m = subset_masks(keys, counts)
    assert m.sum(1).tolist() == counts.tolist()
    assert torch.equal(m[1], keys[1] <= keys[1].sort().values[2])  # the 3 smallest keys
    sq = square_masks(torch.tensor([[2, 1, 3], [1, 0, 0]]), 4, 6)
    assert sq.shape == (2, 1, 4, 6) and sq[0].sum() == 4 and sq[1].sum() == 1
    assert sq[0, 0, 1:3, 3:5].all() and sq[1, 0, 0, 0]


# --------------------------------------------------------------------------------------------
# Infidelity
def test_infidelity_linear_closed_forms():
    model, x = Linear(), lin_x()
    grad = xt.Gradient(model)(x, target=[1, 2]).double()
    gxi = xt.InputXGradient(model)(x, target=[1, 2]).double()
    kw = dict(target=[1, 2], samples=8)
    # local attribution (the gradient), local perturbation: I.w equals the drop exactly
    assert infidelity(model, x, grad, std=0.1, **kw).infidelity.abs().max() < 1e-24
    # global attribution (G x I) with I = (x - x~) / x, Gaussian and square removal
    assert infidelity(model, x, gxi, std=0.1, global_attribution=True, **kw).infidelity.abs().max() < 1e-24
    sq = infidelity(model, x, gxi, perturbation="square", square=3, global_attribution=True, **kw)
    assert sq.infidelity.abs().max() < 1e-24
    # twice the gradient: the error is (I.w)^2 = drop^2, and normalize recovers beta = 1/2
    seen = []

    def pert(xr, gen):
        i = noise_pert(0.1)(xr)[0]
        seen.append(i)
        return xr - i

    res = infidelity(model, x, 2 * grad, perturbation=pert, **kw)
    i = torch.cat(seen).view(2, 8, -1)
    w = model.w.detach()[[1, 2]]
    expected = ((i * w[:, None]).sum(-1) ** 2).mean(1)
    assert torch.allclose(res.infidelity, expected, rtol=1e-12)
    norm = infidelity(model, x, 2 * grad, std=0.1, normalize=True, **kw)
    assert norm.infidelity.abs().max() < 1e-24
    assert torch.allclose(norm.beta, torch.full((2,), 0.5, dtype=torch.float64))


def test_infidelity_square_removes_one_square(small):
    x = torch.ones(2, 3, 9, 9)
    counting = Counting(small, keep_inputs=True)
    infidelity(counting, x, torch.ones(2, 1, 9, 9), perturbation="square", square=4, samples=30, seed=1)
    z = torch.cat(counting.inputs[1:])  # after the clean forward
    assert z.shape[0] == 60
    removed = z[:, 0] == 0
    assert torch.equal(removed, (z == 0).all(1))  # all channels together
    sides = []
    for m in removed:
        rows, cols = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
        side = len(rows)
        assert side == len(cols) and 1 <= side <= 4 and int(m.sum()) == side * side
        assert rows.tolist() == list(range(rows[0], rows[0] + side))
        sides.append(side)
    assert len(set(sides)) > 1


@pytest.mark.parity
@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_matches_captum(small, small_x, normalize):
    from captum.metrics import infidelity as captum_infidelity
    from captum.metrics import infidelity_perturb_func_decorator

    cls = small(small_x).argmax(1)
    attr = xt.InputXGradient(small)(small_x, target=cls)
    # the same perturbations: each side gets an identically seeded perturb_func, called once
    # on the (B * samples) repeat_interleaved images
    ours = infidelity(small, small_x, attr, perturbation=noise_pert(), samples=7, normalize=normalize)
    ref = captum_infidelity(small, noise_pert(), small_x, attr, target=cls, n_perturb_samples=7, normalize=normalize)
    assert torch.allclose(ours.infidelity, ref.double(), rtol=1e-5, atol=0)
    # global attributions with a baseline: Captum's infidelity_perturb_func_decorator(True)
    base = torch.full_like(small_x, 0.3)
    ours = infidelity(small, small_x, attr, perturbation=noise_pert(raw=False), samples=7, normalize=normalize,
                      global_attribution=True, baseline=0.3)
    ref = captum_infidelity(small, infidelity_perturb_func_decorator(True)(noise_pert(raw=False)), small_x, attr,
                            baselines=base, target=cls, n_perturb_samples=7, normalize=normalize)
    assert torch.allclose(ours.infidelity, ref.double(), rtol=1e-5, atol=0)


def test_infidelity_calls_seeds_and_result(small, small_x):
    counting = Counting(small)
    attr = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    res = infidelity(counting, small_x, attr, samples=5, batch_size=4)
    assert counting.sizes == [3, 4, 4, 4, 3]
    assert res.infidelity.shape == (3,) and res.infidelity.dtype == torch.float64
    # the same seed gives the same value for any batch_size; another seed another one
    again = infidelity(small, small_x, attr, samples=5, batch_size=7)
    assert torch.equal(res.infidelity, again.infidelity)
    sq = infidelity(small, small_x, attr[:, :1], perturbation="square", samples=5, batch_size=2, seed=4)
    assert torch.equal(sq.infidelity, infidelity(small, small_x, attr[:, :1], perturbation="square", samples=5,
                                                 seed=4).infidelity)
    assert not torch.equal(res.infidelity, infidelity(small, small_x, attr, samples=5, seed=1).infidelity)


# --------------------------------------------------------------------------------------------
# Max-sensitivity
def test_max_sensitivity_closed_forms():
    model, x = Linear(), lin_x()
    res = max_sensitivity(xt.Gradient(model), x, samples=4, radius=0.5)
    assert res.max_sensitivity.abs().max() < 1e-12 and res.avg_sensitivity.abs().max() < 1e-12
    # Quadratic: Phi(x) = (k + 1) x, so ||Phi(x + d) - Phi(x)|| / ||Phi(x)|| = ||d|| / ||x||
    q, xq = Quadratic(), lin_x(3)
    d = 0.01 * torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)

    def pert(xr, gen):  # sample j of every image moves by d[j] everywhere
        return xr + d.repeat(xr.shape[0] // 3).view(-1, 1, 1, 1)

    res = max_sensitivity(xt.Gradient(q), xq, target=[0, 1, 1], samples=3, perturbation=pert)
    ratio = d.abs()[None] * math.sqrt(108) / xq.flatten(1).norm(dim=1)[:, None]
    assert torch.allclose(res.max_sensitivity, ratio.amax(1), rtol=1e-12)
    assert torch.allclose(res.avg_sensitivity, ratio.mean(1), rtol=1e-12)
    # a zero clean explanation divides by 1; norm=1 is the L1 norm
    res = max_sensitivity(xt.Gradient(q), torch.zeros_like(xq), target=0, samples=3, perturbation=pert, norm=1)
    assert torch.allclose(res.max_sensitivity, torch.full((3,), 0.03 * 108, dtype=torch.float64))


@pytest.mark.parity
def test_max_sensitivity_matches_captum(small, small_x):
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    cls = small(small_x).argmax(1)
    for seed, batch_size in ((0, None), (3, 4)):
        ours = max_sensitivity(xt.Gradient(small, abs=True), small_x, samples=6, seed=seed, batch_size=batch_size)
        torch.manual_seed(seed)  # Captum's default noise: one uniform_ draw on the global generator
        ref = sensitivity_max(Saliency(small).attribute, small_x, target=cls, n_perturb_samples=6)
        assert torch.allclose(ours.max_sensitivity, ref.double(), rtol=1e-6, atol=1e-9)


def test_max_sensitivity_pins_clean_class_and_batches(small, small_x):
    counting = Counting(small)
    seen = []
    grad = xt.Gradient(counting)

    def explainer(x, target=None):
        seen.append(torch.as_tensor(target).clone())
        return grad(x, target=target)

    clean = small(small_x).argmax(1)
    res = max_sensitivity(explainer, small_x, samples=5, radius=20.0, model=counting, batch_size=4)
    # one forward pins the classes, one explanation of x, then chunks of at most 4 noisy images
    assert counting.sizes == [3, 3, 4, 4, 4, 3]
    assert torch.equal(torch.cat(seen[1:]), clean.repeat_interleave(5))
    # the noise (seed 0: the same stream as one uniform_ draw) flips some argmax, and the clean
    # class is kept anyway
    noise = torch.empty(15, 3, 12, 12).uniform_(-20.0, 20.0, generator=torch.Generator().manual_seed(0))
    assert (small(small_x.repeat_interleave(5, 0) + noise).argmax(1) != clean.repeat_interleave(5)).any()
    assert (res.max_sensitivity >= res.avg_sensitivity).all()
    # an xai_torch explainer reports its own classes: no extra forward
    counting.sizes.clear()
    again = max_sensitivity(xt.Gradient(counting), small_x, samples=5, radius=20.0, batch_size=4)
    assert counting.sizes == [3, 4, 4, 4, 3]
    assert torch.allclose(again.max_sensitivity, res.max_sensitivity, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Sensitivity-n
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
    z = torch.cat(counting.inputs[1:]).view(2, 3, 3, 3, 12, 12)  # (n, draw, image, C, H, W)
    removed = (z == -7.0).all(3)
    assert removed[0].flatten(2).sum(-1).eq(1).all() and removed[1].flatten(2).sum(-1).eq(5).all()
    assert torch.equal(z[0, :, 1][~removed[0, :, 1][:, None].expand(-1, 3, -1, -1)],
                       small_x[1].expand(3, -1, -1, -1)[~removed[0, :, 1][:, None].expand(-1, 3, -1, -1)])
    # the subsets of the same seed do not depend on batch_size
    again = sensitivity_n(small, small_x, attr, n=[1, 5], subsets=3, baseline=-7.0)
    assert torch.equal(res.sums, again.sums) and torch.allclose(res.deltas, again.deltas, rtol=1e-12)
    other = sensitivity_n(small, small_x, attr, n=[1, 5], subsets=3, baseline=-7.0, seed=1)
    assert not torch.equal(res.sums, other.sums)


# --------------------------------------------------------------------------------------------
# Bad inputs: refused before any model call; no trace
def test_bad_inputs_before_any_call(small, small_x):
    counting = Counting(small)
    attr = torch.ones(3, 3, 12, 12)
    bad = [
        lambda: infidelity(counting, small_x, torch.ones(3, 3, 6, 6)),
        lambda: infidelity(counting, small_x, attr, perturbation="uniform"),
        lambda: infidelity(counting, small_x, attr, std=0.0),
        lambda: infidelity(counting, small_x, attr, samples=0),
        lambda: infidelity(counting, small_x, attr, baseline=torch.zeros(2, 3, 12, 12)),
        lambda: infidelity(counting, small_x, attr, target=[[1, 2]] * 3),
        lambda: infidelity(counting, small_x.long(), attr),
        lambda: max_sensitivity(lambda x, target=None: x, small_x),  # no class to pin
        lambda: max_sensitivity("grad", small_x, target=0),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, radius=-1.0),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, norm="nuc"),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, target=[[0, 1]] * 3),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, perturbation=3),
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
    # a perturbation callable that returns the wrong shape is named in the error
    with pytest.raises(XaiError, match="perturbed images"):
        infidelity(small, small_x, attr, perturbation=lambda xr, gen: xr[:1])


def test_no_trace(small_x):
    torch.manual_seed(0)
    model = SmallNet().train()  # BatchNorm statistics must come back
    attr = torch.randn(3, 3, 12, 12)
    before = snapshot(model, small_x, attr)
    with pytest.warns(xt.XaiWarning):
        infidelity(model, small_x, attr, samples=3)
    with pytest.warns(xt.XaiWarning):
        sensitivity_n(model, small_x, attr, n=[2], subsets=3)
    with pytest.warns(xt.XaiWarning):
        max_sensitivity(xt.Gradient(model), small_x, samples=2)
    assert_no_trace(before, snapshot(model, small_x, attr))
