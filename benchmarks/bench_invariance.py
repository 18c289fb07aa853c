"""Input invariance (Kindermans et al. 2019) against its plain-torch floor, CPU.

``xt.metrics.input_invariance(model, xt.Gradient(model), x)`` on the packaged EfficientNet-Lite0
and two photos at 224 px (its stem is a bias-free conv with static same-padding: the copy's added
bias and border correction are timed too): a deep copy of the model whose stem absorbs the
shift, two logit checks and two gradient maps. ``run(zoo=False)`` times a small CNN (3 convs,
16 images at 64 px) instead, where the fixed costs (the copy, the checks) weigh more. The
floor is the same work in plain torch with the shifted copy built beforehand: a forward of each
model (no grad) and a forward + backward of each. Target: <= 1.1x the floor (the copy, the
border correction and the checks cost the rest).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

import xai_torch as xt
from xai_torch.metrics import input_invariance

from benchmarks.common import compare, gradient_floor, table

IMAGES = ("chelsea", "coffee")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


def run(zoo: bool = True, repeats: int = 5) -> str:
    if zoo:
        model = xt.zoo.efficientnet_lite0()
        x = torch.cat([xt.zoo.preprocess(xt.zoo.image(name)) for name in IMAGES])
        what = f"EfficientNet-Lite0, {len(IMAGES)} photos at 224 px"
    else:
        model, x = small_cnn(), torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        what = "small CNN (3 convs, BatchNorm), 16 images at 64 px"
    shifted = copy.deepcopy(model)   # the floor's twin: same cost as the metric's shifted copy
    xs = x - 1.0
    with torch.no_grad():
        target = model(x).argmax(1)
    grad, grad_shifted = gradient_floor(model, x, target), gradient_floor(shifted, xs, target)

    def floor() -> object:
        with torch.no_grad():
            model(x)
            shifted(xs)
        return grad(), grad_shifted()

    explainer = xt.Gradient(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = input_invariance(model, explainer, x)
        medians = compare({"floor": floor, "ours": lambda: input_invariance(model, explainer, x)},
                          repeats=repeats, warmup=1)
    title = (f"input_invariance, {what}, Gradient, CPU, "
             f"{torch.get_num_threads()} threads (relative change {result.relative_change.max().item():.2g}, "
             f"logit change {result.logit_change.max().item():.2g}, border corrected: {result.border_corrected})")
    return table(title, medians, [("input_invariance(Gradient)", "ours", None, 1.1)])


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
