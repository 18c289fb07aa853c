"""LRP epsilon-plus-flat on resnet18 (random weights), 224 px, batch 4, on the GPU if any.

Floor: one forward and one backward to the input in plain torch (the gradient). Reference:
zennit's ``Gradient`` attributor with ``EpsilonPlusFlat`` and its ``ResNetCanonizer``, timed in
the same run on a copy of the model, its ``with`` block (hooks, BatchNorm merged into the
parameters) opened once outside the timing: zennit's best case. Targets: <= 1.3 x floor and
faster than zennit.

z+ needs, per convolution, one more convolution with the positive weights (the denominators)
besides the transposed one of the backward: three convolutions where the gradient has two, so
about 1.5 x floor is the least this rule can cost (zennit runs two more per layer).
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, gradient_floor, table


def run(repeats: int = 11) -> str:
    torch.manual_seed(0)
    dev = device()
    model = torchvision.models.resnet18(weights=None).eval().to(dev)
    x = torch.randn(4, 3, 224, 224).to(dev)
    target = torch.tensor([1, 2, 3, 4], device=dev)

    floor = gradient_floor(model, x, target)
    lrp = xt.LRP(model, "epsilon_plus_flat")
    fns = {"floor": floor, "lrp": lambda: lrp(x, target=target)}
    rows = [("xt.LRP epsilon_plus_flat", "lrp", None, 1.3)]
    stack = contextlib.ExitStack()
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer

        twin = copy.deepcopy(model)
        one_hot = torch.nn.functional.one_hot(target, 1000).to(x.dtype)

        attributor = stack.enter_context(Gradient(twin, EpsilonPlusFlat(canonizers=[ResNetCanonizer()])))
        fns["zennit"] = lambda: attributor(x, attr_output=lambda out: one_hot * out)[1]
        rows = [("xt.LRP epsilon_plus_flat", "lrp", "zennit", 1.3, 1.0)]
    except ImportError:
        pass
    with stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        medians = compare(fns, repeats=repeats, device=dev)
    return table(f"LRP epsilon_plus_flat resnet18, 224 px, batch 4, {dev.type}, median of {repeats}", medians, rows)


if __name__ == "__main__":
    print(run())
