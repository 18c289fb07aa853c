"""Command line: ``xai-torch demo`` (also ``python -m xai_torch demo``).

``xai-torch demo --out out/demo`` explains the packaged photos with the packaged
EfficientNet-Lite0 using every available method and writes PNG overlays, one grid per
image and ``summary.json`` (top-5 predictions, wall time per method).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import cam, path, region, viz, zoo
from .backprop import Deconvnet, GuidedBackprop
from .errors import XaiError
from .gradient import Gradient, InputXGradient
from .perturbation import RISE, Occlusion
from .smoothgrad import SmoothGrad

#: the packaged model's last feature map (1280 x 7 x 7), where its CAMs are taken
CAM_LAYER = "_conv_head"

#: method name -> (explainer factory, how to picture it)
METHODS = {
    "gradient": (Gradient, "grayscale"),
    "input_x_gradient": (InputXGradient, "diverging"),
    "guided_backprop": (GuidedBackprop, "grayscale"),
    "deconvnet": (Deconvnet, "grayscale"),
    "gradcam": (lambda m: cam.GradCAM(m, layer=CAM_LAYER), "map"),
    "gradcam_pp": (lambda m: cam.GradCAMPlusPlus(m, layer=CAM_LAYER), "map"),
    "hirescam": (lambda m: cam.HiResCAM(m, layer=CAM_LAYER), "map"),
    "layercam": (lambda m: cam.LayerCAM(m, layer=CAM_LAYER), "map"),
    "guided_gradcam": (lambda m: cam.GuidedGradCAM(m, layer=CAM_LAYER), "grayscale"),
    "scorecam": (lambda m: cam.ScoreCAM(m, layer=CAM_LAYER), "map"),  # 1280 forwards per image
    "integrated_gradients": (lambda m: path.IntegratedGradients(m, steps=64, normalize=zoo.NORMALIZE), "grayscale"),
    "ig_adaptive": (lambda m: path.IntegratedGradients(m, steps=128, method="adaptive", normalize=zoo.NORMALIZE),
                    "grayscale"),
    "smoothgrad": (lambda m: SmoothGrad(Gradient(m), samples=25, noise=0.15, seed=0), "grayscale"),
    "blur_ig": (lambda m: path.BlurIG(m, steps=50), "grayscale"),
    "guided_ig": (lambda m: path.GuidedIG(m, steps=100, normalize=zoo.NORMALIZE), "grayscale"),  # sequential
    "xrai": (lambda m: region.XRAI(m, steps=50), "map"),
    "lime": (lambda m: region.LIME(m, samples=1000, seed=0), "diverging"),
    "kernel_shap": (lambda m: region.KernelSHAP(m, seed=0), "diverging"),
    "occlusion": (lambda m: Occlusion(m, window=(3, 32, 32), stride=(3, 16, 16)), "diverging"),
    "rise": (lambda m: RISE(m, masks=2000, seed=0), "map"),
}
#: what `demo` runs unless --methods says otherwise (the slow ones on a CPU are left out)
SLOW = ("scorecam", "ig_adaptive", "guided_ig", "xrai", "lime", "kernel_shap", "occlusion", "rise")
DEMO_METHODS = [m for m in METHODS if m not in SLOW]
DEMO_IMAGES = ("chelsea", "coffee", "motorcycle", "rocket", "camera")


def _names(text: str, known, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise XaiError(f"unknown {what} {unknown or text!r}; choose from {', '.join(known)}.")
    return names


def picture(image, attributions, kind: str):
    """uint8 RGB overlays, one per image, for ``(B, C, H, W)`` attributions."""
    if kind == "diverging":
        return [viz.diverging_overlay(img, m) for img, m in zip(image, viz.diverging(attributions))]
    if kind == "map":  # CAM maps: min-max per image, as pytorch-grad-cam shows them
        return [viz.heatmap_overlay(img, m) for img, m in zip(image, viz.scaled(attributions))]
    return [viz.heatmap_overlay(img, m) for img, m in zip(image, viz.grayscale(attributions))]


def demo(out: Path, images: list[str], methods: list[str], device: str) -> dict:
    model = zoo.efficientnet_lite0(device)
    photos = [zoo.center_crop(zoo.image(n)) for n in images]
    x = zoo.preprocess(photos, crop=False).to(device)
    with torch.no_grad():
        probs = model(x).softmax(1)
    top = probs.topk(5, dim=1)
    summary = {"model": "efficientnet_lite0", "device": device, "images": {}, "seconds": {}}
    for i, name in enumerate(images):
        summary["images"][name] = [
            {"class": int(c), "label": zoo.label(int(c)), "probability": round(float(p), 4)}
            for p, c in zip(top.values[i], top.indices[i])
        ]
    panels = {name: [photo] for name, photo in zip(images, photos)}
    for method in methods:
        cls, kind = METHODS[method]
        start = time.perf_counter()
        attributions = cls(model)(x)
        summary["seconds"][method] = round(time.perf_counter() - start, 3)
        for name, pic in zip(images, picture(photos, attributions, kind)):
            viz.save_png(out / f"{name}_{method}.png", pic)
            panels[name].append(pic)
    for name, row in panels.items():
        viz.save_png(out / f"{name}_grid.png", viz.labelled_grid([row], ["image", *methods]))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="xai-torch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="explain the packaged photos with the packaged model")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--images", default=",".join(DEMO_IMAGES), help=f"comma list from {', '.join(zoo.IMAGES)}")
    d.add_argument("--methods", default=",".join(DEMO_METHODS), help=f"comma list from {', '.join(METHODS)}")
    d.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        images = _names(args.images, zoo.IMAGES, "image(s)")
        methods = _names(args.methods, METHODS, "method(s)")
        out = Path(args.out)
        summary = demo(out, images, methods, args.device)
    except XaiError as err:
        print(f"xai-torch: error: {err}", file=sys.stderr)
        return 2
    for name, preds in summary["images"].items():
        print(f"{name:>11}: {preds[0]['label']} ({preds[0]['probability']:.2f})")
    print("seconds per method (all images):", summary["seconds"])
    print(f"wrote {len(list(out.glob('*.png')))} PNGs and summary.json to {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
