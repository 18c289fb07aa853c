"""The IG family: quadrature, baselines, engine, IG, Blur IG, Guided IG, Expected Gradients."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.path import quadrature as quad

from conftest import Counting, assert_no_trace, snapshot, torchvision_model

RULES = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre"]


# --- quadrature (pure functions) ----------------------------------------------------------
@pytest.mark.parametrize("name", RULES + ["captum_trapezoid"])
def test_quadrature_nodes_and_weights(name):
    alphas, weights = quad.get_rule(name, 10)
    assert alphas.dtype == weights.dtype == torch.float64 and alphas.shape == weights.shape == (10,)
    assert bool((alphas >= 0).all() and (alphas <= 1).all() and (alphas.diff() > 0).all())
    expect = 0.9 if name == "captum_trapezoid" else 1.0  # Captum's bug: (n - 1) / n
    assert float(weights.sum()) == pytest.approx(expect, abs=1e-14)
    assert getattr(xt.path, name) is quad.RULES[name]


def test_quadrature_closed_forms():
    for n in (1, 3, 8):  # Gauss-Legendre is exact up to degree 2n - 1
        a, w = quad.gauss_legendre(n)
        assert float((w * a ** (2 * n - 1)).sum()) == pytest.approx(1 / (2 * n), abs=1e-14)
    a, w = quad.riemann_middle(4)
    torch.testing.assert_close(a, torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64))
    a, w = quad.riemann_trapezoid(3)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    for rule in (quad.riemann_middle, quad.riemann_trapezoid):  # exact for lines (float32-rounded nodes)
        a, w = rule(7)
        assert float((w * (3 * a + 1)).sum()) == pytest.approx(2.5, abs=1e-7)
    a, w = quad.riemann_left(4)
    assert a[0] == 0 and a[-1] == 0.75
    a, w = quad.riemann_right(4)
    assert a[0] == 0.25 and a[-1] == 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_quadrature_rejects_bad_steps(bad):
    with pytest.raises(xt.XaiError, match="steps"):
        quad.gauss_legendre(bad)


def test_quadrature_rejects_bad_names_and_short_trapezoid():
    with pytest.raises(xt.XaiError, match="method"):
        quad.get_rule("simpson", 10)
    with pytest.raises(xt.XaiError, match="steps"):
        quad.riemann_trapezoid(1)


# --- closed forms ---------------------------------------------------------------------------
class PairFunction(nn.Module):
    """PAIR's IG test function on the three channels of a 1x1 image: [5x, y^2, sin z]."""

    def forward(self, v):
        x, y, z = v[:, 0, 0, 0], v[:, 1, 0, 0], v[:, 2, 0, 0]
        return torch.stack([5 * x + y**2 + torch.sin(z), 5 * x, y**2], 1)


def test_ig_closed_form_pair_function():
    v = torch.tensor([[0.5, 0.8, 1.3]], dtype=torch.float64).view(1, 3, 1, 1)
    res = xt.IntegratedGradients(PairFunction(), steps=20).explain(v, target=0, baseline=0.0)
    expect = torch.tensor([2.5, 0.64, math.sin(1.3)], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(res.attributions, expect, rtol=1e-12, atol=1e-12)
    assert abs(float(res.delta)) < 1e-12


def test_ig_closed_form_linear_model_every_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).double()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    w = model[1].weight.detach()[[0, 3, 1]].view(3, 2, 3, 3)
    for rule in RULES:
        attr = xt.IntegratedGradients(model, steps=5, method=rule)(x, target=[0, 3, 1], baseline=b)
        torch.testing.assert_close(attr, (x - b) * w, rtol=1e-12, atol=1e-12)
    captum = xt.IntegratedGradients(model, steps=5, method="captum_trapezoid")(x, target=[0, 3, 1], baseline=b)
    torch.testing.assert_close(captum, 0.8 * (x - b) * w, rtol=1e-12, atol=1e-12)


def test_ig_closed_form_quadratic():
    class Quadratic(nn.Module):
        def forward(self, x):
            c = torch.arange(1, x[0].numel() + 1, dtype=x.dtype).view(1, *x.shape[1:])
            return (c * x**2).flatten(1).sum(1, keepdim=True)

    x = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    b = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    c = torch.arange(1, 5, dtype=torch.float64).view(1, 1, 2, 2)
    for rule in ("riemann_middle", "riemann_trapezoid", "gauss_legendre"):  # the integrand is linear
        attr = xt.IntegratedGradients(Quadratic(), steps=3, method=rule)(x, target=0, baseline=b)
        tol = 1e-12 if rule == "gauss_legendre" else 1e-6  # Riemann nodes are float32-rounded (Captum's)
        torch.testing.assert_close(attr, c * (x**2 - b**2), rtol=tol, atol=tol)


