"""Data randomisation (Adebayo et al. 2018): a small version of the benchmark (a tiny model
trained a few steps on real and on permuted labels), closed forms on a linear model, no trace."""
import copy

import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.metrics.data_randomization import data_randomization

from conftest import assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def task(n=32):
    """Two classes: is the left or the right half of an 8x8 image brighter."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[..., :4].mean((1, 2, 3)) < x[..., 4:].mean((1, 2, 3))).long()
    return x, y


def train(model, x, y, steps=40, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def cnn():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))


def test_real_and_permuted_labels_give_different_gradient_maps_and_identical_models_give_one():
    x, y = task()
    real = train(cnn(), x, y)
    permuted = train(cnn(), x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))])
    assert (real(x).argmax(1) == y).float().mean() > 0.9     # the real model learned the task
    held_out = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    before = snapshot(real, held_out), snapshot(permuted, held_out)
    r = data_randomization(real, permuted, lambda m: xt.Gradient(m), held_out,
                           similarity=("spearman", "ssim", "topk"), k=6, keep_maps=True)
    assert_no_trace(before[0], snapshot(real, held_out))
    assert_no_trace(before[1], snapshot(permuted, held_out))
    assert set(r.scores) == {"spearman", "ssim", "topk"} and r.k == 6
    assert r.scores["spearman"].mean() < 0.8 and r.scores["topk"].mean() < 0.9
    torch.testing.assert_close(r.targets, real(held_out).argmax(1))
    torch.testing.assert_close(r.real, xt.Gradient(real)(held_out, target=r.targets).abs().sum(1).double())
    same = data_randomization(real, copy.deepcopy(real), lambda m: xt.Gradient(m), held_out,
                              similarity=("spearman", "ssim", "topk", "pearson"))
    for v in same.scores.values():
        torch.testing.assert_close(v, torch.ones(4, dtype=torch.float64))
    assert same.agreement.all()


def test_linear_models_closed_form():
    """For a linear model the Gradient map of class c is |W_c| reshaped: the similarity of the
    two models' maps is the similarity of their weight rows."""
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(2, 1, 8, 8)
    r = data_randomization(a, b, lambda m: xt.Gradient(m), x, target=[0, 2], similarity="spearman")
    wa, wb = a[1].weight[[0, 2]].abs().view(2, 8, 8), b[1].weight[[0, 2]].abs().view(2, 8, 8)
    torch.testing.assert_close(r.scores["spearman"], xt.metrics.spearman(wa, wb))


def test_bad_input():
    a, b = cnn().eval(), cnn().eval()
    x = torch.rand(1, 1, 8, 8)
    for kwargs in ({"similarity": "nope"}, {"similarity": ()}, {"k": 65}, {"reduce": "nope"}):
        with pytest.raises(xt.XaiError):
            data_randomization(a, b, lambda m: xt.Gradient(m), x, **kwargs)
    with pytest.raises(xt.XaiError, match="same object"):
        data_randomization(a, a, lambda m: xt.Gradient(m), x)
    with pytest.raises(xt.XaiError, match="classes"):
        data_randomization(a, nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), lambda m: xt.Gradient(m), x)
