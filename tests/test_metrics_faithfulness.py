"""Deletion / insertion and completeness: hand-computed curves, RISE's reference loop, call
counts, bad inputs."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.metrics import faithfulness as F
from xai_torch.metrics._common import Scorer, descending_order

from conftest import Counting, Scaled, SmallNet, assert_no_trace, snapshot


class PixelLinear(nn.Module):
    """logit 0 = sum(w * x), logit 1 = 0."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------
# deletion / insertion
def test_deletion_curve_of_a_linear_model_is_the_remaining_sum():
    h, w = 5, 6
    weight = torch.randn(1, 3, h, w, generator=rng(1), dtype=torch.float64)
    model = PixelLinear(weight)
    x = torch.randn(2, 3, h, w, generator=rng(2), dtype=torch.float64)
    attr = torch.randn(2, 3, h, w, generator=rng(3), dtype=torch.float64)
    res = xt.metrics.deletion(model, x, attr, target=0, step=4, score="logit")
    n = math.ceil(h * w / 4)
    assert res.curve.shape == (2, n + 1) and res.step == 4
    contrib = (weight * x).sum(1).flatten(1)                         # per-pixel logit share
    order = torch.argsort(attr.sum(1).flatten(1), dim=1, descending=True)
    for b in range(2):
        expected = [contrib[b, order[b, min(k * 4, h * w):]].sum() for k in range(n + 1)]
        torch.testing.assert_close(res.curve[b], torch.stack(expected))
    assert torch.allclose(res.curve[:, -1], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(res.fractions, torch.tensor([min(k * 4, 30) / 30 for k in range(n + 1)],
                                                           dtype=torch.float64))
    # AUC: trapezoid on equal intervals
    c = res.curve
    torch.testing.assert_close(res.auc, (c.sum(1) - c[:, 0] / 2 - c[:, -1] / 2) / n)


def test_insertion_goes_from_the_substrate_to_the_image():
    h, w = 4, 4
    weight = torch.randn(1, 3, h, w, generator=rng(4), dtype=torch.float64)
    model = PixelLinear(weight)
    x = torch.randn(1, 3, h, w, generator=rng(5), dtype=torch.float64)
    res = xt.metrics.insertion(model, x, torch.rand(1, h, w, generator=rng(6)), target=0, step=3, score="logit")
    blurred = F.rise_blur(x)
    torch.testing.assert_close(res.curve[0, 0], (weight * blurred).sum())
    torch.testing.assert_close(res.curve[0, -1], (weight * x).sum())


def rise_reference(model, x, saliency, step, mode):
    """RISE's CausalMetric.single_run, re-stated: a Python loop over steps on one image, with a
    softmax model (RISE appends nn.Softmax)."""
    b, c, h, w = x.shape
    hw = h * w
    with torch.no_grad():
        cls = int(model(x).argmax(1))
    n = (hw + step - 1) // step
    finish = torch.zeros_like(x) if mode == "deletion" else F.rise_blur(x)
    if mode == "insertion":
        start, finish = finish.clone(), x.clone()
    else:
        start = x.clone()
    order = np.argsort(-saliency.reshape(-1), kind="stable")
    scores = []
    for i in range(n + 1):
        with torch.no_grad():
            scores.append(float(model(start).softmax(1)[0, cls]))
        coords = order[step * i:step * (i + 1)]
        start.view(1, c, hw)[0, :, coords] = finish.view(1, c, hw)[0, :, coords]
    s = np.array(scores)
    return s, (s.sum() - s[0] / 2 - s[-1] / 2) / n


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_matches_rise_causal_metric_loop(mode):
    model = Scaled()
    x = torch.randn(3, 3, 12, 12, generator=rng(7))
    sal = torch.rand(3, 12, 12, generator=rng(8))
    res = getattr(xt.metrics, mode)(model, x, sal, step=10, batch_size=16)
    for i in range(3):
        curve, auc = rise_reference(model, x[i:i + 1], sal[i].numpy(), 10, mode)
        np.testing.assert_allclose(res.curve[i].numpy(), curve, atol=2e-6)
        assert abs(float(res.auc[i]) - auc) < 2e-6


def test_ties_are_broken_in_raster_order():
    h, w = 4, 5
    weight = torch.arange(1.0, 1 + 3 * h * w, dtype=torch.float64).reshape(1, 3, h, w)
    model = PixelLinear(weight)
    x = torch.ones(1, 3, h, w, dtype=torch.float64)
    flat = torch.zeros(1, h, w)
    res = xt.metrics.deletion(model, x, flat, target=0, step=3, score="logit")
    contrib = weight.sum(1).flatten()
    expected = torch.stack([contrib[min(3 * k, 20):].sum() for k in range(8)])
    torch.testing.assert_close(res.curve[0], expected)
    assert torch.equal(descending_order(torch.tensor([[[1.0, 2.0, 2.0, 1.0]]])), torch.tensor([[1, 2, 0, 3]]))


def test_model_calls_and_batching():
    torch.manual_seed(0)
    model = Counting(SmallNet().eval())
    x = torch.randn(2, 3, 6, 6, generator=rng(9))
    res = xt.metrics.deletion(model, x, torch.rand(2, 6, 6, generator=rng(10)), step=5, batch_size=7)
    n = math.ceil(36 / 5)
    assert model.sizes == [2] + [7] * (2 * (n + 1) // 7) + ([2 * (n + 1) % 7] if 2 * (n + 1) % 7 else [])
    assert res.model_calls == 2 + 2 * (n + 1)
    # the first curve point is the clean image, the last the substrate
    with torch.no_grad():
        p = model.model(x).softmax(1)
        p0 = model.model(torch.zeros_like(x)).softmax(1)
    cls = p.argmax(1)
    torch.testing.assert_close(res.curve[:, 0], p.gather(1, cls[:, None])[:, 0].double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.curve[:, -1], p0.gather(1, cls[:, None])[:, 0].double(), atol=1e-6, rtol=0)
    assert torch.equal(res.targets, cls)


def test_explainer_is_called_with_the_clean_classes_and_no_trace(small):
    small.train()
    x = torch.randn(2, 3, 8, 8, generator=rng(11))
    before = snapshot(small, x)
    seen = {}

    def explainer(z, target=None):
        seen["target"] = target
        return xt.Gradient(small)(z, target=target)

    with pytest.warns(xt.XaiWarning):
        res = xt.metrics.insertion(small, x, explainer, step=8)
    assert_no_trace(before, snapshot(small, x))
    assert torch.equal(seen["target"], res.targets.cpu())
    small.eval()
    with torch.no_grad():
        assert torch.equal(res.targets, small(x).argmax(1))


def test_substrates_and_scores(small, small_x):
    attr = torch.rand(3, 12, 12, generator=rng(12))
    norm = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    black = xt.metrics.deletion(small, small_x, attr, step=36, substrate="black", normalize=norm, score="logit")
    with torch.no_grad():
        ref = small(torch.full_like(small_x, -2.0))
    torch.testing.assert_close(black.curve[:, -1], ref.gather(1, black.targets[:, None])[:, 0].double(),
                               atol=1e-5, rtol=0)
    value = xt.metrics.deletion(small, small_x, attr, step=36, substrate=-2.0, score="logit")
    torch.testing.assert_close(value.curve, black.curve)
    acc = xt.metrics.deletion(small, small_x, attr, step=36, score="accuracy")
    assert set(acc.curve.unique().tolist()) <= {0.0, 1.0} and bool((acc.curve[:, 0] == 1).all())


@pytest.mark.parametrize("kwargs, match", [
    ({"step": 0}, "step"),
    ({"step": 10_000}, "more pixels"),
    ({"substrate": "nothing"}, "substrate"),
    ({"score": "probability"}, "score"),
    ({"reduce": "median"}, "reduce"),
    ({"target": [[1, 2], [0, 1], [2, 3]]}, "one target per image"),
])
def test_bad_inputs_fail_before_any_model_call(small, small_x, kwargs, match):
    model = Counting(small)
    attr = torch.rand(3, 12, 12, generator=rng(13))
    with pytest.raises(xt.XaiError, match=match):
        xt.metrics.deletion(model, small_x, attr, **kwargs)
    assert model.sizes == []


@pytest.mark.parametrize("attr, match", [
    (torch.rand(3, 12, 11), "shape"),
    (torch.rand(2, 12, 12), "shape"),
    (torch.rand(3, 2, 12, 12), "shape"),
    (torch.full((3, 12, 12), float("nan")), "NaN"),
    ("gradient", "tensor"),
])
def test_bad_attributions(small, small_x, attr, match):
    model = Counting(small)
    with pytest.raises(xt.XaiError, match=match):
        xt.metrics.insertion(model, small_x, attr)
    assert model.sizes == []


# ------------------------------------------------------------------------------------------
# completeness
def test_completeness_of_integrated_gradients_and_of_gradient_x_input():
    weight = torch.randn(1, 3, 6, 6, generator=rng(14), dtype=torch.float64)
    model = PixelLinear(weight)
    x = torch.randn(2, 3, 6, 6, generator=rng(15), dtype=torch.float64)
    gxi = xt.InputXGradient(model)(x, target=0)
    res = xt.metrics.completeness(model, x, gxi, target=0)
    assert float(res.delta.abs().max()) < 1e-10 and float(res.relative.max()) < 1e-10
    torch.testing.assert_close(res.score_difference, (weight * x).flatten(1).sum(1))
    # against a non-zero baseline the linear model's IG is complete too; G x I is not
    ig = xt.IntegratedGradients(model, steps=8)
    base = torch.full_like(x, 0.5)
    res = xt.metrics.completeness(model, x, ig(x, target=0, baseline=base), target=0, baseline=0.5)
    assert float(res.delta.abs().max()) < 1e-9
    off = xt.metrics.completeness(model, x, gxi, target=0, baseline=0.5)
    torch.testing.assert_close(off.delta, gxi.flatten(1).sum(1) - (weight * (x - 0.5)).flatten(1).sum(1))


def test_per_image_substrates_and_baselines(small, small_x):
    per_image = torch.stack([torch.full((3, 12, 12), v) for v in (-1.0, 0.0, 1.0)])
    res = xt.metrics.deletion(small, small_x, torch.rand(3, 12, 12, generator=rng(16)), step=36,
                              substrate=per_image, score="logit")
    with torch.no_grad():
        ref = small(per_image)
    torch.testing.assert_close(res.curve[:, -1], ref.gather(1, res.targets[:, None])[:, 0].double(),
                               atol=1e-5, rtol=0)
    attr = torch.rand(3, 3, 12, 12, generator=rng(17))
    met = xt.metrics.completeness(small, small_x, attr, baseline=per_image)
    torch.testing.assert_close(met.score_difference, met.attribution_sum - met.delta)
    torch.testing.assert_close(met.score_difference + ref.gather(1, met.targets[:, None])[:, 0].double(),
                               Scorer(small, small_x, met.targets, score="logit").clean, atol=1e-5, rtol=0)


def test_completeness_agrees_with_ig_delta(small, small_x):
    ig = xt.IntegratedGradients(small, steps=16)
    res = ig.explain(small_x, baseline=0.0)
    met = xt.metrics.completeness(small, small_x, res.attributions, baseline=0.0)
    torch.testing.assert_close(met.delta, res.delta.double(), atol=1e-5, rtol=1e-4)
