"""``xai-torch demo``: the packaged EfficientNet-Lite0 on the packaged photos, every family of methods.

The default demo answers in under two minutes on 2 CPU cores (126 s of CPU time on one core
with one thread, measured with /usr/bin/time): two photos, every method but Score-CAM, each
slow method with its CPU budget (:attr:`xai_torch.presets.MethodSpec.demo`: fewer steps,
samples, masks or windows; the report names it next to the method) and 9-point deletion /
insertion curves. ``--full`` runs the paper's configurations on all five photos with 29-point
curves, after printing how long that will take.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import torch

from .. import zoo
from ..errors import XaiError
from ..models import check_device, load_model
from ..presets import FULL_ONLY_FAMILIES, GROUPS, METHODS
from .explain import METRIC_STEP, Summary, explain_images

#: the default demo's photos, and ``--full``'s
DEMO_IMAGES = ("chelsea", "coffee")
FULL_IMAGES = ("chelsea", "coffee", "motorcycle", "rocket", "camera")
#: the default demo's deletion / insertion step: 224 * 28 pixels, 9 points per curve
DEMO_METRIC_STEP = 224 * 28
#: the default demo's methods: every family, Score-CAM left to ``--full``
DEMO_METHODS = tuple(GROUPS["demo"])

__all__ = ["DEMO_IMAGES", "DEMO_METHODS", "DEMO_METRIC_STEP", "FULL_IMAGES", "demo"]


def demo(out: Union[str, Path], images: Optional[Sequence[str]] = None, methods: Optional[Sequence[str]] = None,
         device: Union[str, torch.device] = "cpu", *, full: bool = False, metrics: bool = True,
         steps: Optional[int] = None, metric_step: Optional[int] = None, progress: Optional[bool] = None,
         layer_attribution: Optional[str] = None) -> Summary:
    """``xai-torch demo``: the packaged Lite0 on packaged photos with each method, as a report.

    Args:
        out: the output folder (``report.html``, ``summary.json`` and the PNGs).
        images: names from ``zoo.IMAGES`` (default :data:`DEMO_IMAGES`, with ``full``
            :data:`FULL_IMAGES`).
        methods: names from :data:`~xai_torch.presets.METHODS` (default :data:`DEMO_METHODS`,
            with ``full`` all of them).
        device: where to run.
        full: the paper's configuration of every method; without it each method runs with its
            CPU budget, which the report names.
        metrics: deletion / insertion AUC per image x method.
        steps, progress: see :func:`~xai_torch.cli.explain.explain_images`.
        metric_step: pixels per point of the curves (default :data:`DEMO_METRIC_STEP`, with
            ``full`` 224 * 8).
        layer_attribution: also show the chosen gradient methods at this layer of the packaged
            model (e.g. ``_conv_head``; :mod:`xai_torch.cli.layers`).

    Returns:
        The summary dict (see :mod:`xai_torch.report`).

    Example:
        >>> s = demo("out/demo", ["chelsea"], ["gradcam", "integrated_gradients"], "cpu")
        >>> s["methods"]["gradcam"]["deletion_auc_mean"] < s["methods"]["gradcam"]["insertion_auc_mean"]
        True
    """
    images = list(images if images is not None else FULL_IMAGES if full else DEMO_IMAGES)
    unknown = [n for n in images if n not in zoo.IMAGES]
    if unknown or not images:
        raise XaiError(f"unknown image(s) {unknown}; packaged images: {', '.join(zoo.IMAGES)}.")
    methods = list(methods if methods is not None else METHODS if full else DEMO_METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise XaiError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}.")
    # the packaged model is a CNN: the transformer methods have no attention to read there
    cnn_only = [m for m in methods if METHODS[m].family in FULL_ONLY_FAMILIES]
    if cnn_only:
        methods = [m for m in methods if m not in cnn_only]
        print(f"xai-torch demo: note: skipping {', '.join(cnn_only)} (the packaged EfficientNet-Lite0 has no "
              "attention; run them with xai-torch explain --model timm:NAME or hf:PATH).", file=sys.stderr, flush=True)
        if not methods:
            raise XaiError("the demo's model has no attention layers, so none of the methods asked for can run on it; "
                           "use xai-torch explain --model timm:NAME (or hf:PATH) for the attention methods.")
    if metric_step is None:
        metric_step = METRIC_STEP if full else DEMO_METRIC_STEP
    loaded = load_model("efficientnet_lite0", device=check_device(str(device)))
    photos = [zoo.center_crop(zoo.image(n)) for n in images]
    what = "paper configurations" if full else "CPU budgets"
    return explain_images(loaded, images, photos, [f"packaged:{n}" for n in images], methods, out=out,
                          metrics=metrics, steps=steps, metric_step=metric_step, command="demo", progress=progress,
                          demo=not full, layer_attribution=layer_attribution,
                          title=f"xai_torch demo: EfficientNet-Lite0 on the packaged photos ({what})")
