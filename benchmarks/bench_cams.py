"""The CAMs of issue 20 on resnet18 (random weights), layer4, 224 px, batch 8, on the GPU if any:
EigenCAM, EigenGradCAM, AblationCAM (whole-model ablations, and the traced tail), FullGrad, and
Grad-CAM with aug_smooth, each against pytorch-grad-cam 1.5 timed in the same run (target: >= 2x
faster) and against a plain-torch floor of the same work.

AblationCAM runs ``1 + 512`` forwards per image: on a CPU set ``XT_BENCH_ABLATION_BATCH`` (e.g. 1)
to keep its table short; the other tables use batch 8. ``XT_BENCH_CAMS_SIZE`` (default 224) and
``XT_BENCH_CAMS_REPEATS`` (default 5) shrink the run on a shared machine.
"""
from __future__ import annotations

import copy
import os
import warnings

import torch
import torch.nn.functional as F
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, table


def _acts(model, x):
    acts = []
    h = model.layer4.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        out = model(x)
    finally:
        h.remove()
    return out, acts[0]


def _project(t):
    flat = t.flatten(2).transpose(1, 2)
    flat = flat - flat.mean(1, keepdim=True)
    p = (flat @ torch.linalg.svd(flat, full_matrices=False).Vh[:, 0, :, None])[..., 0]
    return torch.relu(p).reshape(t.shape[0], 1, *t.shape[2:])


SIZE = int(os.environ.get("XT_BENCH_CAMS_SIZE", "224"))


def _up(m):
    return F.interpolate(m, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def run(repeats: int = int(os.environ.get("XT_BENCH_CAMS_REPEATS", "5"))) -> str:
    torch.manual_seed(0)
    dev = device()
    model = torchvision.models.resnet18(weights=None).eval().to(dev)
    theirs = copy.deepcopy(model)
    x = torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(dev)
    target = torch.arange(8, device=dev)
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def lib(name, xb, tb, **call):
        targets = [ClassifierOutputTarget(int(c)) for c in tb]
        layers = [] if name == "FullGrad" else [theirs.layer4]
        cam = getattr(pgc, name)(model=theirs, target_layers=layers, **({"batch_size": 256} if name == "AblationCAM"
                                                                        else {}))
        try:
            return cam(input_tensor=xb, targets=targets, **call)
        finally:
            cam.activations_and_grads.release()

    def eigen_floor():
        with torch.no_grad():
            return _up(_project(_acts(model, x)[1]))

    def eigen_grad_floor():
        out, a = _acts(model, x)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), a)
        return _up(_project(g * a))

    bias_layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))
                   and m.bias is not None]

    def fullgrad_floor():
        outs = []
        hs = [m.register_forward_hook(lambda m, i, o: outs.append(o)) for m in bias_layers]
        xg = x.clone().requires_grad_(True)
        try:
            out = model(xg)
        finally:
            for h in hs:
                h.remove()
        grads = torch.autograd.grad(out.gather(1, target[:, None]).sum(), [xg, *outs])
        total = xt.viz.minmax((xg * grads[0]).abs().detach(), eps=1e-7).sum(1, keepdim=True)
        for m, g in zip(bias_layers, grads[1:]):
            b = m.bias if isinstance(m, torch.nn.Conv2d) else m.bias - m.running_mean * m.weight / torch.sqrt(
                m.running_var + m.eps)
            scaled = xt.viz.minmax((b.detach()[None, :, None, None] * g).abs(), eps=1e-7)
            total = total + _up(scaled.sum(1, keepdim=True))
        return xt.viz.minmax(total, eps=1e-7)

    def aug_floor():
        maps = []
        for flip in (False, True):
            for f in (0.9, 1.0, 1.1):
                z = (x.flip(-1) if flip else x) * f
                out, a = _acts(model, z)
                (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), a)
                m = _up(torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach())
                m = xt.viz.minmax(m, eps=1e-7)
                maps.append(m.flip(-1) if flip else m)
        return torch.stack(maps).mean(0)

    cases = [
        ("EigenCAM", eigen_floor, lambda: xt.EigenCAM(model, layer="layer4")(x, target=target),
         lambda: lib("EigenCAM", x, target)),
        ("EigenGradCAM", eigen_grad_floor, lambda: xt.EigenGradCAM(model, layer="layer4")(x, target=target),
         lambda: lib("EigenGradCAM", x, target)),
        ("FullGrad", fullgrad_floor, lambda: xt.FullGrad(model)(x, target=target), lambda: lib("FullGrad", x, target)),
        ("GradCAM aug_smooth", aug_floor, lambda: xt.GradCAM(model, layer="layer4", aug_smooth=True)(x, target=target),
         lambda: lib("GradCAM", x, target, aug_smooth=True)),
    ]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, floor, ours, ref in cases:
            med = compare({"floor": floor, "ours": ours, "pytorch-grad-cam": ref}, repeats=repeats, warmup=1,
                          device=dev)
            out.append(table(f"{name} resnet18 layer4, {SIZE} px, batch 8, {dev.type}, median of {repeats}", med,
                             [(f"xt.{name}", "ours", "pytorch-grad-cam", None, 0.5)]))
        out.append(_ablation(model, lib, dev))
    return "\n\n".join(out)


def _ablation(model, lib, dev) -> str:
    b = int(os.environ.get("XT_BENCH_ABLATION_BATCH", "8"))
    x = torch.randn(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(dev)
    target = torch.arange(b, device=dev)

    def floor():  # the 1 + C whole-model forwards with the layer's output swapped, 256 at a time
        with torch.no_grad():
            out, a = _acts(model, x)
            clean = out.gather(1, target[:, None])[:, 0]
            n, c = a.shape[:2]
            scores = []
            for start in range(0, n * c, 256):
                pair = torch.arange(start, min(start + 256, n * c), device=dev)
                img, ch = pair // c, pair % c
                z = a[img].clone()
                z[torch.arange(len(img), device=dev), ch] = 0
                h = model.layer4.register_forward_hook(lambda m, i, o, z=z: z)
                try:
                    scores.append(model(x[img]).gather(1, target[img][:, None])[:, 0])
                finally:
                    h.remove()
            w = (clean[:, None] - torch.cat(scores).view(n, c)) / clean[:, None]
            return _up(torch.relu((w[:, :, None, None] * a).sum(1, keepdim=True)))

    fns = {"floor": floor,
           "ours": lambda: xt.AblationCAM(model, layer="layer4", batch_size=256)(x, target=target),
           "ours tail": lambda: xt.AblationCAM(model, layer="layer4", batch_size=256, tail=True)(x, target=target),
           "pytorch-grad-cam": lambda: lib("AblationCAM", x, target)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        med = compare(fns, repeats=1, warmup=0, device=dev)
    return table(f"AblationCAM resnet18 layer4, {SIZE} px, batch {b}, {dev.type}, 1 run", med,
                 [("xt.AblationCAM", "ours", "pytorch-grad-cam", None, 0.5),
                  ("xt.AblationCAM(tail=True)", "ours tail", "pytorch-grad-cam", None, 0.5)])


if __name__ == "__main__":
    print(run())
