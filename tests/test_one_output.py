"""One-output models (issue 19 item 2): a binary classifier with one logit ``z`` is scored as
the two-class model with logits ``(0, z)`` (targets.SCORES): its probability is ``sigmoid(z)``,
never a softmax over one column (always 1, which left LIME / KernelSHAP maps at zero, RISE
maps constant and deletion curves flat at 1.0).

The checks run every probability-scored explainer and metric on a tiny linear one-logit model
and compare with the same method on its two-logit twin (class 1 of ``(0, z)``), plus closed
forms: exact Shapley values of the sigmoid, Occlusion's drops, the ends of a deletion curve."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import xai_torch as xt
import xai_torch.metrics as xm

SHAPE = (3, 8, 8)


class OneLogit(nn.Module):
    """``z = w . vec(x) + c``, output ``(B, 1)``: a linear binary classifier with one logit."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        d = math.prod(SHAPE)
        self.w = nn.Parameter(torch.randn(d, generator=g) * 4 / math.sqrt(d))
        self.c = nn.Parameter(torch.tensor(-0.3))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(self.w.dtype) @ self.w + self.c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(x)[:, None]


class TwoLogits(nn.Module):
    """The same classifier with two logits ``(0, z)``: class 1 is the positive class."""

    def __init__(self, one: OneLogit) -> None:
        super().__init__()
        self.one = one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.one(x)
        return torch.cat([torch.zeros_like(z), z], 1)


@pytest.fixture
def models():
    one = OneLogit().eval()
    return one, TwoLogits(one).eval()


@pytest.fixture
def x():
    return torch.rand(2, *SHAPE, generator=torch.Generator().manual_seed(1))


def grid(b: int = 2, cells: int = 2) -> torch.Tensor:
    h, w = SHAPE[1:]
    rows, cols = torch.arange(h) * cells // h, torch.arange(w) * cells // w
    return (rows[:, None] * cells + cols[None, :]).expand(b, h, w).clone()


def attribution(x: torch.Tensor, model: OneLogit) -> torch.Tensor:
    return (x * model.w.detach().reshape(SHAPE)).detach()   # gradient x input of the logit


def nonconstant(t: torch.Tensor) -> None:
    flat = t.flatten(1)
    assert bool(torch.isfinite(flat).all())
    assert bool((flat.abs().amax(1) > 1e-6).all()), "an all-zero result"
    assert bool((flat.amax(1) - flat.amin(1) > 1e-6).all()), "a constant result"


def test_the_probability_of_one_logit_is_its_sigmoid():
    z = torch.tensor([[-2.0], [0.0], [3.0]], dtype=torch.float64)
    c = torch.zeros(3, dtype=torch.long)
    two = torch.cat([torch.zeros_like(z), z], 1)
    for kind in ("softmax", "log_softmax", "accuracy"):
        assert torch.allclose(xt.targets.score_classes(z, c, kind), xt.targets.score_classes(two, c + 1, kind))
    assert torch.equal(xt.targets.score_classes(z, c, "softmax"), z[:, 0].sigmoid())
    assert torch.equal(xt.targets.score_classes(z, c, "accuracy"), torch.tensor([0.0, 0.0, 1.0], dtype=z.dtype))
    assert torch.equal(xt.targets.score_classes(z, c, "logit"), z[:, 0])


def test_kernel_shap_gives_the_exact_shapley_values_of_the_sigmoid(models, x):
    one, _ = models
    res = xt.KernelSHAP(one, samples=14, hide=0.0, seed=0).explain(x, segments=grid())
    nonconstant(res.attributions)
    seg = grid()
    for b in range(2):   # brute force over the 16 coalitions of the 4 cells
        def value(keep, b=b):
            mask = torch.zeros(SHAPE[1:], dtype=torch.bool)
            for s in keep:
                mask |= seg[b] == s
            return torch.sigmoid(one.logit((x[b] * mask)[None]))[0].double()

        phi = torch.zeros(4, dtype=torch.float64)
        for i in range(4):
            rest = [s for s in range(4) if s != i]
            for r in range(4):
                for sub in itertools.combinations(rest, r):
                    weight = math.factorial(r) * math.factorial(3 - r) / math.factorial(4)
                    phi[i] += weight * (value([*sub, i]) - value(sub))
        assert torch.allclose(res.weights[b].double(), phi.detach(), atol=1e-5)


