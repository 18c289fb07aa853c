"""``additional_forward_args`` (Captum's name): inputs the model takes after the images, not
attributed; per-example tensors follow each sample's image through every engine (paths, noise
draws, occlusion windows, RISE masks). Checked against the same explainer on each image alone
with its row bound into the model, and against Captum."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import SmallNet

H = W = 10


pytestmark = pytest.mark.usefixtures("one_thread")


class WithMeta(nn.Module):
    """``model(x, meta, scale)``: SmallNet's logits plus ``scale * meta @ M`` (meta ``(B, 4)``
    per example, ``scale`` a number passed as it is), times a gate on the meta row, so the
    attributions of ``x`` depend on it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = SmallNet(classes=5)
        self.meta = nn.Linear(4, 5)

    def forward(self, x, meta, scale):
        return self.net(x) * torch.sigmoid(meta[:, :1]) + scale * self.meta(meta)


class Bound(nn.Module):
    """``WithMeta`` with one image's meta row bound in: the reference for that image alone."""

    def __init__(self, model, row, scale) -> None:
        super().__init__()
        self.model, self.row, self.scale = model, row, scale

    def forward(self, x):
        return self.model(x, self.row.expand(x.shape[0], -1), self.scale)


CASES = {
    "Gradient": lambda m: xt.Gradient(m, batch_size=5),
    "InputXGradient": lambda m: xt.InputXGradient(m),
    "IntegratedGradients": lambda m: xt.IntegratedGradients(m, steps=4, batch_size=3),
    "LayerIG": lambda m: xt.IntegratedGradients(m, steps=3, layer="net.conv1" if isinstance(m, WithMeta)
                                                else "model.net.conv1"),
    # noise 0: image i's noise depends on its index i, which differs alone; the copies still get rows
    "SmoothGrad": lambda m: xt.SmoothGrad(xt.Gradient(m, batch_size=4), samples=3, noise=0.0),
    "Occlusion": lambda m: xt.Occlusion(m, 5, batch_size=3),
    "RISE": lambda m: xt.RISE(m, masks=6, cell=5, seed=0, batch_size=4),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_image_gets_its_own_meta_row_in_every_engine(name):
    x = torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(0))
    meta = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    model = WithMeta().eval()
    target = [[1, 2], [0, 4], [3, 3]]
    res = CASES[name](model).explain(x, target, additional_forward_args=(meta, 0.5))
    for i in range(3):
        alone = CASES[name](Bound(model, meta[i:i + 1], 0.5).eval()).explain(x[i:i + 1], [target[i]])
        torch.testing.assert_close(res.attributions[i], alone.attributions[0], msg=f"{name} image {i}")
        torch.testing.assert_close(res.scores[i], alone.scores[0])


def test_topk_and_a_single_object_and_no_trace():
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    meta = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    model = WithMeta().eval()
    top = model(x, meta, 1.0).topk(2, dim=1).indices
    res = xt.Gradient(model).explain(x, xt.TopK(2), additional_forward_args=(meta, 1.0))
    assert res.targets.tolist() == top.tolist()
    assert not model._forward_pre_hooks  # the hook is gone after the call
    single = WithMeta().eval()
    single.forward = lambda x, meta: WithMeta.forward(single, x, meta, 2.0)  # one extra input, not a tuple
    a = xt.Gradient(single)(x, 1, additional_forward_args=meta)
    torch.testing.assert_close(a, xt.Gradient(model)(x, 1, additional_forward_args=[meta, 2.0]))


def test_bad_uses_say_what_to_do():
    x = torch.rand(2, 3, H, W)
    meta = torch.randn(2, 4)
    model = WithMeta().eval()
    with pytest.raises(xt.XaiError, match="needs an nn.Module"):
        xt.Gradient(lambda z, m, s: model(z, m, s))(x, additional_forward_args=(meta, 1.0))
    with pytest.raises(xt.XaiError, match="does not route per-example"):
        xt.GradCAM(model, layer="net.conv2")(x, additional_forward_args=(meta, 1.0))
    with pytest.raises(xt.XaiError, match="additional_forward_args"):
        xt.Gradient(model)(x, extra_args=(meta,))
    assert not model._forward_pre_hooks
    # objects that hold for every row reach the methods that do not route per-example rows
    class ScaleOnly(nn.Module):
        def __init__(self, s=None):
            super().__init__()
            self.inner, self.s = model, s

        def forward(self, z, s=None):
            return self.inner(z, torch.ones(z.shape[0], 4), self.s if s is None else s)

    got = xt.GradCAM(ScaleOnly().eval(), layer="inner.net.conv2")(x, 1, additional_forward_args=3.0)
    torch.testing.assert_close(got, xt.GradCAM(ScaleOnly(3.0).eval(), layer="inner.net.conv2")(x, 1))


@pytest.mark.parity
def test_ig_with_additional_forward_args_parity_with_captum():
    from captum.attr import IntegratedGradients as CaptumIG

    x = torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(0))
    meta = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    model = WithMeta().eval()
    ours = xt.IntegratedGradients(model, steps=8)(x, [1, 0, 3], baseline=0.0, additional_forward_args=(meta, 0.5))
    theirs = CaptumIG(model).attribute(x, 0.0, target=[1, 0, 3], n_steps=8, method="gausslegendre",
                                       additional_forward_args=(meta, 0.5))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6 * float(theirs.abs().max()))
