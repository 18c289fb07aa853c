"""Layer attribution on the path engine: IntegratedGradients(layer="layer4") on resnet18 (random
weights), one image, 50 Gauss-Legendre steps in one batch.

Floor: the same passes in plain torch: one forward of the image and the baseline recording
layer4's output, then 50 forwards of the image in which a forward hook replaces that output by
the path points (a leaf requiring grad), one ``torch.autograd.grad`` to the leaf, the weighted
sum times ``a_x - a_b``. Reference: Captum's ``LayerIntegratedGradients`` (one batch). Targets:
<= 1.05 x floor, no slower than Captum. Also LayerConductance (51 nodes) against Captum's.
"""
from __future__ import annotations

import warnings

import torch
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, table


def _model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def bench_layer_ig(model, x, b, repeats):
    steps, target = 50, 3
    alphas, weights = xt.path.gauss_legendre(steps)
    a = alphas.float().view(-1, 1, 1, 1).to(x.device)
    w = weights.float().view(-1, 1, 1, 1).to(x.device)
    layer = model.layer4

    def floor():
        kept = []
        handle = layer.register_forward_hook(lambda m, i, o: kept.append(o))
        try:
            with torch.no_grad():
                model(torch.cat([x, b]))
        finally:
            handle.remove()
        a_x, a_b = kept[0][:1], kept[0][1:]
        leaf = (a_b + a * (a_x - a_b)).requires_grad_(True)
        handle = layer.register_forward_hook(lambda m, i, o: leaf)
        try:
            (g,) = torch.autograd.grad(model(x.expand(steps, -1, -1, -1))[:, target].sum(), leaf)
        finally:
            handle.remove()
        return (a_x - a_b) * (g * w).sum(0, keepdim=True)

    ig = xt.IntegratedGradients(model, steps=steps, layer="layer4", batch_size=steps)
    fns = {"floor": floor, "ours": lambda: ig(x, target=target, baseline=b)}
    rows = [("IG(layer='layer4')(x)", "ours", None, 1.05)]
    try:
        from captum.attr import LayerConductance, LayerIntegratedGradients

        captum = LayerIntegratedGradients(model, layer)
        fns["captum LayerIG"] = lambda: captum.attribute(x, b, target=target, n_steps=steps)
        cond = xt.LayerConductance(model, "layer4", steps=steps, batch_size=steps + 1)
        their_cond = LayerConductance(model, layer)
        fns["ours conductance"] = lambda: cond(x, target=target, baseline=b)
        fns["captum LayerConductance"] = lambda: their_cond.attribute(x, b, target=target, n_steps=steps)
        rows = [("IG(layer='layer4')(x)", "ours", "captum LayerIG", 1.05, 1.0),
                ("LayerConductance('layer4')(x)", "ours conductance", "captum LayerConductance", None, 1.0)]
    except ImportError:
        pass
    return table(f"layer IG at layer4, 50 steps (gauss_legendre), batch 50, {x.device.type}",
                 compare(fns, repeats=repeats, device=x.device), rows)


def run(repeats: int = 11, size: int = 224) -> str:
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    dev = device()
    model, x_dev = _model().to(dev), x.to(dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return "\n\n".join([f"resnet18, {size} px, one image, {dev.type}, medians",
                            bench_layer_ig(model, x_dev, torch.zeros_like(x_dev), repeats)])


if __name__ == "__main__":
    print(run())
