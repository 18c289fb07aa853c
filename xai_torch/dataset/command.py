"""``xai-torch run``: the sub-command's parser and handler."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch

from ..errors import XaiError
from .config import CollectiveError, RankFailure, Target, parse_options
from .loop import explain_dataset


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``run`` to the ``xai-torch`` sub-commands.

    Args:
        subparsers: what ``parser.add_subparsers()`` returned.

    Returns:
        The ``run`` parser (its handler is :func:`run_command`).

    Example:
        >>> sub = argparse.ArgumentParser().add_subparsers(dest="command")
        >>> add_run_parser(sub)
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="explain a dataset, sharded over torchrun's processes",
        description="Explain a dataset with one explainer, sharded over the processes torchrun starts "
                    "(torchrun --nproc_per_node=N -m xai_torch run DATA --out DIR ...), or in one process. "
                    "A rerun with the same --out resumes.")
    p.add_argument("data", help="image folder (ImageFolder layout or flat) or dataset factory package.module:function")
    p.add_argument("--out", required=True, help="output folder (shards + manifest.json); rerun to resume")
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (default), torchvision:NAME or package.module:function")
    p.add_argument("--weights", default=None, help="state-dict file for the model")
    p.add_argument("--method", default="gradient",
                   help="preset from xai-torch demo's list (gradient, smoothgrad, integrated_gradients...), "
                        "an explainer class (GradCAM, IntegratedGradients...) or package.module:function")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="explainer constructor option, repeatable (e.g. --option steps=32 --option layer=layer4)")
    p.add_argument("--target", default="pred", help="pred (model's argmax, default), label, or a class index")
    p.add_argument("--shard-size", type=int, default=64, help="images per shard (default 64)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="attribution storage")
    p.add_argument("--metrics", default="", help="comma list of per-image metrics: deletion,insertion")
    p.add_argument("--seed", type=int, default=0, help="run seed (stochastic methods: per-shard seeds from it)")
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--input-size", type=int, default=224, help="crop size for image folders (default 224)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-after-shards", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulated kill
    p.set_defaults(handler=run_command)
    return p


def run_command(args: argparse.Namespace) -> int:
    """Handle ``xai-torch run``: explain, print the summary line on rank 0.

    Args:
        args: parsed arguments of :func:`add_run_parser`'s parser.

    Returns:
        0 on success, 2 for bad arguments or configuration, 1 when a rank failed.

    Example:
        >>> args = parser.parse_args(["run", "val/", "--out", "runs/g"])
        >>> run_command(args)
    """
    rank = int(os.environ.get("RANK", 0))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    target: Target = args.target
    if target not in ("pred", "label"):
        try:
            target = int(target)
        except ValueError:
            print(f"xai-torch: error: --target must be pred, label or a class index; got {target!r}.", file=sys.stderr)
            return 2
    try:
        options = parse_options(args.option)
        summary = explain_dataset(
            args.out, args.data, model=args.model, weights=args.weights, method=args.method, options=options,
            shard_size=args.shard_size, dtype=args.dtype, target=target,
            metrics=[m.strip() for m in args.metrics.split(",") if m.strip()], seed=args.seed, device=args.device,
            input_size=args.input_size, progress=False if args.no_progress else None,
            _stop_after=args.stop_after_shards)
    except XaiError as err:
        if rank == 0 and not (isinstance(err, CollectiveError) and err.reported):
            print(f"xai-torch: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, RankFailure) else 2
    s = summary
    if rank == 0 and not s.computed:
        print(f"nothing to do: all {len(s.reused)} shards in {s.out}/ are complete and verified "
              f"({s.images} images).", flush=True)
    elif rank == 0:
        print(f"{s.computed_images} images in {s.seconds:.1f} s ({s.throughput:.2f} img/s) on {s.world_size} "
              f"process{'es' if s.world_size > 1 else ''}; {len(s.computed)} shards computed, {len(s.reused)} reused; "
              f"{s.images} images in {s.out}/", flush=True)
    return 0