@pytest.mark.parametrize("method", ["LIME", "KernelSHAP", "RISE", "Occlusion"])
def test_perturbation_maps_are_real_and_equal_the_two_logit_twin(models, x, method):
    one, two = models
    build = {
        "LIME": lambda m: xt.LIME(m, samples=32, seed=0),
        "KernelSHAP": lambda m: xt.KernelSHAP(m, samples=14, seed=0),
        "RISE": lambda m: xt.RISE(m, masks=16, cell=4, seed=0),
        "Occlusion": lambda m: xt.Occlusion(m, window=4),
    }[method]
    kw = {"segments": grid()} if method in ("LIME", "KernelSHAP") else {}
    maps = build(one)(x, **kw)
    nonconstant(maps)
    twin = build(two)(x, target=1, **kw)
    assert torch.allclose(maps, twin, rtol=1e-4, atol=1e-6)


def test_occlusion_drops_are_the_logit_of_the_window(models, x):
    one, _ = models
    res = xt.Occlusion(one, window=4, stride=4).explain(x)
    contrib = attribution(x, one).sum(1)                         # (B, H, W)
    cells = contrib.reshape(2, 2, 4, 2, 4).sum((2, 4))           # the four 4 x 4 windows
    maps = res.attributions                                      # every channel: its window's drop
    assert torch.allclose(maps[:, :, ::4, ::4], cells[:, None].expand(-1, 3, -1, -1), atol=1e-5)


def test_deletion_and_insertion_curves_move(models, x):
    one, two = models
    a = attribution(x, one)
    z = one.logit(x).detach().double()
    for fn in (xm.deletion, xm.insertion):
        res = fn(one, x, a, step=16)
        assert bool((res.curve.amax(1) - res.curve.amin(1) > 1e-3).all()), f"{fn.__name__}: a flat curve"
        assert torch.allclose(res.curve, fn(two, x, a, 1, step=16).curve, atol=1e-6)
    res = xm.deletion(one, x, a, step=16)
    assert torch.allclose(res.curve[:, 0], z.sigmoid(), atol=1e-6)           # the clean image
    c = torch.sigmoid(one.c.detach().double()).expand(2)
    assert torch.allclose(res.curve[:, -1], c, atol=1e-6)                     # every pixel zero
    assert torch.equal(xm.deletion(one, x, a, step=16, score="accuracy").curve[:, 0], (z > 0).double())


def test_road_curves_move_and_equal_the_two_logit_twin(models, x):
    one, two = models
    a = attribution(x, one)
    res = xm.road(one, x, a, fractions=(0.2, 0.5, 0.8))
    assert torch.allclose(res.clean, one.logit(x).detach().double().sigmoid(), atol=1e-6)
    assert bool((res.morf - res.clean[:, None]).abs().amax() > 1e-3)
    twin = xm.road(two, x, a, 1, fractions=(0.2, 0.5, 0.8))
    assert torch.allclose(res.morf, twin.morf, atol=1e-6) and torch.allclose(res.lerf, twin.lerf, atol=1e-6)


def test_pic_scores_the_sigmoid_and_the_sign_of_the_logit(models, x):
    one, two = models
    a = attribution(x, one)
    kw = {"input_range": (0.0, 1.0), "thresholds": (0.1, 0.3, 0.6), "min_pred_value": 0.0, "workers": 1}
    sic, aic = xm.pic(one, x, a, kind="both", **kw)
    tsic, taic = xm.pic(two, x, a, 1, kind="both", **kw)
    scored = torch.isfinite(sic.scores)
    assert bool(scored.any())
    assert bool((sic.scores[scored] < 1 - 1e-6).any()), "SIC scores of a one-logit model stuck at 1"
    assert torch.allclose(sic.scores[scored], tsic.scores[scored], atol=1e-6)
    assert torch.equal(aic.scores.nan_to_num(-1), taic.scores.nan_to_num(-1))


def test_integrated_gradients_path_curve_is_the_sigmoid(models, x):
    """IG's path curve (probability along the path) of a one-logit model is sigmoid(z), not a
    softmax over one column that is 1 everywhere."""
    one = models[0]
    res = xt.IntegratedGradients(one, steps=8).explain(x, target=0, baseline=torch.zeros_like(x))
    with torch.no_grad():
        z = one.logit(x)  # from a zero baseline the path points are alpha * x
        expect = torch.sigmoid(res.alphas.to(z.dtype) * (z - one.c)[:, None, None] + one.c)
    torch.testing.assert_close(res.path_probs, expect.to(res.path_probs.dtype).expand_as(res.path_probs),
                               rtol=1e-5, atol=1e-6)
    assert float(res.path_probs.min()) < 0.99
