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


def test_an_images_draws_depend_on_the_seed_and_its_index_only(small):
    """Issue 19 item 3: the same image with the same seed gave different attributions alone and
    inside a batch. Image i now draws from its own generator; its K targets share the draws."""
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    bg = torch.randn(6, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    for samples in (4, 9):  # without and with replacement
        eg = xt.ExpectedGradients(small, bg, samples=samples, seed=5)
        batch = eg(x, target=1)
        torch.testing.assert_close(eg(x[:1], target=1), batch[:1], rtol=0, atol=0)
        torch.testing.assert_close(xt.ExpectedGradients(small, bg, samples=samples, seed=5, batch_size=2)(
            x, target=1), batch, rtol=1e-5, atol=1e-7)
        two = eg(x, target=[[1, 0]] * 3)
        torch.testing.assert_close(two[:, 0], batch, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(two[:, 1], eg(x, target=0), rtol=1e-5, atol=1e-7)
    # different images of one batch do not share draws (their seeds differ)
    same = x[:1].expand(2, -1, -1, -1)
    pair = xt.ExpectedGradients(small, bg, samples=4, seed=5)(same, target=1)
    assert not torch.equal(pair[0], pair[1])
