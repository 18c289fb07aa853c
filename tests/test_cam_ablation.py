"""Ablation-CAM and FullGrad (xai_torch/cam/ablation.py, xai_torch/cam/fullgrad.py): closed forms,
model calls, the traced tail, parity with pytorch-grad-cam."""
from __future__ import annotations

import pytest
import torch

import xai_torch as xt

from cam_helpers import CallCounter, acts_of, make_bnnet, pgc_maps, pgc_scale


def test_ablation_weights_closed_form_and_model_calls(gapnet, gap_x):
    a = acts_of(gapnet, gap_x)
    target = [0, 3, 1]
    with CallCounter(gapnet) as calls:
        res = xt.AblationCAM(gapnet, layer="features", batch_size=4).explain(gap_x, target=target)
    n, c = a.shape[:2]
    assert calls.sizes[:2] == [3, 3] and sum(calls.sizes[2:]) == n * c and max(calls.sizes) <= 4
    s = gapnet.fc(a.mean((2, 3)))[torch.arange(n), target].detach()
    expect = torch.empty(n, c, dtype=a.dtype)
    for k in range(c):
        z = a.clone()
        z[:, k] = 0
        expect[:, k] = (s - gapnet.fc(z.mean((2, 3)))[torch.arange(n), target].detach()) / s
    torch.testing.assert_close(res.weights[0], expect)
    assert float(res.attributions.max()) > 0
    with pytest.raises(xt.XaiError, match="one layer"):
        xt.AblationCAM(gapnet, layer=["features.0", "features.2"])
    with pytest.raises(xt.XaiError, match="layer_input"):
        xt.AblationCAM(gapnet, layer="features", layer_input=True)


def test_ablation_traced_tail_runs_from_the_layer_on(gapnet, gap_x):
    whole = xt.AblationCAM(gapnet, layer="features")(gap_x, target=2)
    with CallCounter(gapnet) as calls:
        tail = xt.AblationCAM(gapnet, layer="features", tail=True)(gap_x, target=2)
    assert calls.sizes == [3]  # the clean forward only: the ablated ones replay the traced tail
    torch.testing.assert_close(tail, whole)

    class Skip(torch.nn.Module):  # the tail reads a value from before the layer
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1), torch.nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.fc((self.b(h) + h).relu().mean((2, 3)))

    torch.manual_seed(0)
    skip = Skip().eval()
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(xt.AblationCAM(skip, layer="b", tail=True)(x, target=[0, 1]),
                               xt.AblationCAM(skip, layer="b")(x, target=[0, 1]))


def test_fullgrad_closed_form(gapnet, gap_x):
    res = xt.FullGrad(gapnet).explain(gap_x, target=[0, 1, 2])
    assert res.layers == ["features.0", "features.2"] and res.attributions.shape == (3, 1, 6, 8)
    xg = gap_x.clone().requires_grad_(True)
    h1 = gapnet.features[0](xg)
    h2 = gapnet.features[2](torch.relu(h1))
    out = gapnet.fc(torch.relu(h2).mean((2, 3)))[torch.arange(3), [0, 1, 2]].sum()
    gx, g1, g2 = torch.autograd.grad(out, [xg, h1, h2])

    def scaled(t):
        return xt.viz.minmax(t, eps=1e-7).sum(1, keepdim=True)

    total = scaled((gap_x * gx).abs()) + scaled((gapnet.features[0].bias[:, None, None] * g1).abs()) + \
        scaled((gapnet.features[2].bias[:, None, None] * g2).abs())
    torch.testing.assert_close(res.attributions, xt.viz.minmax(total.detach(), eps=1e-7))
    with pytest.raises(xt.XaiError, match="eigen_smooth"):
        xt.FullGrad(gapnet, eigen_smooth=True)
    with pytest.raises(xt.XaiError, match="layers with a bias"):
        xt.FullGrad(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1, bias=False)))


@pytest.mark.parity
@pytest.mark.parametrize("name", ["AblationCAM", "FullGrad"])
def test_equal_pytorch_grad_cam(name):
    import pytorch_grad_cam as pgc

    model = make_bnnet()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    theirs = pgc_maps(getattr(pgc, name), model, ["p"] if name == "AblationCAM" else [], x, [0, 1, 2])
    if name == "AblationCAM":  # a layer after a ReLU: its zero ablation is the paper's
        ours = pgc_scale(pgc_scale(xt.AblationCAM(model, layer="p", batch_size=8)(x, target=[0, 1, 2])[:, 0]))
    else:
        ours = xt.FullGrad(model)(x, target=[0, 1, 2])[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_attached_mode(gapnet, gap_x):
    with xt.AblationCAM(gapnet, layer="features") as cam:
        out = gapnet(gap_x)
        torch.testing.assert_close(cam.from_output(out, [0, 1, 2]).attributions,
                                   xt.AblationCAM(gapnet, layer="features")(gap_x, target=[0, 1, 2]))
    with xt.GradCAM(gapnet, layer="features", aug_smooth=True) as cam:
        out = gapnet(gap_x)
        with pytest.raises(xt.XaiError, match="aug_smooth"):
            cam.from_output(out)