def test_ig_of_input_equal_to_baseline_is_zero(small, small_x):
    res = xt.IntegratedGradients(small, steps=8).explain(small_x, baseline=small_x)
    assert bool((res.attributions == 0).all())
    torch.testing.assert_close(res.delta, torch.zeros(3))


# --- results: delta, path curve, targets, baselines ----------------------------------------
def test_delta_is_the_definition(small, small_x):
    res = xt.IntegratedGradients(small, steps=16, input_range=(-3, 3)).explain(small_x, target=[0, 1, 2],
                                                                                baseline="white")
    with torch.no_grad():
        fx = small(small_x)[torch.arange(3), [0, 1, 2]]
        fb = small(torch.full_like(small_x, 3.0))[torch.arange(3), [0, 1, 2]]
    torch.testing.assert_close(res.scores, fx)
    torch.testing.assert_close(res.baseline_scores[:, 0], fb)
    expect = res.attributions.double().sum((1, 2, 3)) - (fx - fb).double()
    torch.testing.assert_close(res.delta.double(), expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.relative_delta, (res.delta.abs() / (fx - fb).abs()), rtol=1e-5, atol=1e-7)


def test_path_curve_from_the_same_pass(small, small_x):
    ig = xt.IntegratedGradients(small, steps=6, method="riemann_trapezoid", batch_size=4)
    res = ig.explain(small_x, target=1, baseline="black")
    assert res.path_scores.shape == res.path_probs.shape == res.path_grad.shape == (3, 1, 6)
    assert res.model_calls == 3 + 3 + 18  # clean scores, baseline scores, the path itself
    b = ig.baselines(small_x)[0]
    z = b + 0.4 * (small_x - b)  # alpha = 2/5
    with torch.no_grad():
        out = small(z)
    torch.testing.assert_close(res.path_scores[:, 0, 2], out[:, 1])
    torch.testing.assert_close(res.path_probs[:, 0, 2], out.softmax(1)[:, 1])
    torch.testing.assert_close(res.path_scores[:, 0, -1], res.scores)  # alpha = 1 is x itself
    torch.testing.assert_close(res.path_scores[:, 0, 0], res.baseline_scores[:, 0])
    xg = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(small(xg)[:, 1].sum(), xg)
    torch.testing.assert_close(res.path_grad[:, 0, 2], g.abs().flatten(1).mean(1))


def test_argmax_target_is_pinned_on_the_clean_image(small, small_x):
    with torch.no_grad():
        classes = small(small_x).argmax(1)
    res = xt.IntegratedGradients(small, steps=8).explain(small_x)
    torch.testing.assert_close(res.targets, classes)
    torch.testing.assert_close(res.attributions, xt.IntegratedGradients(small, steps=8)(small_x, target=classes))


def test_multi_target_and_multi_baseline_batched(small, small_x):
    ig = xt.IntegratedGradients(small, steps=8, input_range=(-2, 2), batch_size=7)
    tk = torch.tensor([[0, 1], [2, 3], [4, 0]])
    res = ig.explain(small_x, target=tk, baseline=["black", "white"])
    assert res.attributions.shape == (3, 2, 3, 12, 12) and res.baseline_scores.shape == (3, 2, 2)
    for col in range(2):
        per = [ig(small_x, target=tk[:, col], baseline=b) for b in ("black", "white")]
        torch.testing.assert_close(res.attributions[:, col], (per[0] + per[1]) / 2, rtol=1e-5, atol=1e-6)


def test_callable_target_and_unbatched_input(small, small_x):
    res = xt.IntegratedGradients(small, steps=8).explain(small_x[0], target=lambda out: out[:, 2] - out[:, 0])
    assert res.attributions.shape == (1, 3, 12, 12) and res.targets is None and res.path_probs is None
    assert abs(float(res.delta)) < 0.05 * float((res.scores - res.baseline_scores[:, 0]).abs()) + 1e-3


