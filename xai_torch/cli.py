"""Command line: ``xai-torch demo``, ``explain`` and ``run`` (also ``python -m xai_torch ...``).

* ``xai-torch demo [--out out/demo]`` explains the packaged photos (chelsea, coffee,
  motorcycle, rocket, camera) with the packaged EfficientNet-Lite0 using every method
  (``--methods fast`` for the quick subset) and writes ``report.html``: top-5 predictions,
  overlays per image × method, wall time and deletion / insertion AUC per method, with the
  PNGs it shows and ``summary.json`` (every number).
* ``xai-torch explain IMAGE... --model efficientnet_lite0 | torchvision:NAME [--weights FILE]
  --method gradcam,ig [--target N|top] [--device cpu|cuda] [--metrics] --out DIR`` does the
  same for your own images (any file OpenCV reads) and model.

Method names are those of :data:`METHODS`; short aliases such as ``ig``, ``gradcam++``,
``gbp`` or ``shap`` work too (:data:`ALIASES`), and ``all`` / ``fast`` select groups.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import cam, path, region, viz, zoo
from .backprop import Deconvnet, GuidedBackprop
from .distributed import add_run_parser, run_command
from .errors import XaiError, closest_names
from .gradient import Gradient, InputXGradient
from .layers import find_layer
from .perturbation import RISE, Occlusion
from .smoothgrad import SmoothGrad

#: the packaged model's last feature map (1280 x 7 x 7), where its CAMs are taken
CAM_LAYER = "_conv_head"
#: torchvision's ImageNet input normalisation ``(mean, std)`` for pixels in [0, 1]
IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: pixels changed per step of the deletion / insertion curves (29 points at 224 x 224)
METRIC_STEP = 224 * 8
#: how attributions are pictured (:func:`picture`): PAIR greyscale, signed green/red, min-max heat map
KINDS = ("grayscale", "diverging", "map")


def _method(build: Callable, kind: str) -> tuple[Callable, str]:
    """``(factory, kind)`` with ``factory(model, layer=CAM_LAYER, normalize=zoo.NORMALIZE, steps=None)``."""

    def factory(model, layer=CAM_LAYER, normalize=zoo.NORMALIZE, steps: Optional[int] = None):
        return build(model, layer, normalize, steps)

    return factory, kind


#: method name -> (explainer factory, how to picture it: "grayscale", "diverging" or "map").
#: ``factory(model)`` builds the demo's explainer for the packaged model; another model passes
#: ``factory(model, layer, normalize, steps)``: its CAM layer, its input normalisation (the path
#: methods' black baseline) and, optionally, fewer or more path steps.
METHODS = {
    "gradient": _method(lambda m, layer, norm, steps: Gradient(m), "grayscale"),
    "input_x_gradient": _method(lambda m, layer, norm, steps: InputXGradient(m), "diverging"),
    "guided_backprop": _method(lambda m, layer, norm, steps: GuidedBackprop(m), "grayscale"),
    "deconvnet": _method(lambda m, layer, norm, steps: Deconvnet(m), "grayscale"),
    "gradcam": _method(lambda m, layer, norm, steps: cam.GradCAM(m, layer=layer), "map"),
    "gradcam_pp": _method(lambda m, layer, norm, steps: cam.GradCAMPlusPlus(m, layer=layer), "map"),
    "xgradcam": _method(lambda m, layer, norm, steps: cam.XGradCAM(m, layer=layer), "map"),
    "hirescam": _method(lambda m, layer, norm, steps: cam.HiResCAM(m, layer=layer), "map"),
    "layercam": _method(lambda m, layer, norm, steps: cam.LayerCAM(m, layer=layer), "map"),
    "guided_gradcam": _method(lambda m, layer, norm, steps: cam.GuidedGradCAM(m, layer=layer), "grayscale"),
    # one forward per channel of the layer: 1280 per image on Lite0
    "scorecam": _method(lambda m, layer, norm, steps: cam.ScoreCAM(m, layer=layer), "map"),
    "integrated_gradients": _method(
        lambda m, layer, norm, steps: path.IntegratedGradients(m, steps=steps or 64, normalize=norm), "grayscale"),
    # adaptive quadrature needs a budget of at least 32 evaluations (2 per Gauss-Kronrod group)
    "ig_adaptive": _method(lambda m, layer, norm, steps: path.IntegratedGradients(
        m, steps=max(steps, 32) if steps else 128, method="adaptive", normalize=norm), "grayscale"),
    "smoothgrad": _method(lambda m, layer, norm, steps: SmoothGrad(Gradient(m), samples=25, noise=0.15, seed=0),
                          "grayscale"),
    "blur_ig": _method(lambda m, layer, norm, steps: path.BlurIG(m, steps=steps or 50), "grayscale"),
    # sequential: one step after the other
    "guided_ig": _method(lambda m, layer, norm, steps: path.GuidedIG(m, steps=steps or 100, normalize=norm),
                         "grayscale"),
    "xrai": _method(lambda m, layer, norm, steps: region.XRAI(m, steps=steps or 50), "map"),
    "lime": _method(lambda m, layer, norm, steps: region.LIME(m, samples=1000, seed=0), "diverging"),
    "kernel_shap": _method(lambda m, layer, norm, steps: region.KernelSHAP(m, seed=0), "diverging"),
    "occlusion": _method(lambda m, layer, norm, steps: Occlusion(m, window=(3, 32, 32), stride=(3, 16, 16)),
                         "diverging"),
    "rise": _method(lambda m, layer, norm, steps: RISE(m, masks=2000, seed=0), "map"),
}
#: the methods that take a CAM layer, and those whose path steps ``--steps`` sets
CAM_METHODS = ("gradcam", "gradcam_pp", "xgradcam", "hirescam", "layercam", "guided_gradcam", "scorecam")
STEP_METHODS = ("integrated_gradients", "ig_adaptive", "blur_ig", "guided_ig", "xrai")
#: the methods that take minutes on a CPU (thousands of model calls per image, or sequential steps)
SLOW = ("scorecam", "ig_adaptive", "guided_ig", "xrai", "lime", "kernel_shap", "occlusion", "rise")
FAST_METHODS = [m for m in METHODS if m not in SLOW]
#: ``--methods all`` / ``--methods fast``
GROUPS = {"all": list(METHODS), "fast": FAST_METHODS}
#: what ``demo`` runs unless ``--methods`` says otherwise: every method, as the report is meant to show
DEMO_METHODS = list(METHODS)
DEMO_IMAGES = ("chelsea", "coffee", "motorcycle", "rocket", "camera")
#: other names accepted for the methods (matched ignoring case, "-", "_" and spaces)
ALIASES = {
    "saliency": "gradient", "vanilla_gradient": "gradient", "grad": "gradient",
    "ixg": "input_x_gradient", "gradient_x_input": "input_x_gradient",
    "gbp": "guided_backprop", "guided_bp": "guided_backprop", "deconv": "deconvnet",
    "grad_cam": "gradcam", "gradcam++": "gradcam_pp", "grad_cam++": "gradcam_pp", "gradcamplusplus": "gradcam_pp",
    "xgrad_cam": "xgradcam", "hires_cam": "hirescam", "layer_cam": "layercam", "score_cam": "scorecam",
    "ggcam": "guided_gradcam", "guided_grad_cam": "guided_gradcam",
    "ig": "integrated_gradients", "integrated_gradient": "integrated_gradients",
    "adaptive_ig": "ig_adaptive", "sg": "smoothgrad", "blurig": "blur_ig", "guidedig": "guided_ig",
    "shap": "kernel_shap", "kernelshap": "kernel_shap",
}


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch not in "-_ ")


def _names(text: str, known, what: str, aliases: Optional[dict] = None, groups: Optional[dict] = None) -> list[str]:
    """Resolve a comma list of names (aliases and groups included) to known names, in order, once each."""
    lookup = {_squash(k): k for k in known}
    lookup.update({_squash(a): k for a, k in (aliases or {}).items()})
    names, unknown = [], []
    for raw in str(text).split(","):
        n = raw.strip()
        if not n:
            continue
        if groups and n.lower() in groups:
            names += groups[n.lower()]
        elif _squash(n) in lookup:
            names.append(lookup[_squash(n)])
        else:
            unknown.append(n)
    if unknown or not names:
        extra = []
        if groups:
            extra.append(f"or a group: {', '.join(groups)}")
        if aliases:
            extra.append(f"aliases: {', '.join(aliases)}")
        close = [c for u in unknown for c in closest_names(u, list(known), n=2)]
        hint = f" Did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
        raise XaiError(f"unknown {what} {unknown or text!r}; choose from {', '.join(known)}"
                       f"{' (' + '; '.join(extra) + ')' if extra else ''}.{hint}")
    return list(dict.fromkeys(names))


def picture(image, attributions, kind: str):
    """uint8 RGB overlays, one per image, for ``(B, C, H, W)`` attributions."""
    if kind == "diverging":
        return [viz.diverging_overlay(img, m) for img, m in zip(image, viz.diverging(attributions))]
    if kind == "map":  # CAM maps: min-max per image, as pytorch-grad-cam shows them
        return [viz.heatmap_overlay(img, m) for img, m in zip(image, viz.scaled(attributions))]
    return [viz.heatmap_overlay(img, m) for img, m in zip(image, viz.grayscale(attributions))]


# -- inputs -------------------------------------------------------------------------------------
def load_image(spec: str) -> tuple[str, np.ndarray, str]:
    """Read one image for ``explain``: any file OpenCV decodes, or a packaged photo's name.

    Args:
        spec: a path (PNG, JPEG, BMP, TIFF, WebP...; greyscale and alpha are turned into RGB),
            or, when no such file exists, one of ``zoo.IMAGES`` (``"chelsea"``...).

    Returns:
        ``(name, rgb, source)``: the file stem, the uint8 RGB image ``(H, W, 3)`` and where it
        came from.

    Example:
        >>> name, rgb, src = load_image("photos/cat.jpg")     # ("cat", (H, W, 3) uint8, "photos/cat.jpg")
    """
    import cv2

    p = Path(spec)
    if not p.exists():
        if spec in zoo.IMAGES:
            return spec, zoo.image(spec), f"packaged:{spec}"
        raise XaiError(f"image file {spec!r} does not exist (packaged photos can be named instead: "
                       f"{', '.join(zoo.IMAGES)}).")
    if p.is_dir():
        raise XaiError(f"{spec!r} is a folder; pass the image files themselves (e.g. {spec}/*.jpg).")
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise XaiError(f"could not read {spec!r} as an image: OpenCV cannot decode it. Pass a PNG, JPEG, BMP, "
                       "TIFF or WebP file.")
    return p.stem, np.ascontiguousarray(bgr[..., ::-1]), str(p)


def _unique(names: list[str]) -> list[str]:
    """File-safe, distinct names: ``cat``, ``cat_2``..."""
    seen, out = {}, []
    for n in names:
        n = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in n) or "image"
        k = seen.get(n, 0) + 1
        seen[n] = k
        out.append(n if k == 1 else f"{n}_{k}")
    return out


def check_device(text: str) -> torch.device:
    """``--device`` as a torch.device; a clear error for CUDA on a machine without it."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise XaiError(f"--device must be cpu, cuda or cuda:N; got {text!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise XaiError(f"--device {text}: CUDA is not available here (torch.cuda.is_available() is False); "
                       "use --device cpu.")
    return device


@dataclass
class LoadedModel:
    """A model ready for the command line.

    Attributes:
        model: in eval mode, on its device.
        name: ``"efficientnet_lite0"`` or ``"torchvision:NAME"``.
        weights: the weights file, ``"packaged"``, or None (random initialisation).
        normalize: ``(mean, std)`` of its input normalisation for pixels in [0, 1].
        layer: its CAM layer, or None to pick the last convolutional block (:func:`auto_cam_layer`).
        to_input: 224 x 224 uint8 RGB crops -> the model's input batch.
    """

    model: torch.nn.Module
    name: str
    weights: Optional[str]
    normalize: tuple
    layer: Optional[str]
    to_input: Callable = field(repr=False)


def _imagenet_input(crops) -> torch.Tensor:
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in IMAGENET_NORMALIZE)
    return (x - mean) / std


