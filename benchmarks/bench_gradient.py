"""Gradient and GuidedBackprop on resnet18 (random weights), 224 px, batch 4, on the GPU if any.

Floor: the same forward + backward in plain torch (autograd.grad to the input). Reference:
Captum's Saliency(abs=False) and GuidedBackprop, timed in the same run. Target: <= 1.10 x floor.
"""
from __future__ import annotations

import torch
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, gradient_floor, table


def run(repeats: int = 15) -> str:
    torch.manual_seed(0)
    dev = device()
    model = torchvision.models.resnet18(weights=None).eval().to(dev)
    x = torch.randn(4, 3, 224, 224).to(dev)
    target = torch.tensor([1, 2, 3, 4], device=dev)

    floor = gradient_floor(model, x, target)

    fns = {"floor": floor, "gradient": lambda: xt.Gradient(model)(x, target=target),
           "guided": lambda: xt.GuidedBackprop(model)(x, target=target)}
    rows = [("xt.Gradient", "gradient", None, 1.10), ("xt.GuidedBackprop", "guided", None, 1.10)]
    try:
        from captum.attr import GuidedBackprop, Saliency

        fns["captum Saliency"] = lambda: Saliency(model).attribute(x, target=target, abs=False)
        fns["captum GuidedBackprop"] = lambda: GuidedBackprop(model).attribute(x, target=target)
        rows = [("xt.Gradient", "gradient", "captum Saliency", 1.10),
                ("xt.GuidedBackprop", "guided", "captum GuidedBackprop", 1.10)]
    except ImportError:
        pass
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        medians = compare(fns, repeats=repeats, device=dev)
    return table(f"Gradient / GuidedBackprop, resnet18, 224 px, batch 4, {dev.type}, median of {repeats}",
                 medians, rows)


if __name__ == "__main__":
    print(run())