def test_baselines_in_pixel_space(small_x):
    ig = xt.IntegratedGradients(nn.Identity(), normalize=((0.5, 0.4, 0.3), (0.2, 0.25, 0.5)))
    black, white, md = ig.baselines(small_x, ["black", "white", "max_distance"])
    lo = torch.tensor([-2.5, -1.6, -0.6]).view(1, 3, 1, 1)
    hi = torch.tensor([2.5, 2.4, 1.4]).view(1, 3, 1, 1)
    torch.testing.assert_close(black, lo.expand_as(small_x))
    torch.testing.assert_close(white, hi.expand_as(small_x))
    torch.testing.assert_close(md, torch.where(small_x < (lo + hi) / 2, hi, lo))
    # without the normalisation: each image's own min and max
    (black,) = xt.IntegratedGradients(nn.Identity()).baselines(small_x, "black")
    torch.testing.assert_close(black[:, 0, 0, 0], small_x.flatten(1).min(1).values)
    assert bool((black == black[:, :1, :1, :1]).all())
    ig = xt.IntegratedGradients(nn.Identity(), input_range=(-1, 1))
    u, g = ig.baselines(small_x, ["uniform", xt.Baseline("gaussian", sigma=0.1)], torch.Generator().manual_seed(0))
    assert bool((u >= -1).all() and (u <= 1).all() and (g >= -1).all() and (g <= 1).all())
    (blurred,) = ig.baselines(small_x, xt.Baseline("blur", sigma=2))
    torch.testing.assert_close(blurred, xt.path.gaussian_blur(small_x, 2.0))
    (t,) = ig.baselines(small_x, torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1))
    assert t.shape == small_x.shape and float(t[2, 1, 5, 5]) == pytest.approx(0.2)
    (c,) = ig.baselines(small_x, lambda x: x * 0.5)
    torch.testing.assert_close(c, small_x * 0.5)


def test_gaussian_blur_equals_scipy():
    from scipy import ndimage

    x = torch.randn(3, 2, 20, 15, dtype=torch.float64)
    sigmas = torch.tensor([0.0, 0.1, 1.7])
    ours = xt.path.gaussian_blur(x, sigmas)
    for i, s in enumerate(sigmas.tolist()):
        ref = x[i].numpy() if s == 0 else ndimage.gaussian_filter(x[i].numpy(), [0, s, s], mode="constant")
        np.testing.assert_allclose(ours[i].numpy(), ref, rtol=0, atol=1e-12)
    big = xt.path.gaussian_blur(x[:1], 50.0)  # a radius (200 px) far beyond the image
    ref = ndimage.gaussian_filter(x[0].numpy(), [0, 50, 50], mode="constant")
    np.testing.assert_allclose(big[0].numpy(), ref, rtol=0, atol=1e-12)


# --- batching plan, memory, seeds ------------------------------------------------------------
def test_model_calls_follow_the_batching_plan(small, small_x):
    model = Counting(small)
    ig = xt.IntegratedGradients(model, steps=50, batch_size=16)
    res = ig.explain(small_x[:2], baseline=["black", "white"])
    # clean scores (2), baseline scores (2 x 2), then 2 images x 2 baselines x 50 steps in chunks of 16
    assert model.sizes == [2, 4] + [16] * 12 + [8]
    assert res.model_calls == sum(model.sizes)
    model.sizes.clear()
    ig.explain(small_x[:2], target=[[0, 1], [2, 3]], baseline=["black", "white"])
    assert model.sizes == [2, 4] + [16] * 25  # K targets share the clean and baseline forwards
    model.sizes.clear()
    ig(small_x[:2], target=[1, 2], baseline=["black", "white"])  # no delta asked: the path only
    assert model.sizes == [16] * 12 + [8]
    model.sizes.clear()
    ig(small_x[:2], baseline="black")  # argmax targets need the clean scores
    assert model.sizes == [2, 16, 16, 16, 16, 16, 16, 4]
    model.sizes.clear()
    xt.BlurIG(model, steps=30, batch_size=25).explain(small_x[:2])
    assert model.sizes == [2, 25, 25, 10, 2]  # clean, the path, the fully blurred images
    model.sizes.clear()
    xt.GuidedIG(model, steps=7, batch_size=2).explain(small_x)
    assert model.sizes == [2, 1] + [2, 1] * 7  # sequential steps, batched across images
    model.sizes.clear()
    xt.ExpectedGradients(model, small_x, samples=3, batch_size=4, seed=0).explain(small_x[:2])
    assert model.sizes == [2, 3, 4, 2]  # clean, the 3 distinct references, 2 x 3 samples
    model.sizes.clear()
    xt.ExpectedGradients(model, small_x, samples=3, batch_size=4, seed=0)(small_x[:2], target=0)
    assert model.sizes == [4, 2]