def load_weights(model: torch.nn.Module, file, model_name: str, classes: int = 1000) -> None:
    """Load a state dict file into ``model``, or say precisely why it does not fit.

    Args:
        model: the freshly built model.
        file: a ``torch.save(model.state_dict(), file)`` file; a checkpoint dict holding it under
            ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` works, and a DataParallel
            ``"module."`` prefix is removed.
        model_name: for messages.
        classes: the model's number of classes (to suggest ``--num-classes``).

    Raises:
        XaiError: missing or unreadable file, not a state dict, or keys / shapes that do not fit
        (the message lists them).

    Example:
        >>> load_weights(torchvision.models.resnet18(), "resnet18.pt", "torchvision:resnet18")
    """
    p = Path(file)
    if not p.is_file():
        raise XaiError(f"weights file {str(file)!r} does not exist.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights_only errors all mean "not a state dict we can read"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise XaiError(f"could not read {str(file)!r} as PyTorch weights ({first[:200]}); save them with "
                       "torch.save(model.state_dict(), path).") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XaiError(f"{str(file)!r} does not hold a state dict (a dict of tensors); save one with "
                       "torch.save(model.state_dict(), path).")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            listed = "; ".join(f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in shapes[:4])
            parts.append(f"{len(shapes)} tensor(s) of another shape ({listed}{' ...' if len(shapes) > 4 else ''})")
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} file key(s) the model does not have (e.g. {', '.join(unexpected[:3])})")
        hint = ""
        heads = {a[0] for _, a, b in shapes if b and b[0] == classes and a and a[0] != classes}
        if shapes and not missing and not unexpected and len(heads) == 1:
            hint = f" The file looks trained for {heads.pop()} classes: pass --num-classes with that number."
        elif len(missing) > len(own) // 2:
            hint = " It looks like the weights of another architecture: check --model."
        raise XaiError(f"the weights in {str(file)!r} do not fit {model_name} ({len(own)} tensors in the model, "
                       f"{len(state)} in the file): {'; '.join(parts)}.{hint}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise XaiError(f"the weights in {str(file)!r} do not fit {model_name}: {err}") from None


def load_model(spec: str, weights=None, num_classes: Optional[int] = None, device="cpu") -> LoadedModel:
    """Build the model ``explain`` names: the packaged EfficientNet-Lite0 or a torchvision architecture.

    Args:
        spec: ``"efficientnet_lite0"`` (trained, packaged) or ``"torchvision:NAME"``, NAME one
            of ``torchvision.models.list_models()`` classification models (built with
            ``weights=None``: nothing is downloaded).
        weights: an optional state dict file (:func:`load_weights`).
        num_classes: a torchvision model's number of classes (default 1000).
        device: where the model goes.

    Returns:
        :class:`LoadedModel`.

    Example:
        >>> lm = load_model("torchvision:resnet18", weights="resnet18.pt")
        >>> lm.model(lm.to_input([zoo.center_crop(zoo.image("chelsea"))])).shape
        torch.Size([1, 1000])
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise XaiError(f"--num-classes must be a positive integer; got {num_classes!r}.")
    if spec in ("efficientnet_lite0", "lite0", "packaged"):
        if num_classes not in (None, 1000):
            raise XaiError("--num-classes applies to torchvision models; the packaged Lite0 has 1000 classes.")
        model = zoo.efficientnet_lite0()
        if weights is not None:
            load_weights(model, weights, "efficientnet_lite0")
        return LoadedModel(model.eval().to(device), "efficientnet_lite0", str(weights) if weights else "packaged",
                           zoo.NORMALIZE, CAM_LAYER, lambda crops: zoo.preprocess(list(crops), crop=False))
    if isinstance(spec, str) and spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            close = closest_names(name, available)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise XaiError(f"torchvision has no classification model {name!r}.{hint} Available: "
                           f"{', '.join(available)}.")
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        try:
            model = torchvision.models.get_model(name, weights=None, **kwargs)
        except (TypeError, ValueError) as err:
            raise XaiError(f"could not build torchvision:{name} ({err}).") from None
        if weights is not None:
            load_weights(model, weights, spec, num_classes or 1000)
        return LoadedModel(model.eval().to(device), spec, str(weights) if weights else None, IMAGENET_NORMALIZE,
                           None, _imagenet_input)
    raise XaiError(f"unknown model {spec!r}; use efficientnet_lite0 (the packaged, trained ImageNet model) or "
                   "torchvision:NAME (e.g. torchvision:resnet50 --weights resnet50.pt).")


def auto_cam_layer(model: torch.nn.Module, x: torch.Tensor) -> str:
    """The CAM layer of a CNN: the last module to finish its forward that contains a Conv2d and
    outputs a ``(B, C, H, W)`` map with ``H, W > 1`` (``layer4`` of a ResNet, ``features`` of
    VGG / DenseNet / MobileNet / EfficientNet / ConvNeXt, ``Mixed_7c`` of Inception v3,
    ``trunk_output`` of RegNet; ``classifier.1`` of SqueezeNet, its class-map convolution).

    Args:
        model: the model (its hooks are removed again, whatever happens).
        x: an input batch; one image of it is forwarded.

    Returns:
        The dotted module name.

    Example:
        >>> auto_cam_layer(torchvision.models.resnet18(), torch.zeros(1, 3, 224, 224))
        'layer4'
    """
    candidates = [(n, m) for n, m in model.named_modules()
                  if n and any(isinstance(s, torch.nn.Conv2d) for s in m.modules())]
    finished: list[str] = []

    def record(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
                finished.append(name)
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in candidates]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not finished:
        raise XaiError("found no convolutional layer with a (B, C, H, W) output for the CAM methods; pass "
                       "--layer NAME (a dotted module name, see model.named_modules()).")
    return finished[-1]


# -- the work -----------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _predictions(logits: torch.Tensor, probs: torch.Tensor, labels: bool) -> list[dict]:
    # ranked by the logits (softmax can round near-equal logits to equal probabilities)
    top = logits.topk(min(5, logits.shape[0])).indices.tolist()
    preds = []
    for c in top:
        entry = {"class": int(c), "probability": round(float(probs[c]), 4)}
        if labels:
            entry["label"] = zoo.label(int(c))
        preds.append(entry)
    return preds


def explain_images(loaded: LoadedModel, names: list[str], photos: list[np.ndarray], sources: list[str],
                   methods: list[str], *, out, target="top", metrics: bool = False, layer: Optional[str] = None,
                   steps: Optional[int] = None, metric_step: int = METRIC_STEP, command: str = "explain",
                   title: str = "xai_torch report", progress: Optional[bool] = None) -> dict:
    """Explain 224 x 224 photos with each method; write overlays, grids, ``summary.json`` and ``report.html``.

    Args:
        loaded: the model (:func:`load_model`).
        names: one distinct, file-safe name per photo (the PNGs are ``<name>_<method>.png``).
        photos: uint8 RGB ``(224, 224, 3)`` crops (``zoo.center_crop``).
        sources: where each photo came from (for the report).
        methods: names from :data:`METHODS`.
        out: the output folder (created).
        target: ``"top"`` (each image's top-1 class) or a class index.
        metrics: deletion / insertion AUC per image x method (``metric_step`` pixels per step,
            on the raw attributions: ``reduce="abs"`` for the grayscale methods, ``"sum"`` else).
        metric_step: pixels changed per point of those curves (default 224 * 8: 29 points).
        layer: the CAM layer (default: ``loaded.layer``, else :func:`auto_cam_layer`).
        steps: path steps for :data:`STEP_METHODS` (default: each method's own).
        command, title: recorded in the summary / shown by the report.
        progress: tqdm bar over the methods (None: when stderr is a terminal).

    Returns:
        The summary dict (also ``out/summary.json``; its layout is in :mod:`xai_torch.report`).

    Example:
        >>> lm = load_model("efficientnet_lite0")
        >>> photo = zoo.center_crop(zoo.image("chelsea"))
        >>> s = explain_images(lm, ["chelsea"], [photo], ["packaged"], ["gradcam"], out="out/x")
        >>> s["images"]["chelsea"]["predictions"][0]["label"]
        'tiger cat'
    """
    from tqdm.auto import tqdm

    from . import metrics as xm
    from .report import write_report

    out = Path(out)
    model, device = loaded.model, next(iter(loaded.model.parameters())).device
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise XaiError(f"--steps must be a positive integer; got {steps!r}.")
    if isinstance(metric_step, bool) or not isinstance(metric_step, int) or not 1 <= metric_step <= 224 * 224:
        raise XaiError(f"--metric-step must be an integer in [1, {224 * 224}] (pixels per step); got {metric_step!r}.")
    x = loaded.to_input(photos).to(device)
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise XaiError(f"{loaded.name} returns {getattr(logits, 'shape', type(logits).__name__)}; explaining needs "
                       "class scores (B, classes).")
    classes = logits.shape[1]
    if target == "top":
        targets = logits.topk(1, dim=1).indices[:, 0]  # the same tie-break as the top-5 list
    else:
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < classes:
            raise XaiError(f"--target must be 'top' or a class index in [0, {classes - 1}]; got {target!r}.")
        targets = torch.full((len(photos),), target, dtype=torch.long, device=device)
    labels = classes == 1000
    if labels:
        try:
            zoo.label(0)
        except XaiError:
            labels = False
    cam_layer = None
    if any(m in CAM_METHODS for m in methods):
        cam_layer = layer or loaded.layer or auto_cam_layer(model, x)
        find_layer(model, cam_layer, "--layer")
    probs = logits.float().softmax(1)
    summary = {
        "command": command, "model": loaded.name, "weights": loaded.weights, "device": str(device),
        "layer": cam_layer, "target": target,
        "metrics": {"step": metric_step, "score": "softmax", "deletion_substrate": "zeros",
                    "insertion_substrate": "rise_blur", "reduce": "abs for grayscale methods, else sum"}
        if metrics else None,
        "images": {}, "methods": {},
    }
    for i, (name, photo) in enumerate(zip(names, photos)):
        viz.save_png(out / f"{name}.png", photo)
        summary["images"][name] = {
            "file": sources[i], "input": f"{name}.png", "grid": f"{name}_grid.png", "target": int(targets[i]),
            "predictions": _predictions(logits[i], probs[i], labels), "overlays": {},
            **({"deletion_auc": {}, "insertion_auc": {}} if metrics else {}),
        }
    panels = {name: [photo] for name, photo in zip(names, photos)}
    show = None if progress is None else not progress
    bar = tqdm(methods, desc=command, unit="method", disable=show, leave=False)
    for method in bar:
        bar.set_postfix_str(method)
        factory, kind = METHODS[method]
        try:
            explainer = factory(model, cam_layer, loaded.normalize, steps)
            _sync(device)
            start = time.perf_counter()
            attributions = explainer(x, target=targets)
            _sync(device)
            seconds = time.perf_counter() - start
        except XaiError as err:
            raise XaiError(f"{method}: {err}") from None
        entry = {"kind": kind, "seconds": round(seconds, 3), "seconds_per_image": round(seconds / len(photos), 4)}
        for name, pic in zip(names, picture(photos, attributions, kind)):
            viz.save_png(out / f"{name}_{method}.png", pic)
            summary["images"][name]["overlays"][method] = f"{name}_{method}.png"
            panels[name].append(pic)
        if metrics:
            reduce = "abs" if kind == "grayscale" else "sum"
            kw = dict(step=metric_step, reduce=reduce, progress=progress)
            curves = {"deletion": xm.deletion(model, x, attributions, targets, **kw),
                      "insertion": xm.insertion(model, x, attributions, targets, **kw)}
            for mode, res in curves.items():
                auc = res.auc.detach().double().cpu()
                for name, v in zip(names, auc.tolist()):
                    summary["images"][name][f"{mode}_auc"][method] = round(v, 4)
                entry[f"{mode}_auc_mean"] = round(float(auc.mean()), 4)
                entry[f"{mode}_curve_mean"] = [round(v, 4) for v in res.curve.detach().double().mean(0).tolist()]
            entry["fractions"] = [round(v, 4) for v in curves["deletion"].fractions.detach().double().cpu().tolist()]
        summary["methods"][method] = entry
        del attributions
    bar.close()
    for name, row in panels.items():
        viz.save_png(out / f"{name}_grid.png", viz.labelled_grid([row], ["image", *methods]))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(out, summary, title=title)
    return summary


def demo(out, images=DEMO_IMAGES, methods=None, device="cpu", *, metrics: bool = True,
         steps: Optional[int] = None, metric_step: int = METRIC_STEP, progress: Optional[bool] = None) -> dict:
    """``xai-torch demo``: the packaged Lite0 on packaged photos with each method, as a report.

    Args:
        out: the output folder (``report.html``, ``summary.json`` and the PNGs).
        images: names from ``zoo.IMAGES`` (default: chelsea, coffee, motorcycle, rocket, camera).
        methods: names from :data:`METHODS` (default: all of them).
        device: where to run.
        metrics: deletion / insertion AUC per image x method.
        steps, metric_step, progress: see :func:`explain_images`.

    Returns:
        The summary dict (see :mod:`xai_torch.report`).

    Example:
        >>> s = demo("out/demo", ["chelsea"], ["gradcam", "integrated_gradients"], "cpu")
        >>> s["methods"]["gradcam"]["deletion_auc_mean"] < s["methods"]["gradcam"]["insertion_auc_mean"]
        True
    """
    images = list(images)
    unknown = [n for n in images if n not in zoo.IMAGES]
    if unknown or not images:
        raise XaiError(f"unknown image(s) {unknown}; packaged images: {', '.join(zoo.IMAGES)}.")
    methods = list(METHODS) if methods is None else list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise XaiError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}.")
    loaded = load_model("efficientnet_lite0", device=check_device(str(device)))
    photos = [zoo.center_crop(zoo.image(n)) for n in images]
    return explain_images(loaded, images, photos, [f"packaged:{n}" for n in images], methods, out=out,
                          metrics=metrics, steps=steps, metric_step=metric_step, command="demo", progress=progress,
                          title="xai_torch demo: EfficientNet-Lite0 on the packaged photos")


def explain(images, model: str = "efficientnet_lite0", methods=("gradcam",), *, weights=None,
            num_classes: Optional[int] = None, target="top", device="cpu", out="out/explain",
            metrics: bool = False, layer: Optional[str] = None, steps: Optional[int] = None,
            metric_step: int = METRIC_STEP, progress: Optional[bool] = None) -> dict:
    """``xai-torch explain``: your images, the packaged or a torchvision model, the methods you name.

    Args:
        images: image files (any format OpenCV reads) or packaged photo names; each is resized
            (short side 256) and centre-cropped to 224 x 224.
        model, weights, num_classes: see :func:`load_model`.
        methods: names or aliases from :data:`METHODS` (a list, or one comma-separated string).
        target, device, out, metrics, layer, steps, metric_step, progress: see :func:`explain_images`.

    Returns:
        The summary dict, also written to ``out/summary.json`` (next to ``report.html``).

    Example:
        >>> s = explain(["cat.jpg"], "torchvision:resnet18", "gradcam,ig", weights="resnet18.pt")
        >>> s["methods"]["gradcam"]["seconds"]
    """
    if isinstance(images, (str, Path)):
        images = [str(images)]
    if not images:
        raise XaiError("explain needs at least one image file.")
    text = methods if isinstance(methods, str) else ",".join(methods)
    methods = _names(text, METHODS, "method(s)", ALIASES, GROUPS)
    loaded_images = [load_image(str(s)) for s in images]  # every file is checked before the model loads
    dev = check_device(str(device))
    loaded = load_model(model, weights, num_classes, dev)
    names = _unique([n for n, _, _ in loaded_images])
    photos = [zoo.center_crop(img) for _, img, _ in loaded_images]
    return explain_images(loaded, names, photos, [src for _, _, src in loaded_images], methods, out=out,
                          target=target, metrics=metrics, layer=layer, steps=steps, metric_step=metric_step,
                          progress=progress,
                          title=f"xai_torch explain: {loaded.name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="xai-torch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    method_help = (f"comma list of {', '.join(METHODS)}; aliases such as ig, gradcam++, gbp, shap; "
                   f"or a group: all, fast ({', '.join(FAST_METHODS)})")
    metric_step_help = f"pixels changed per point of the deletion / insertion curves (default {METRIC_STEP})"
    steps_help = f"path steps of {', '.join(STEP_METHODS)} (default: each method's own; ig_adaptive >= 32)"
    d = sub.add_parser("demo", help="the packaged Lite0 on the packaged photos with every method -> report.html",
                       description="Explain the packaged photos with the packaged EfficientNet-Lite0 and write "
                                   "OUT/report.html (top-5 predictions, overlays per image x method, wall time and "
                                   "deletion / insertion AUC per method), the PNGs it shows and summary.json. "
                                   "Every method runs by default: minutes on a CPU (--methods fast: seconds).")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--images", default=",".join(DEMO_IMAGES), help=f"comma list from {', '.join(zoo.IMAGES)}")
    d.add_argument("--methods", default="all", metavar="LIST", help=method_help + " (default: all)")
    d.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="deletion / insertion AUC per image x method (default: on)")
    d.add_argument("--steps", type=int, help=steps_help)
    d.add_argument("--metric-step", type=int, default=METRIC_STEP, help=metric_step_help)
    d.add_argument("--device", default=default_device, help=f"cpu, cuda or cuda:N (default {default_device})")
    e = sub.add_parser("explain", help="explain image files with the packaged or a torchvision model",
                       description="Explain image files (any format OpenCV reads; resized to 256 on the short "
                                   "side and centre-cropped to 224) and write OUT/report.html, the overlays "
                                   "<image>_<method>.png, one grid per image and summary.json (top-5 predictions, "
                                   "seconds per method, and deletion / insertion AUC with --metrics).")
    e.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or packaged photo names "
                   f"({', '.join(zoo.IMAGES)})")
    e.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (packaged, trained; the default) or torchvision:NAME, e.g. "
                        "torchvision:resnet50 (built with random weights unless --weights is given)")
    e.add_argument("--weights", metavar="FILE", help="a state dict to load: torch.save(model.state_dict(), FILE)")
    e.add_argument("--num-classes", type=int, help="classes of a torchvision model trained on other data "
                   "(default 1000)")
    e.add_argument("--method", "--methods", dest="methods", default="gradcam", metavar="LIST",
                   help=method_help + " (default: gradcam)")
    e.add_argument("--target", default="top", help="class index to explain, or top (each image's top-1; default)")
    e.add_argument("--layer", help="CAM layer, a dotted module name (default: _conv_head for the packaged model, "
                   "else the last convolutional block, e.g. layer4 of a ResNet)")
    e.add_argument("--steps", type=int, help=steps_help)
    e.add_argument("--metric-step", type=int, default=METRIC_STEP, help=metric_step_help)
    e.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=False,
                   help=f"deletion / insertion AUC per image x method ({METRIC_STEP} pixels per step; default: off)")
    e.add_argument("--device", default=default_device, help=f"cpu, cuda or cuda:N (default {default_device})")
    e.add_argument("--out", default="out/explain", help="output folder (default out/explain)")
    # other subcommands register here (`run`: xai_torch.distributed)
    add_run_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_command(args)
    try:
        out = Path(args.out)
        if args.command == "demo":
            images = _names(args.images, zoo.IMAGES, "image(s)")
            methods = _names(args.methods, METHODS, "method(s)", ALIASES, GROUPS)
            device = check_device(args.device)
            slow = [m for m in methods if m in SLOW]
            if device.type == "cpu" and slow:
                print(f"xai-torch: {len(methods)} methods on the CPU; {', '.join(slow)} take minutes "
                      "(--methods fast for a quick report).", file=sys.stderr)
            summary = demo(out, images, methods, device, metrics=args.metrics, steps=args.steps,
                           metric_step=args.metric_step)
        elif args.command == "explain":
            target = args.target.strip().lower()
            if target != "top":
                try:
                    target = int(target)
                except ValueError:
                    raise XaiError(f"--target must be 'top' or a class index; got {args.target!r}.") from None
            if args.weights is None and args.model.startswith("torchvision:"):
                print(f"xai-torch: note: {args.model} has random weights (no --weights FILE): the explanations "
                      "show an untrained network.", file=sys.stderr)
            summary = explain(args.images, args.model, args.methods, weights=args.weights,
                              num_classes=args.num_classes, target=target, device=args.device, out=out,
                              metrics=args.metrics, layer=args.layer, steps=args.steps,
                              metric_step=args.metric_step)
        else:  # a subcommand registered without a dispatch above
            parser.error(f"unknown command {args.command!r}")
    except XaiError as err:
        print(f"xai-torch: error: {err}", file=sys.stderr)
        return 2
    for name, info in summary["images"].items():
        top = info["predictions"][0]
        print(f"{name:>11}: {top.get('label', 'class ' + str(top['class']))} ({top['probability']:.2f})")
    width = max(len(m) for m in summary["methods"])
    for m, info in summary["methods"].items():
        auc = (f"  deletion AUC {info['deletion_auc_mean']:.3f}  insertion AUC {info['insertion_auc_mean']:.3f}"
               if "deletion_auc_mean" in info else "")
        print(f"  {m:<{width}} {info['seconds']:8.2f} s{auc}")
    print(f"wrote {out / 'report.html'}, summary.json and {len(list(out.glob('*.png')))} PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
