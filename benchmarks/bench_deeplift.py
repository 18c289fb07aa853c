"""DeepLift on resnet18 (random weights), 224 px, batch 4, zero baseline, on the GPU if any.

Floor: one forward of the concatenated ``[x; baseline]`` batch (8 rows) and one backward, in
plain torch (the plain gradient: the multipliers cost nothing there). Reference: Captum's
``DeepLift`` timed in the same run. Captum refuses torchvision's resnet18 ("A Module ReLU was
detected that does not contain some of the input/output attributes...": each block calls its
ReLU module twice), so it is timed on a copy whose blocks call a second ReLU module instead
(the same computation). Target: <= 1.5 x floor.
"""
from __future__ import annotations

import copy
import types
import warnings

import torch
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, table


def _block_forward(self, x):
    """torchvision's BasicBlock with its second ReLU call on a module of its own."""
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    identity = x if self.downsample is None else self.downsample(x)
    return self.relu2(out + identity)


def captum_resnet(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose ReLU modules are each called once (what Captum's DeepLift needs)."""
    twin = copy.deepcopy(model)
    for block in twin.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.relu2 = torch.nn.ReLU()
            block.forward = types.MethodType(_block_forward, block)
    return twin


def run(repeats: int = 11) -> str:
    torch.manual_seed(0)
    dev = device()
    model = torchvision.models.resnet18(weights=None).eval().to(dev)
    x = torch.randn(4, 3, 224, 224).to(dev)
    base = torch.zeros_like(x)
    target = torch.tensor([1, 2, 3, 4], device=dev)

    def floor():
        xg = x.detach().clone().requires_grad_(True)
        out = model(torch.cat([xg, base]))
        g = torch.autograd.grad(out[:4].gather(1, target[:, None]).sum(), xg)[0]
        return (x - base) * g

    fns = {"floor": floor, "deeplift": lambda: xt.DeepLift(model)(x, target=target)}
    rows = [("xt.DeepLift", "deeplift", None, 1.5)]
    try:
        from captum.attr import DeepLift

        twin = captum_resnet(model)
        fns["captum DeepLift"] = lambda: DeepLift(twin).attribute(x, base, target=target)
        rows = [("xt.DeepLift", "deeplift", "captum DeepLift", 1.5)]
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        medians = compare(fns, repeats=repeats, device=dev)
    return table(f"DeepLift, resnet18, 224 px, batch 4, {dev.type}, median of {repeats}", medians, rows)


if __name__ == "__main__":
    print(run())
