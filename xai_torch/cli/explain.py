"""The work behind ``xai-torch demo`` and ``explain``: explain photos with each method, write the report."""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from .. import viz, zoo
from ..errors import XaiError
from ..files import check_folder, staged
from ..layers import auto_reshape, find_layer, has_attention
from ..models import LoadedModel, auto_cam_layer, check_device, load_image, load_model
from ..presets import GROUPS, KINDS, METHODS, resolve
from .layers import plan_layer
from .metrics import Metrics, catalogue_entry, plan_metrics, print_table, score_method

#: pixels changed per step of the deletion / insertion curves (29 points at 224 x 224)
METRIC_STEP = 224 * 8
Summary = dict[str, Any]

__all__ = ["KINDS", "METRIC_STEP", "Estimate", "Progress", "estimate", "explain", "explain_images", "picture"]


class Progress:
    """What a user sees while the command runs, wherever stderr goes.

    On a terminal, tqdm's bar over the methods (and the explainers' own bars); otherwise (a
    pipe, a file, CI) one flushed line per step with the elapsed time.

    Args:
        enabled: None: lines when stderr is not a terminal; True / False: lines always / never.
    """

    def __init__(self, enabled: Optional[bool] = None) -> None:
        self.start = time.perf_counter()
        self.lines = (not sys.stderr.isatty()) if enabled is None else bool(enabled)

    def elapsed(self) -> float:
        """Seconds since the command started."""
        return time.perf_counter() - self.start

    def line(self, text: str) -> None:
        """One line on stderr, flushed at once (when lines are on)."""
        if self.lines:
            print(f"xai-torch [{self.elapsed():7.1f} s] {text}", file=sys.stderr, flush=True)


def picture(image: Sequence[np.ndarray], attributions: torch.Tensor, kind: str) -> list[np.ndarray]:
    """uint8 RGB overlays, one per image, for ``(B, C, H, W)`` attributions (``kind`` from :data:`KINDS`)."""
    if kind == "diverging":
        return [viz.diverging_overlay(img, m) for img, m in zip(image, viz.diverging(attributions))]
    if kind == "map":  # CAM maps: min-max per image, as pytorch-grad-cam shows them
        return [viz.heatmap_overlay(img, m) for img, m in zip(image, viz.scaled(attributions))]
    return [viz.heatmap_overlay(img, m) for img, m in zip(image, viz.grayscale(attributions))]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _predictions(logits: torch.Tensor, probs: torch.Tensor, labels: bool) -> list[dict[str, Any]]:
    # ranked by the logits (softmax can round near-equal logits to equal probabilities)
    top = logits.topk(min(5, logits.shape[0])).indices.tolist()
    preds = []
    for c in top:
        entry: dict[str, Any] = {"class": int(c), "probability": round(float(probs[c]), 4)}
        if labels:
            entry["label"] = zoo.label(int(c))
        preds.append(entry)
    return preds


