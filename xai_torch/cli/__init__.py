"""Command line: ``xai-torch demo``, ``explain`` and ``run`` (also ``python -m xai_torch ...``).

* ``xai-torch demo [--out out/demo] [--full]`` explains packaged photos with the packaged
  EfficientNet-Lite0 using every family of methods and writes ``report.html``: top-5
  predictions, overlays per image x method, wall time, CPU budget and deletion / insertion AUC
  per method, with the PNGs it shows and ``summary.json`` (every number). By default it answers
  in about a minute and a half on 2 CPU cores (:mod:`xai_torch.cli.demo`); ``--full`` runs the
  paper's configurations after printing how long they will take.
* ``xai-torch explain IMAGE... --model efficientnet_lite0 | torchvision:NAME [--weights FILE]
  --method gradcam,ig [--target N|top] [--device cpu|cuda] [--metrics] --out DIR`` does the
  same for your own images (any file OpenCV reads) and model.
* ``xai-torch run``: dataset-scale runs (:mod:`xai_torch.distributed`).

``demo`` and ``explain`` write into a private staging folder inside ``--out`` and move the
files in only when every method has succeeded (:func:`xai_torch.files.staged`): a failed
command leaves ``--out`` as it was, and an entry named like an output file (a link included)
is replaced, never written through. A cut-off JPEG is refused, not explained with grey.

Methods are the records of :data:`xai_torch.presets.METHODS` (their aliases and the groups
``all`` / ``fast`` / ``demo`` work too); models load through :mod:`xai_torch.models`.
"""
from .demo import DEMO_IMAGES, DEMO_METHODS, FULL_IMAGES, demo
from .explain import METRIC_STEP, Progress, estimate, explain, explain_images, picture
from .main import build_parser, main

__all__ = ["DEMO_IMAGES", "DEMO_METHODS", "FULL_IMAGES", "METRIC_STEP", "Progress", "build_parser", "demo",
           "estimate", "explain", "explain_images", "main", "picture"]
