"""Max-sensitivity and avg-sensitivity: closed forms on linear and quadratic models, parity with
Captum's ``sensitivity_max``, pinned classes, batching, bad inputs and no trace."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.errors import XaiError
from xai_torch.metrics.sensitivity import max_sensitivity

from conftest import Counting, Linear, SmallNet, assert_no_trace, lin_x, snapshot


class Quadratic(nn.Module):
    """Class k scores (k + 1) / 2 * ||x||^2: the gradient of class k is (k + 1) x."""

    def forward(self, x):
        s = x.flatten(1).pow(2).sum(1, keepdim=True) / 2
        return torch.cat([s, 2 * s], 1)



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


def test_max_sensitivity_draws_per_image(small, small_x):
    """Image i's noise depends only on (seed, i) (metrics._random): the same alone, in a batch
    of any size and for any batch_size."""
    seen = []
    grad = xt.Gradient(small)

    def explainer(x, target=None):
        seen.append(x.clone())
        return grad(x, target=target)

    full = max_sensitivity(explainer, small_x, samples=4, seed=6, model=small)
    noisy_full = torch.cat(seen[1:])
    for b, batch_size in ((1, None), (1, 3), (2, 1), (2, 5)):
        seen.clear()
        part = max_sensitivity(explainer, small_x[:b], samples=4, seed=6, model=small, batch_size=batch_size)
        assert torch.equal(torch.cat(seen[1:]), noisy_full[:4 * b])  # the noisy images, bit for bit
        torch.testing.assert_close(part.max_sensitivity, full.max_sensitivity[:b], rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(part.avg_sensitivity, full.avg_sensitivity[:b], rtol=1e-4, atol=1e-9)



# --------------------------------------------------------------------------------------------
# Bad inputs: refused before any model call; no trace
def test_max_sensitivity_bad_inputs_before_any_call(small, small_x):
    counting = Counting(small)
    bad = [
        lambda: max_sensitivity(lambda x, target=None: x, small_x),  # no class to pin
        lambda: max_sensitivity("grad", small_x, target=0),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, radius=-1.0),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, norm="nuc"),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, target=[[0, 1]] * 3),
        lambda: max_sensitivity(xt.Gradient(counting), small_x, perturbation=3),
    ]
    for call in bad:
        with pytest.raises(XaiError):
            call()
    assert counting.sizes == []


def test_max_sensitivity_no_trace(small_x):
    torch.manual_seed(0)
    model = SmallNet().train()  # BatchNorm statistics must come back
    attr = torch.randn(3, 3, 12, 12)
    before = snapshot(model, small_x, attr)
    with pytest.warns(xt.XaiWarning):
        max_sensitivity(xt.Gradient(model), small_x, samples=2)
    assert_no_trace(before, snapshot(model, small_x, attr))