def _unique(names: list[str]) -> list[str]:
    """File-safe, distinct names: ``cat``, ``cat_2``..."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in n) or "image"
        k = seen.get(n, 0) + 1
        seen[n] = k
        out.append(n if k == 1 else f"{n}_{k}")
    return out


def metric_points(metric_step: int, pixels: int = 224 * 224) -> int:
    """Points of one deletion / insertion curve at ``metric_step`` pixels per step."""
    return math.ceil(pixels / metric_step) + 1


@dataclass
class Estimate:
    """How long the methods will take: seconds per image of one forward and of one gradient
    (forward + backward), and the seconds of each method (those times its model calls)."""

    forward: float
    gradient: float
    seconds: dict[str, float]

    @property
    def total(self) -> float:
        """Seconds of all the methods."""
        return sum(self.seconds.values())

    def __str__(self) -> str:
        return (f"about {self.total:.0f} s of model time ({1e3 * self.forward:.0f} ms per forward and "
                f"{1e3 * self.gradient:.0f} ms per gradient of one image, timed now, x each method's model calls)")


def estimate(loaded: LoadedModel, x: torch.Tensor, methods: Sequence[str], *, demo: bool,
             steps: Optional[int], metrics: bool, metric_step: int, cam_layer: Optional[str]) -> Estimate:
    """Seconds the methods will take on ``x``: one timed forward and one timed gradient of the
    batch times the model calls each method makes per image (:meth:`MethodSpec.model_calls`),
    plus the deletion / insertion curves' forwards. Model time only (segmentation, pictures and
    Python are left out)."""
    model, device = loaded.model, x.device
    channels = [1280]
    handle = None
    if cam_layer is not None:
        layer = find_layer(model, cam_layer, "--layer")
        grid = auto_reshape(model, [layer])  # tokens and channels-last maps: their channels are the last dim

        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim >= 2:
                try:
                    channels[0] = int(grid(output).shape[1])
                except XaiError:
                    channels[0] = int(output.shape[1])
        handle = layer[1].register_forward_hook(hook)
    try:
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            model(x)
        _sync(device)
        forward = (time.perf_counter() - start) / len(x)
    finally:
        if handle is not None:
            handle.remove()
    z = x.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    torch.autograd.grad(model(z)[:, 0].sum(), z)
    _sync(device)
    gradient = (time.perf_counter() - start) / len(x)
    curves = 2 * metric_points(metric_step) if metrics else 0
    per: dict[str, float] = {}
    for m in methods:
        calls = METHODS[m].model_calls(steps=steps, demo=demo, channels=channels[0])
        per[m] = len(x) * ((calls.forward + curves) * forward + calls.gradient * gradient)
    return Estimate(forward, gradient, per)


def explain_images(loaded: LoadedModel, names: list[str], photos: list[np.ndarray], sources: list[str],
                   methods: list[str], *, out: Union[str, Path], target: Union[str, int] = "top",
                   metrics: Metrics = False, layer: Optional[str] = None, steps: Optional[int] = None,
                   metric_step: int = METRIC_STEP, command: str = "explain", title: str = "xai_torch report",
                   progress: Optional[bool] = None, demo: bool = False,
                   layer_attribution: Optional[str] = None) -> Summary:
    """Explain 224 x 224 photos with each method; write overlays, grids, ``summary.json`` and ``report.html``.

    Args:
        loaded: the model (:func:`~xai_torch.models.load_model`).
        names: one distinct, file-safe name per photo (the PNGs are ``<name>_<method>.png``).
        photos: uint8 RGB ``(224, 224, 3)`` crops (``zoo.center_crop``).
        sources: where each photo came from (for the report).
        methods: names from :data:`~xai_torch.presets.METHODS`.
        out: the output folder (created; an existing file there is an XaiError). Everything is
            written to a private staging folder inside it and moved in at the end
            (:func:`xai_torch.files.staged`): an entry of the same name is replaced, a link
            itself and never the file it points to; if a method fails nothing is moved in and
            ``out`` is left as it was.
        target: ``"top"`` (each image's top-1 class) or a class index.
        metrics: True: deletion / insertion AUC per image x method (``metric_step`` pixels per step,
            on the raw attributions: ``reduce="abs"`` for the grayscale methods, ``"sum"`` else);
            ``"all"``, a group or a list of catalogue metrics: those too (:mod:`xai_torch.cli.metrics`).
        metric_step: pixels changed per point of those curves (default 224 * 8: 29 points).
        layer: the CAM layer (default: ``loaded.layer``, else :func:`~xai_torch.models.auto_cam_layer`).
        steps: path steps for the methods that take them (default: each method's own).
        command, title: recorded in the summary / shown by the report.
        progress: None: a tqdm bar on a terminal, one flushed line per method (and per image of
            a slow method) otherwise; True / False: those lines always / never.
        demo: apply each method's CPU budget (:attr:`~xai_torch.presets.MethodSpec.demo`); the
            report names it next to the method.
        layer_attribution: also run the chosen gradient methods at this layer (per-channel bar
            charts and layer-resolution maps: :mod:`xai_torch.cli.layers`).

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

    from .. import metrics as xm
    from ..report import write_report

    out = check_folder(out)
    metrics, extra = plan_metrics(metrics)  # the curves (bool) and the catalogue's other metrics
    shown = Progress(progress)
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
    if any(METHODS[m].layer for m in methods):
        cam_layer = layer or loaded.layer or auto_cam_layer(model, x)
        find_layer(model, cam_layer, "--layer")
    plan = plan_layer(model, layer_attribution, methods)
    guess = estimate(loaded, x, methods, demo=demo, steps=steps, metrics=metrics, metric_step=metric_step,
                     cam_layer=cam_layer)
    print(f"xai-torch: {len(methods)} method(s) on {len(photos)} image(s) on {device}: {guess}", flush=True)
    probs = logits.float().softmax(1)
    summary: Summary = {
        "command": command, "model": loaded.name, "weights": loaded.weights, "device": str(device),
        "layer": cam_layer, "target": target, "budget": "demo" if demo else None,
        "estimate_seconds": round(guess.total, 1),
        "metrics": {"step": metric_step, "score": "softmax", "deletion_substrate": "zeros",
                    "insertion_substrate": "rise_blur", "reduce": "abs for grayscale methods, else sum"}
        if metrics else None, **({"metric_catalogue": catalogue_entry(extra)} if extra else {}),
        "images": {}, "methods": {}, **({"layer_attribution": plan.summary()} if plan else {}),
    }
    with staged(out) as stage:  # moved into ``out`` only when every method succeeded
        for i, (name, photo) in enumerate(zip(names, photos)):
            viz.save_png(stage / f"{name}.png", photo)
            summary["images"][name] = {
                "file": sources[i], "input": f"{name}.png", "grid": f"{name}_grid.png", "target": int(targets[i]),
                "predictions": _predictions(logits[i], probs[i], labels), "overlays": {},
                **({"deletion_auc": {}, "insertion_auc": {}} if metrics else {}),
            }
        panels = {name: [photo] for name, photo in zip(names, photos)}
        bar = tqdm(methods, desc=command, unit="method", disable=shown.lines or progress is False, leave=False)
        for k, method in enumerate(bar):
            bar.set_postfix_str(method)
            spec, step = METHODS[method], time.perf_counter()
            try:
                explainer = spec.build(model, layer=cam_layer, normalize=loaded.normalize, steps=steps, demo=demo)
                _sync(device)
                start, cpu = time.perf_counter(), time.process_time()
                if spec.slow and len(photos) > 1:  # image by image, a line each: minutes must show progress
                    parts = []
                    for i in range(len(photos)):
                        parts.append(explainer(x[i:i + 1], target=targets[i:i + 1]))
                        shown.line(f"{method}: image {i + 1}/{len(photos)} ({names[i]}) done")
                    attributions = torch.cat(parts)
                else:
                    attributions = explainer(x, target=targets)
                _sync(device)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            except XaiError as err:
                raise XaiError(f"{method}: {err}") from None
            entry: dict[str, Any] = {"kind": spec.kind, "family": spec.family, "seconds": round(seconds, 3),
                                     "cpu_seconds": round(cpu, 3),
                                     "seconds_per_image": round(seconds / len(photos), 4),
                                     "estimate_seconds": round(guess.seconds[method], 2)}
            if demo:
                entry["budget"] = spec.budget
            for name, pic in zip(names, picture(photos, attributions, spec.kind)):
                viz.save_png(stage / f"{name}_{method}.png", pic)
                summary["images"][name]["overlays"][method] = f"{name}_{method}.png"
                panels[name].append(pic)
            if metrics:
                reduce = "abs" if spec.kind == "grayscale" else "sum"
                curves = {"deletion": xm.deletion(model, x, attributions, targets, step=metric_step, reduce=reduce,
                                                  progress=progress),
                          "insertion": xm.insertion(model, x, attributions, targets, step=metric_step, reduce=reduce,
                                                    progress=progress)}
                for mode, res in curves.items():
                    auc = res.auc.detach().double().cpu()
                    for name, v in zip(names, auc.tolist()):
                        summary["images"][name][f"{mode}_auc"][method] = round(v, 4)
                    entry[f"{mode}_auc_mean"] = round(float(auc.mean()), 4)
                    entry[f"{mode}_curve_mean"] = [round(v, 4) for v in res.curve.detach().double().mean(0).tolist()]
                fractions = curves["deletion"].fractions.detach().double().cpu()
                entry["fractions"] = [round(v, 4) for v in fractions.tolist()]
            if extra:
                score_method(summary, extra, method, model, x, attributions, explainer, targets, names,
                             loaded.normalize, entry)
            if plan is not None and method in plan.methods:
                plan.run(method, model, x, targets, stage=stage, names=names, entry=summary["layer_attribution"],
                         normalize=loaded.normalize, steps=steps, demo=demo)
            entry["step_seconds"] = round(time.perf_counter() - step, 3)  # explaining, pictures and curves
            summary["methods"][method] = entry
            shown.line(f"{method} ({k + 1}/{len(methods)}): {seconds:.1f} s" + (f" [{spec.budget}]" if demo else ""))
            del attributions
        bar.close()
        for name, row in panels.items():
            viz.save_png(stage / f"{name}_grid.png", viz.labelled_grid([row], ["image", *methods]))
        summary["wall_seconds"] = round(shown.elapsed(), 1)
        (stage / "summary.json").write_text(json.dumps(summary, indent=2))
        write_report(stage, summary, title=title)
    print_table(summary)
    return summary


def without_attention_of_groups(names: list[str], asked: Union[str, Sequence[str]], model: Any) -> list[str]:
    """``names`` less the attention family's methods when a group (``all``, ``fast``) brought them
    in and the model has no attention (a CNN: they would only say that no attention call was
    found). Attention methods named one by one stay, and explain why they cannot run."""
    words = {w.strip().lower() for w in (asked.split(",") if isinstance(asked, str) else asked)}
    if not words & set(GROUPS) or has_attention(model):
        return names
    kept = [n for n in names if METHODS[n].family != "attention" or n in words]
    skipped = [n for n in names if n not in kept]
    if skipped:
        print(f"xai-torch: note: skipping {', '.join(skipped)} (the model has no attention layers).",
              file=sys.stderr, flush=True)
    return kept


def explain(images: Union[str, Path, Sequence[Union[str, Path]]], model: str = "efficientnet_lite0",
            methods: Union[str, Sequence[str]] = ("gradcam",), *, weights: Union[str, Path, None] = None,
            num_classes: Optional[int] = None, target: Union[str, int] = "top",
            device: Union[str, torch.device] = "cpu", out: Union[str, Path] = "out/explain",
            metrics: Metrics = False, layer: Optional[str] = None,
            steps: Optional[int] = None, metric_step: int = METRIC_STEP, progress: Optional[bool] = None,
            layer_attribution: Optional[str] = None) -> Summary:
    """``xai-torch explain``: your images, the packaged or a torchvision model, the methods you name.

    Args:
        images: image files (any format OpenCV reads) or packaged photo names; each is resized
            (short side 256) and centre-cropped to 224 x 224.
        model, weights, num_classes: see :func:`~xai_torch.models.load_model`.
        methods: names, aliases or groups (:func:`~xai_torch.presets.resolve`; a list, or one
            comma-separated string).
        target, device, out, metrics, layer, steps, metric_step, progress, layer_attribution: see
            :func:`explain_images`.

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
    names = resolve(methods)
    check_folder(out)
    loaded_images = [load_image(str(s)) for s in images]  # every file is checked before the model loads
    dev = check_device(str(device))
    loaded = load_model(model, weights, num_classes, dev)
    names = without_attention_of_groups(names, methods, loaded.model)
    files = _unique([n for n, _, _ in loaded_images])
    photos = [zoo.center_crop(img) for _, img, _ in loaded_images]
    return explain_images(loaded, files, photos, [src for _, _, src in loaded_images], names, out=out,
                          target=target, metrics=metrics, layer=layer, steps=steps, metric_step=metric_step,
                          progress=progress, layer_attribution=layer_attribution,
                          title=f"xai_torch explain: {loaded.name}")
