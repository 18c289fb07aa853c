"""The ``xai-torch`` parser and entry point: ``demo``, ``explain`` and ``run`` (dataset runs)."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch

from .. import zoo
from ..dataset import add_run_parser, run_command
from ..errors import XaiError
from ..presets import GROUPS, METHODS, resolve, resolve_names
from .demo import DEMO_IMAGES, DEMO_METRIC_STEP, FULL_IMAGES, demo
from .explain import METRIC_STEP, Summary, explain

DESCRIPTION = "PyTorch explanations of image classifiers: demo, explain, run."


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``xai-torch`` parser and its subcommands' parsers by name."""
    parser = argparse.ArgumentParser(prog="xai-torch", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    method_help = (f"comma list of {', '.join(METHODS)}; aliases such as ig, gradcam++, gbp, shap; "
                   f"or a group: all, fast ({', '.join(GROUPS['fast'])}), demo (all but scorecam)")
    metric_step_help = "pixels changed per point of the deletion / insertion curves"
    layer_help = ("also run the chosen gradient methods (gradient, input_x_gradient, guided_backprop, deconvnet, "
                  "integrated_gradients, ig_adaptive, smoothgrad) at this layer, a dotted module name: the "
                  "attribution per channel (summed over space) as a bar chart (needs matplotlib) and the map at "
                  "the layer's resolution (summed over channels), in the report and as PNGs")
    steps_help = (f"path steps of {', '.join(n for n, s in METHODS.items() if s.steps)} "
                  "(default: each method's own; ig_adaptive >= 32)")
    d = sub.add_parser("demo", help="the packaged Lite0 on the packaged photos, every family -> report.html",
                       description="Explain packaged photos with the packaged EfficientNet-Lite0 and write "
                                   "OUT/report.html (top-5 predictions, overlays per image x method, wall time, "
                                   "budget and deletion / insertion AUC per method), its PNGs and summary.json. "
                                   "By default every method but Score-CAM on 2 photos, each slow method with a "
                                   "CPU budget (under 2 minutes on 2 CPU cores); --full: the paper's settings "
                                   "of every method on 5 photos (it prints its estimate first).")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--full", action="store_true",
                   help="paper configurations, every method (Score-CAM too), 5 photos, 29-point curves")
    d.add_argument("--images", default=None, metavar="LIST",
                   help=f"comma list from {', '.join(zoo.IMAGES)} (default {','.join(DEMO_IMAGES)}; "
                        f"--full: {','.join(FULL_IMAGES)})")
    d.add_argument("--methods", default=None, metavar="LIST", help=method_help + " (default: demo; --full: all)")
    d.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="deletion / insertion AUC per image x method (default: on)")
    d.add_argument("--steps", type=int, help=steps_help)
    d.add_argument("--metric-step", type=int, default=None,
                   help=f"{metric_step_help} (default {DEMO_METRIC_STEP}; --full: {METRIC_STEP})")
    d.add_argument("--device", default=default_device, help=f"cpu, cuda or cuda:N (default {default_device})")
    d.add_argument("--layer-attribution", metavar="NAME", help=layer_help + " (e.g. _conv_head, _blocks.15)")
    e = sub.add_parser("explain", help="explain image files with the packaged, a torchvision, timm or HF model",
                       description="Explain image files (any format OpenCV reads; resized to 256 on the short "
                                   "side and centre-cropped to 224) and write OUT/report.html, the overlays "
                                   "<image>_<method>.png, one grid per image and summary.json (top-5 predictions, "
                                   "seconds per method, and deletion / insertion AUC with --metrics).")
    e.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or packaged photo names "
                   f"({', '.join(zoo.IMAGES)})")
    e.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (packaged, trained; the default), torchvision:NAME (e.g. "
                        "torchvision:resnet50) or timm:NAME (e.g. timm:vit_tiny_patch16_224), built with random "
                        "weights unless --weights is given, or hf:PATH, a local Hugging Face config.json or model "
                        "folder (its weights when it has them; nothing is downloaded)")
    e.add_argument("--weights", metavar="FILE", help="a state dict to load: torch.save(model.state_dict(), FILE)")
    e.add_argument("--num-classes", type=int, help="classes of a torchvision / timm / Hugging Face model trained on "
                   "other data (default 1000, or the config's num_labels)")
    e.add_argument("--method", "--methods", dest="methods", default="gradcam", metavar="LIST",
                   help=method_help + " (default: gradcam)")
    e.add_argument("--target", default="top", help="class index to explain, or top (each image's top-1; default)")
    e.add_argument("--layer", help="CAM layer, a dotted module name (default: _conv_head for the packaged model, "
                   "the last convolutional block of a CNN, e.g. layer4 of a ResNet, the last block's input norm of "
                   "a ViT, e.g. blocks.11.norm1, the last map of a Swin / MaxViT)")
    e.add_argument("--steps", type=int, help=steps_help)
    e.add_argument("--metric-step", type=int, default=METRIC_STEP, help=f"{metric_step_help} (default {METRIC_STEP})")
    e.add_argument("--metrics", nargs="?", const=True, default=False, metavar="LIST",
                   help=f"alone: deletion / insertion AUC per image x method ({METRIC_STEP} pixels per step); "
                   "--metrics=all, a group (faithfulness, robustness, complexity_metrics, randomisation, "
                   "stability_metrics) or a "
                   "comma list of metric names (xt.metrics.catalogue) adds those (default: off)")
    e.add_argument("--no-metrics", dest="metrics", action="store_false", help=argparse.SUPPRESS)
    e.add_argument("--device", default=default_device, help=f"cpu, cuda or cuda:N (default {default_device})")
    e.add_argument("--out", default="out/explain", help="output folder (default out/explain)")
    e.add_argument("--layer-attribution", metavar="NAME", help=layer_help + " (e.g. layer4 of a ResNet)")
    # other subcommands register here (`run`: xai_torch.distributed)
    r = add_run_parser(sub)
    return parser, {"demo": d, "explain": e, "run": r}


