"""Expected Gradients (xai_torch/path/expected.py): the closed form on a linear model."""
import torch
from torch import nn

import xai_torch as xt


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