def _peak_rss_mb(steps: int) -> float:
    import subprocess
    import sys

    code = f"""
import resource, torch, xai_torch as xt
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
x = torch.randn(1, 3, 160, 160)
xt.IntegratedGradients(model, steps=4, batch_size=8)(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
xt.IntegratedGradients(model, steps={steps}, batch_size=8)(x)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_steps():
    # 500 steps of a 3x160x160 input would be 150 MB if the path were materialised
    grow = _peak_rss_mb(500) - _peak_rss_mb(50)
    assert grow < 20, f"peak memory grew by {grow:.1f} MB from 50 to 500 steps"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_cuda_memory_same_for_50_and_500_steps():
    model = torchvision_model("resnet18").cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    peaks = []
    for steps in (50, 500):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        xt.IntegratedGradients(model, steps=steps, batch_size=16)(x)
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] <= peaks[0] * 1.02


def test_seeded_methods_repeat_bit_for_bit(small, small_x):
    bg = torch.randn(6, 3, 12, 12)
    for make in (lambda: xt.ExpectedGradients(small, bg, samples=4, seed=3),
                 lambda: xt.IntegratedGradients(small, steps=4, seed=3)):
        a, b = make()(small_x), make()(small_x)
        assert torch.equal(a, b)
    ig = xt.IntegratedGradients(small, steps=4, seed=3)
    assert torch.equal(ig(small_x, baseline="uniform"), ig(small_x, baseline="uniform"))
    assert not torch.equal(xt.IntegratedGradients(small, steps=4, seed=4)(small_x, baseline="uniform"),
                           ig(small_x, baseline="uniform"))


# --- bad inputs --------------------------------------------------------------------------------
def test_bad_inputs_raise_before_any_work(small, small_x):
    model = Counting(small)
    ig = xt.IntegratedGradients(model, steps=4)
    cases = [
        ({"baseline": torch.zeros(2, 3, 12, 12)}, "does not broadcast"),
        ({"baseline": torch.zeros(3, 5, 5)}, "does not broadcast"),
        ({"baseline": "grey"}, "unknown baseline"),
        ({"baseline": []}, "empty"),
        ({"baseline": object()}, "baseline must be"),
        ({"baseline": torch.full((1,), float("nan"))}, "NaN"),
    ]
    before = snapshot(small, small_x)
    for kwargs, match in cases:
        with pytest.raises(xt.XaiError, match=match):
            ig(small_x, **kwargs)
    assert_no_trace(before, snapshot(small, small_x))
    with pytest.raises(xt.XaiError, match="method"):
        xt.IntegratedGradients(small, method="simpson")
    for steps in (0, -1, 1.5):
        with pytest.raises(xt.XaiError, match="steps"):
            xt.IntegratedGradients(small, steps=steps)
    with pytest.raises(xt.XaiError, match="steps"):
        xt.IntegratedGradients(small, steps=1, method="riemann_trapezoid")
    with pytest.raises(xt.XaiError, match="steps"):
        xt.IntegratedGradients(small, steps=8, method="adaptive")
    with pytest.raises(xt.XaiError, match="not both"):
        xt.IntegratedGradients(small, normalize=(0.5, 0.5), input_range=(0, 1))
    with pytest.raises(xt.XaiError, match="std"):
        xt.IntegratedGradients(small, normalize=(0.5, 0.0))
    with pytest.raises(xt.XaiError, match="1 or 3 values"):
        xt.IntegratedGradients(small, normalize=((0.5, 0.5), (1, 1)))(small_x)
    with pytest.raises(xt.XaiError, match="unexpected call argument"):
        ig(small_x, steps=3)
    with pytest.raises(xt.XaiError, match="fraction"):
        xt.GuidedIG(small, fraction=1.5)
    with pytest.raises(xt.XaiError, match="max_sigma"):
        xt.BlurIG(small, max_sigma=0)
    with pytest.raises(xt.XaiError, match="sqrt"):
        xt.BlurIG(small, sqrt="yes")
    with pytest.raises(xt.XaiError, match="background"):
        xt.ExpectedGradients(small, torch.zeros(4, 3))
    with pytest.raises(xt.XaiError, match="must match"):
        xt.ExpectedGradients(small, torch.zeros(4, 3, 8, 8))(small_x)
    with pytest.raises(xt.XaiError, match="seed"):
        xt.IntegratedGradients(small, seed="0")
    assert model.sizes == []


def test_no_trace_on_model_and_input(small, small_x):
    small_x.requires_grad_(True)
    before = snapshot(small, small_x)
    bg = torch.randn(4, 3, 12, 12)
    explainers = (xt.IntegratedGradients(small, steps=4), xt.IntegratedGradients(small, steps=40, method="adaptive"),
                  xt.BlurIG(small, steps=4), xt.GuidedIG(small, steps=4), xt.ExpectedGradients(small, bg, samples=3),
                  xt.SmoothGrad(xt.IntegratedGradients(small, steps=4), samples=3))
    for explainer in explainers:
        explainer(small_x)
        assert_no_trace(before, snapshot(small, small_x))
    small.fail_with = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        xt.IntegratedGradients(small, steps=4)(small_x)
    small.fail_with = None
    assert_no_trace(before, snapshot(small, small_x))


# --- Guided IG, Blur IG, Expected Gradients ------------------------------------------------
def test_guided_ig_with_no_deviation_is_left_riemann_ig(small, small_x):
    x = small_x.double()
    model = small.double()
    g = xt.GuidedIG(model, steps=10, max_dist=0.0).explain(x, baseline=0.0)
    ig = xt.IntegratedGradients(model, steps=10, method="riemann_left")(x, baseline=0.0)
    torch.testing.assert_close(g.attributions, ig, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g.baseline_scores[:, 0], model(torch.zeros_like(x)).detach().max(1).values * 0
                               + g.baseline_scores[:, 0])


def test_guided_ig_stops_in_float32_on_a_real_network(lite0, chelsea):
    # the reference's exact float test can loop forever here; ours is float64 with a cap
    small = torch.nn.functional.interpolate(chelsea, size=96, mode="bilinear", align_corners=False)
    res = xt.GuidedIG(lite0, steps=12, normalize=xt.zoo.NORMALIZE).explain(small, baseline="black")
    assert bool(torch.isfinite(res.attributions).all())
    assert float(res.relative_delta) < 0.5


def test_expected_gradients_closed_form_on_linear_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    bg = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    w = model[1].weight.detach()[[2, 0]].view(2, 3, 2, 2)
    res = xt.ExpectedGradients(model, bg, samples=5, seed=1).explain(x, target=[2, 0])  # every reference once
    torch.testing.assert_close(res.attributions, (x - bg.mean(0)) * w, rtol=1e-12, atol=1e-12)
    assert float(res.delta.abs().max()) < 1e-12  # linear: completeness holds exactly
    with_replacement = xt.ExpectedGradients(model, bg, samples=40, seed=1).explain(x, target=[2, 0])
    assert float(with_replacement.delta.abs().max()) < 1e-12


def test_blur_ig_completeness_improves_with_steps(small, small_x):
    x = small_x.double()
    model = small.double()
    coarse = xt.BlurIG(model, steps=10, max_sigma=4).explain(x)
    fine = xt.BlurIG(model, steps=200, max_sigma=4).explain(x)
    assert float(fine.relative_delta.max()) < float(coarse.relative_delta.max())
    assert float(fine.relative_delta.max()) < 0.02
    s = xt.path.blur_sigmas(4, 16.0, sqrt=True)
    torch.testing.assert_close(s, torch.tensor([0, 8, 8 * 2**0.5, 8 * 3**0.5, 16], dtype=torch.float64))
    assert float(xt.path.blur_sigmas(4, 16.0, sqrt="pair")[-1]) == 4.0


# --- the packaged model: completeness against Captum, the adaptive rule ---------------------
@pytest.mark.parity
def test_completeness_at_least_as_good_as_captum_on_lite0(lite0, chelsea):
    from captum.attr import IntegratedGradients as CaptumIG

    black = torch.full_like(chelsea, -127 / 128)
    ours = xt.IntegratedGradients(lite0, steps=256, normalize=xt.zoo.NORMALIZE, batch_size=32).explain(chelsea)
    _, theirs = CaptumIG(lite0).attribute(chelsea, black, target=282, n_steps=256, internal_batch_size=32,
                                          return_convergence_delta=True)
    assert int(ours.targets) == 282
    assert abs(float(ours.delta)) <= abs(float(theirs)) * 1.001 + 1e-6
    with torch.no_grad():
        fx, fb = lite0(chelsea)[0, 282], lite0(black)[0, 282]
    assert float(ours.delta) == pytest.approx(float(ours.attributions.double().sum() - (fx - fb)), abs=1e-4)


def test_adaptive_rule_meets_half_a_percent_within_256_evaluations(lite0, chelsea):
    res = xt.IntegratedGradients(lite0, steps=256, method="adaptive", normalize=xt.zoo.NORMALIZE).explain(chelsea)
    assert res.model_calls <= 256 + 2  # plus F(x) and F(baseline), as every rule
    assert float(res.relative_delta) <= 0.005
    # the path curve shows the "aha moment": most of the probability arrives early
    probs, alphas = res.path_probs[0, 0], res.alphas[0, 0]
    ok = ~torch.isnan(alphas)
    assert bool((alphas[ok].diff() > 0).all())
    early = probs[ok][alphas[ok] < 0.25]
    assert float(early.max()) > 0.5 * float(probs[ok].max())
    assert int((alphas[ok] < 0.1).sum()) > 64  # the steps went where the score changes


# --- parity with the references --------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("ours,theirs", [("gauss_legendre", "gausslegendre"), ("riemann_left", "riemann_left"),
                                         ("riemann_right", "riemann_right"), ("riemann_middle", "riemann_middle"),
                                         ("captum_trapezoid", "riemann_trapezoid")])
def test_ig_parity_with_captum(ours, theirs):
    from captum.attr import IntegratedGradients as CaptumIG

    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    b = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6)) * 0.1
    res = xt.IntegratedGradients(model, steps=24, method=ours, batch_size=20).explain(x, target=[3, 7], baseline=b)
    attr, delta = CaptumIG(model).attribute(x, b, target=[3, 7], n_steps=24, method=theirs, internal_batch_size=20,
                                            return_convergence_delta=True)
    scale = attr.abs().max()
    assert float((res.attributions - attr).abs().max() / scale) < 1e-4
    torch.testing.assert_close(res.delta, delta, rtol=1e-3, atol=1e-4 * float(attr.abs().sum()))


def _pair_call(model):
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    def call(xb, call_model_args=None, expected_keys=None):
        t = torch.tensor(np.asarray(xb)).permute(0, 3, 1, 2).requires_grad_(True)
        (g,) = torch.autograd.grad(model(t)[:, call_model_args].sum(), t)
        return {INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}

    return call


@pytest.fixture
def numpy_quantile_shim(monkeypatch):
    """saliency 0.2.1 calls np.quantile(..., interpolation=), which NumPy 2 removed."""
    original = np.quantile

    def quantile(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return original(a, q, *args, **kwargs)

    monkeypatch.setattr(np, "quantile", quantile)


@pytest.mark.parity
@pytest.mark.parametrize("max_dist", [0.02, 0.1, 1.0])
def test_guided_ig_parity_with_pair(numpy_quantile_shim, small, max_dist):
    import saliency.core as sc

    model = small.double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours = xt.GuidedIG(model, steps=40, max_dist=max_dist, batch_size=2)(x, target=1, baseline=0.0)
    for i in range(2):
        img = x[i].permute(1, 2, 0).numpy()
        ref = sc.GuidedIG().GetMask(img, _pair_call(model), call_model_args=1, x_baseline=np.zeros_like(img),
                                    x_steps=40, fraction=0.25, max_dist=max_dist)
        np.testing.assert_allclose(ours[i].permute(1, 2, 0).numpy(), ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parity
def test_blur_ig_parity_with_pair(small):
    import saliency.core as sc

    model = small.double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ours = xt.BlurIG(model, steps=25, max_sigma=6, batch_size=7)(x, target=2)
    for i in range(2):
        img = x[i].permute(1, 2, 0).numpy()
        ref = sc.BlurIG().GetMask(img, _pair_call(model), call_model_args=2, steps=25, max_sigma=6)
        np.testing.assert_allclose(ours[i].permute(1, 2, 0).numpy(), ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
