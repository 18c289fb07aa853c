"""IG's ``multiply_by_inputs=False`` (Captum's "local" IG: the integrated gradient without the
``x - b`` factor): closed form, no completeness delta, parity with Captum (input and layer)."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import SmallNet


def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).double()


@pytest.mark.parametrize("method", ["gauss_legendre", "riemann_middle", "adaptive"])
def test_local_ig_of_a_linear_model_is_its_weights_and_has_no_delta(method):
    model = linear()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = model[1].weight.detach()[[0, 3, 1]].view(3, 2, 3, 3)
    steps = 32 if method == "adaptive" else 8
    ig = xt.IntegratedGradients(model, steps=steps, method=method, multiply_by_inputs=False)
    res = ig.explain(x, target=[0, 3, 1], baseline=0.5)
    torch.testing.assert_close(res.attributions, w, rtol=1e-12, atol=1e-12)
    assert res.delta is None and res.relative_delta is None and res.baseline_scores is not None
    assert "multiply_by_inputs=False" in repr(ig)
    full = xt.IntegratedGradients(model, steps=steps, method=method).explain(x, target=[0, 3, 1], baseline=0.5)
    torch.testing.assert_close(full.attributions, (x - 0.5) * w, rtol=1e-12, atol=1e-12)


def test_local_ig_times_x_minus_b_is_ig():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    local = xt.IntegratedGradients(model, steps=6, multiply_by_inputs=False)(x, target=1, baseline=0.0)
    torch.testing.assert_close(local * x, xt.IntegratedGradients(model, steps=6)(x, target=1, baseline=0.0))


def test_multiply_by_inputs_bad_input():
    with pytest.raises(xt.XaiError, match="True or False"):
        xt.IntegratedGradients(linear(), multiply_by_inputs="no")
    with pytest.raises(xt.XaiError, match="straight-line"):
        xt.IntegratedGradients(linear(), path="luminosity", multiply_by_inputs=False)


@pytest.mark.parity
def test_local_ig_parity_with_captum():
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import LayerIntegratedGradients

    torch.manual_seed(0)
    model = SmallNet().double().eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    b = torch.randn(1, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 0.1
    ours = xt.IntegratedGradients(model, steps=8, multiply_by_inputs=False)(x, target=[3, 1], baseline=b)
    theirs = CaptumIG(model, multiply_by_inputs=False).attribute(x, b, target=[3, 1], n_steps=8,
                                                                 method="gausslegendre")
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-6
    ours = xt.IntegratedGradients(model, steps=8, layer="conv1", multiply_by_inputs=False)(x, target=[3, 1],
                                                                                             baseline=b)
    theirs = LayerIntegratedGradients(model, model.conv1, multiply_by_inputs=False).attribute(
        x, b, target=[3, 1], n_steps=8, method="gausslegendre")
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-6
