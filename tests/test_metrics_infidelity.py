"""Infidelity: closed forms on a linear model, square removal, parity with Captum's
``infidelity``, model-call counts, seeds, bad inputs and no trace."""
from __future__ import annotations

import pytest
import torch

import xai_torch as xt
from xai_torch.errors import XaiError
from xai_torch.metrics.infidelity import infidelity, infidelity_from_terms, square_masks

from conftest import Counting, Linear, SmallNet, assert_no_trace, lin_x, snapshot


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



def test_square_masks():
    sq = square_masks(torch.tensor([[2, 1, 3], [1, 0, 0]]), 4, 6)
    assert sq.shape == (2, 1, 4, 6) and sq[0].sum() == 4 and sq[1].sum() == 1
    assert sq[0, 0, 1:3, 3:5].all() and sq[1, 0, 0, 0]



# --------------------------------------------------------------------------------------------
# The metric
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


@pytest.mark.parametrize("perturbation", ["gaussian", "square"])
def test_infidelity_draws_per_image(small, small_x, perturbation):
    """Image i's perturbations depend only on (seed, i) (metrics._random): its value is the same
    alone, in a batch of any size and for any batch_size."""
    attr = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    full = infidelity(small, small_x, attr, perturbation=perturbation, samples=4, seed=6)
    for b, batch_size in ((1, None), (1, 3), (2, 1), (2, 5)):
        part = infidelity(small, small_x[:b], attr[:b], perturbation=perturbation, samples=4, seed=6,
                          batch_size=batch_size)
        torch.testing.assert_close(part.infidelity, full.infidelity[:b], rtol=1e-4, atol=1e-9)
    # the perturbed inputs of image 0 themselves, bit for bit
    seen = []
    for xs in (small_x, small_x[:1]):
        counting = Counting(small, keep_inputs=True)
        infidelity(counting, xs, attr[:len(xs)], perturbation=perturbation, samples=4, seed=6)
        seen.append(torch.cat(counting.inputs[1:])[:4])
    assert torch.equal(seen[0], seen[1])



# --------------------------------------------------------------------------------------------
# Bad inputs: refused before any model call; no trace
def test_infidelity_bad_inputs_before_any_call(small, small_x):
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
    ]
    for call in bad:
        with pytest.raises(XaiError):
            call()
    assert counting.sizes == []
    # a perturbation callable that returns the wrong shape is named in the error
    with pytest.raises(XaiError, match="perturbed images"):
        infidelity(small, small_x, attr, perturbation=lambda xr, gen: xr[:1])


def test_infidelity_no_trace(small_x):
    torch.manual_seed(0)
    model = SmallNet().train()  # BatchNorm statistics must come back
    attr = torch.randn(3, 3, 12, 12)
    before = snapshot(model, small_x, attr)
    with pytest.warns(xt.XaiWarning):
        infidelity(model, small_x, attr, samples=3)
    assert_no_trace(before, snapshot(model, small_x, attr))