def _run(args: argparse.Namespace) -> Summary:
    out = Path(args.out)
    if args.command == "demo":
        images = resolve_names(args.images, zoo.IMAGES, "image(s)") if args.images is not None else None
        methods = resolve(args.methods) if args.methods is not None else None
        return demo(out, images, methods, args.device, full=args.full, metrics=args.metrics, steps=args.steps,
                    metric_step=args.metric_step, layer_attribution=args.layer_attribution)
    target: Any = args.target.strip().lower()
    if target != "top":
        try:
            target = int(target)
        except ValueError:
            raise XaiError(f"--target must be 'top' or a class index; got {args.target!r}.") from None
    if args.weights is None and args.model.startswith("torchvision:"):
        print(f"xai-torch: note: {args.model} has random weights (no --weights FILE): the explanations "
              "show an untrained network.", file=sys.stderr, flush=True)
    return explain(args.images, args.model, args.methods, weights=args.weights, num_classes=args.num_classes,
                   target=target, device=args.device, out=out, metrics=args.metrics, layer=args.layer,
                   steps=args.steps, metric_step=args.metric_step, layer_attribution=args.layer_attribution)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``xai-torch`` / ``python -m xai_torch``: returns the exit status (2 for bad input, nothing written)."""
    start = time.perf_counter()
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(None if argv is None else list(argv))
    if extra:
        choices = ", ".join(_options(commands[args.command])) if args.command in commands else ""
        parser.exit(2, f"xai-torch {args.command}: error: unknown option(s) {' '.join(extra)}; "
                       f"its options: {choices} (xai-torch {args.command} --help says more).\n")
    if args.command == "run":
        return run_command(args)
    try:
        summary = _run(args)
    except XaiError as err:
        print(f"xai-torch: error: {err}", file=sys.stderr, flush=True)
        return 2
    for name, info in summary["images"].items():
        top = info["predictions"][0]
        print(f"{name:>11}: {top.get('label', 'class ' + str(top['class']))} ({top['probability']:.2f})")
    width = max(len(m) for m in summary["methods"])
    for m, info in summary["methods"].items():
        auc = (f"  deletion AUC {info['deletion_auc_mean']:.3f}  insertion AUC {info['insertion_auc_mean']:.3f}"
               if "deletion_auc_mean" in info else "")
        budget = f"  [{info['budget']}]" if info.get("budget") else ""
        print(f"  {m:<{width}} {info['seconds']:8.2f} s{auc}{budget}")
    out = Path(args.out)
    print(f"wrote summary.json and {len(list(out.glob('*.png')))} PNGs next to the report:")
    print(f"report: {(out / 'report.html').resolve()}")
    print(f"{args.command} finished in {time.perf_counter() - start:.1f} s (wall, model loading included)",
          flush=True)
    return 0
