"""Tuple inputs (issue 18.4): ``x = (image, metadata)`` for the gradient and IG families and
SmoothGrad, attributions a tuple, each member its own baseline; parity with Captum on a
two-input model; bad input."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import SmallNet

pytestmark = pytest.mark.usefixtures("one_thread")


class TwoInputs(nn.Module):
    """``model(image, meta)``: SmallNet's logits gated by the metadata plus a linear term."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.meta = SmallNet(classes=5), nn.Linear(4, 5)

    def forward(self, image, meta):
        return self.net(image) * torch.tanh(meta[:, :1] + 1) + self.meta(meta) ** 2


def data(b=3):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, 8, 8, generator=g), torch.randn(b, 4, generator=g)


def test_gradients_of_each_member_and_the_members_baselines():
    model = TwoInputs().eval()
    img, meta = data()
    gi, gm = xt.Gradient(model)((img, meta), target=[1, 0, 3])
    ri, rm = img.clone().requires_grad_(), meta.clone().requires_grad_()
    model(ri, rm).gather(1, torch.tensor([[1], [0], [3]])).sum().backward()
    torch.testing.assert_close(gi, ri.grad)
    torch.testing.assert_close(gm, rm.grad)
    res = xt.IntegratedGradients(model, steps=16).explain((img, meta), target=2, baseline=(0.5, torch.zeros(1, 4)))
    assert isinstance(res.attributions, tuple) and res.attributions[1].shape == (3, 4)
    with torch.no_grad():  # completeness across both members
        gap = model(img, meta)[:, 2] - model(torch.full_like(img, 0.5), torch.zeros_like(meta))[:, 2]
    total = res.attributions[0].flatten(1).sum(1) + res.attributions[1].sum(1)
    torch.testing.assert_close(total, gap, rtol=1e-3, atol=1e-4)
    two = xt.Gradient(model)((img, meta), target=[[1, 2], [0, 0], [3, 4]])
    assert two[0].shape == (3, 2, 3, 8, 8) and two[1].shape == (3, 2, 4)
    gbp = xt.GuidedBackprop(model)((img, meta), target=1)
    assert gbp[0].shape == img.shape and gbp[1].shape == meta.shape
    sg = xt.SmoothGrad(xt.Gradient(model), samples=2, noise=0.0)((img, meta), target=1)
    torch.testing.assert_close(sg[1], xt.Gradient(model)((img, meta), target=1)[1])


def test_bad_tuples_raise_xai_error():
    model = TwoInputs().eval()
    img, meta = data()
    with pytest.raises(xt.XaiError, match="batch sizes"):
        xt.Gradient(model)((img, meta[:2]))
    with pytest.raises(xt.XaiError, match="member 1"):
        xt.IntegratedGradients(model)((img, meta), baseline=(0.0, torch.zeros(3, 5)))
    with pytest.raises(xt.XaiError, match="3 members but x has 2"):
        xt.IntegratedGradients(model)((img, meta), baseline=(0.0, 0.0, 0.0))
    with pytest.raises(xt.XaiError, match="one tensor"):
        xt.RISE(model, masks=4)((img, meta))
    with pytest.raises(xt.XaiError, match="with layer="):
        xt.Gradient(model, layer="net.conv1")((img, meta))
    assert not model._forward_pre_hooks


@pytest.mark.parity
def test_tuple_inputs_parity_with_captum():
    from captum.attr import InputXGradient as CaptumIXG
    from captum.attr import IntegratedGradients as CaptumIG

    model = TwoInputs().eval()
    img, meta = data()
    base = (torch.full_like(img, 0.2), torch.zeros_like(meta))
    ours = xt.IntegratedGradients(model, steps=8)((img, meta), target=[1, 0, 3], baseline=base)
    theirs = CaptumIG(model).attribute((img, meta), base, target=[1, 0, 3], n_steps=8, method="gausslegendre")
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))
    ours = xt.InputXGradient(model)((img, meta), target=2)
    theirs = CaptumIXG(model).attribute((img, meta), target=2)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
