"""``xai-torch run``: the sub-command's parser and handler."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import XaiError
from .config import IncompleteRun, RankFailure, Target, parse_options
from .loop import explain_dataset
from .ray import engine_for


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
    p.add_argument("--shard-size", type=int, default=None,
                   help="images per shard (default: the resumed run's, else min(64, ceil(images / 8)))")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="attribution storage")
    p.add_argument("--metrics", default="", help="comma list of per-image metrics: deletion,insertion")
    p.add_argument("--seed", type=int, default=0, help="run seed (stochastic methods: per-shard seeds from it)")
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process, part of the configuration (default: the resumed run's, "
                        "else cores // processes on this machine)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader processes decoding images ahead, per process (default: fitted to the cores)")
    p.add_argument("--on-error", default="stop", choices=("stop", "skip"),
                   help="an image that cannot be decoded: stop the run (default), or skip it and list it in the "
                        "manifest's quarantine (a rerun after deleting the file resumes)")
    p.add_argument("--hash", default="auto", choices=("auto", "content", "names"),
                   help="what the configuration records of the images: content (sha256 of every file), names "
                        "(ids and sizes), auto (content up to 2 GB of images, default)")
    p.add_argument("--finish-timeout", type=float, default=None,
                   help="seconds a process with nothing left to do waits for shards another process holds "
                        "without progress, before it stops (exit status 75: rerun to finish); default "
                        "max(60, 3 x the slowest shard so far)")
    p.add_argument("--engine", default="torchrun", choices=("torchrun", "ray"),
                   help="torchrun (default: the processes torchrun starts, or one) or ray (a Ray Data cluster: "
                        "RAY_ADDRESS, else a local one; pip install 'xai_torch[ray]')")
    p.add_argument("--input-size", type=int, default=224, help="crop size for image folders (default 224)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--test-fault", default=None, help=argparse.SUPPRESS)  # tests: stop@K, exit@N, sleep@N
    p.set_defaults(handler=run_command)
    return p


def run_command(args: argparse.Namespace) -> int:
    """Handle ``xai-torch run``: explain, print the summary line on rank 0.

    Args:
        args: parsed arguments of :func:`add_run_parser`'s parser.

    Returns:
        0 on success, 2 for bad arguments or configuration (or an output folder in use), 1
        when a rank failed, 75 when shards held by a stalled rank are left (rerun to finish).

    Example:
        >>> args = parser.parse_args(["run", "val/", "--out", "runs/g"])
        >>> run_command(args)
    """
    rank = int(os.environ.get("RANK", 0))
    target: Target = args.target
    if target not in ("pred", "label"):
        try:
            target = int(target)
        except ValueError:
            print(f"xai-torch: error: --target must be pred, label or a class index; got {target!r}.", file=sys.stderr)
            return 2
    try:
        options = parse_options(args.option)
        summary = engine_for(args.engine, explain_dataset)(
            args.out, args.data, model=args.model, weights=args.weights, method=args.method, options=options,
            shard_size=args.shard_size, dtype=args.dtype, target=target,
            metrics=[m.strip() for m in args.metrics.split(",") if m.strip()], seed=args.seed, device=args.device,
            input_size=args.input_size, progress=False if args.no_progress else None, on_error=args.on_error,
            hash=args.hash, threads=args.threads, workers=args.workers, finish_timeout=args.finish_timeout,
            _fault=args.test_fault)
    except (RankFailure, IncompleteRun) as err:  # this rank's own news: every rank says it
        print(f"xai-torch: error: {err}", file=sys.stderr, flush=True)
        return 1 if isinstance(err, RankFailure) else 75
    except XaiError as err:  # the same on every rank: rank 0 says it
        if rank == 0:
            print(f"xai-torch: error: {err}", file=sys.stderr, flush=True)
        return 2
    s = summary
    if rank == 0 and not s.computed:
        print(f"nothing to do: all {len(s.reused)} shards in {s.out}/ are complete and verified "
              f"({s.images} images).", flush=True)
    elif rank == 0:
        print(f"{s.computed_images} images in {s.seconds:.1f} s ({s.throughput:.2f} img/s) on {s.world_size} "
              f"process{'es' if s.world_size > 1 else ''}; {len(s.computed)} shards computed, {len(s.reused)} reused; "
              f"{s.images} images in {s.out}/", flush=True)
    if rank == 0 and s.quarantine:
        print(f"{len(s.quarantine)} image(s) quarantined (not explained), listed in {s.out}/manifest.json: "
              + ", ".join(f"{e['id']} ({e['reason']})" for e in s.quarantine[:5]) + (", ..." if len(s.quarantine) > 5
                                                                                    else ""), flush=True)
    return 0
