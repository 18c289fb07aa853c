"""GradCAM on resnet18 (random weights), layer4, 224 px, batch 1 and 8, on the GPU if any.

Floor: the same forward + backward to the layer only, in plain torch (a forward hook keeps
layer4's output, autograd.grad to it, the weighted sum). Reference: pytorch-grad-cam's GradCAM
(same layer, ClassifierOutputTarget), timed in the same run; Captum's LayerGradCam for
context. Targets: <= 1.15 x floor and >= 2x faster than pytorch-grad-cam.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, table


def run(repeats: int = 15) -> str:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(device())
    return "\n\n".join(_one(model, batch, repeats) for batch in (1, 8))


def _one(model, batch: int, repeats: int) -> str:
    dev = device()
    x = torch.randn(batch, 3, 224, 224).to(dev)
    target = torch.arange(batch, device=dev)

    def floor():
        acts = []
        h = model.layer4.register_forward_hook(lambda m, i, o: acts.append(o))
        try:
            logits = model(x)
        finally:
            h.remove()
        (g,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), acts[0])
        cam = torch.relu((g.mean((2, 3), keepdim=True) * acts[0]).sum(1, keepdim=True))
        return torch.nn.functional.interpolate(cam, size=(224, 224), mode="bilinear", align_corners=False)

    fns = {"floor": floor, "ours": lambda: xt.GradCAM(model, layer="layer4")(x, target=target)}
    rows = [("xt.GradCAM", "ours", None, 1.15)]
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        theirs_model = copy.deepcopy(model)
        targets = [ClassifierOutputTarget(int(c)) for c in target]

        def pgc_run():
            with pgc.GradCAM(model=theirs_model, target_layers=[theirs_model.layer4]) as cam:
                return cam(input_tensor=x, targets=targets)

        from captum.attr import LayerAttribution, LayerGradCam

        def captum_run():
            a = LayerGradCam(model, model.layer4).attribute(x, target=target, relu_attributions=True)
            return LayerAttribution.interpolate(a, (224, 224), interpolate_mode="bilinear")

        fns["pytorch-grad-cam"] = pgc_run
        fns["captum LayerGradCam"] = captum_run
        rows = [("xt.GradCAM", "ours", "pytorch-grad-cam", 1.15, 0.5),  # >= 2x faster
                ("  (vs captum LayerGradCam)", "ours", "captum LayerGradCam", None)]
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        medians = compare(fns, repeats=repeats, device=dev)
    return table(f"GradCAM resnet18 layer4, 224 px, batch {batch}, {dev.type}, median of {repeats}", medians, rows)


if __name__ == "__main__":
    print(run())
