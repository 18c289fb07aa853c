"""The run: agree on the configuration, verify what is on disk, deal the pending shards to the
ranks round by round, exchange results and failures after each round, keep the manifest."""
from __future__ import annotations

import datetime
import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import torch
from torch import nn

from ..errors import XaiError
from ..explainer import Explainer
from .build import Method, Normalize, build_explainer, build_model, normalisation, rebuild_with_seed
from .comm import Comm, agree
from .compute import ImageError, ShardWorker
from .config import FORMAT, CollectiveError, RankFailure, Target, canonical, check_args, hash_json, weights_sha256
from .shards import Record, read_manifest, shard_ok, unrecorded_record, write_manifest
from .sources import FolderSource, Source, build_source


@dataclass
class RunSummary:
    """What :func:`explain_dataset` returns (on every rank).

    Attributes:
        out: the output folder.
        images: images in the dataset.
        computed: shard indices computed by this run (all ranks).
        reused: shard indices found complete and verified, not recomputed.
        computed_images: images explained by this run.
        seconds: wall time of the explaining loop.
        world_size: number of processes.
    """

    out: Path
    images: int
    computed: list[int]
    reused: list[int]
    computed_images: int
    seconds: float
    world_size: int

    @property
    def throughput(self) -> float:
        """Images explained per second by this run (all ranks together)."""
        return self.computed_images / self.seconds if self.seconds > 0 else float("nan")


def explain_dataset(out: Union[str, os.PathLike[str]], data: Any, *,
                    model: Union[str, nn.Module] = "efficientnet_lite0", weights: Optional[str] = None,
                    method: Method = "gradient",
                    options: Optional[dict[str, Any]] = None, shard_size: int = 64, dtype: str = "float32",
                    target: Target = "pred", metrics: Sequence[str] = (), seed: int = 0,
                    device: Optional[str] = None, input_size: int = 224, progress: Optional[bool] = None,
                    _stop_after: Optional[int] = None) -> RunSummary:
    """Explain a dataset, sharded over the processes ``torchrun`` started (or in one process).

    Call it in every process (``xai-torch run`` does): it joins the process group from
    torchrun's environment (NCCL when the device is CUDA, gloo otherwise), unless one is
    already initialised. See the package docstring for shards, seeds, files and resume.

    Args:
        out: output folder (created; shared by all ranks). A rerun resumes in it.
        data: image folder, ``"package.module:function"`` returning a map-style dataset, or a
            dataset object (items: ``(C, H, W)`` model-space tensors or ``(tensor, label)``).
        model: ``"efficientnet_lite0"``, ``"torchvision:NAME"``, ``"package.module:function"``
            or an ``nn.Module``.
        weights: state-dict file for the model.
        method: preset name (``xai_torch.presets.METHODS``), explainer class name, factory
            ``"package.module:function"`` or callable ``model -> Explainer``.
        options: explainer constructor keywords.
        shard_size: images per shard (and per explainer call).
        dtype: ``"float32"`` or ``"float16"`` (stored divided by a per-image scale, which
            :func:`load` multiplies back).
        target: ``"pred"`` (the model's argmax), ``"label"`` (the dataset's label) or a class index.
        metrics: any of ``"deletion"``, ``"insertion"``: per-image AUC in the shards.
        seed: run seed; stochastic explainers get :func:`shard_seed` ``(seed, k)`` per shard.
        device: ``None`` = ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        input_size: crop size for image folders (resize to ``input_size * 256 / 224`` first).
        progress: tqdm bar with images/s on rank 0 (``None``: when stderr is a terminal).

    Returns:
        :class:`RunSummary` (on every rank).

    Raises:
        XaiError: bad arguments, or an output folder made with another configuration.
        RankFailure: a rank failed on a shard (message names the rank, shard and image).

    Example:
        >>> xt.distributed.explain_dataset("runs/ig", "val/", method="integrated_gradients",
        ...                                options={"steps": 32}, metrics=["deletion"])
        >>> res = xt.distributed.load("runs/ig")
    """
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    comm = Comm(dev.type)
    try:
        return _explain_dataset(comm, Path(out), data, model, weights, method, options, shard_size, dtype,
                                target, list(metrics), seed, dev, input_size, progress, _stop_after)
    except CollectiveError as err:
        if comm.world > 1:
            # every rank raises this together: rank 0 reports it, then all leave at once (torchrun
            # stops the other ranks as soon as one exits with an error)
            if comm.rank == 0:
                print(f"xai-torch: error: {err}", file=sys.stderr, flush=True)
            err.reported = True
            comm.gather(None)
        raise
    finally:
        comm.close()


@dataclass
class _Setup:
    source: Source
    model: nn.Module
    explainer: Explainer
    normalize: Normalize
    config: dict[str, Any]
    config_hash: str


def _setup(data: Any, model_spec: Union[str, nn.Module], weights: Optional[str], method: Method,
           options: dict[str, Any], shard_size: int, dtype: str, target: Target, metrics: list[str], seed: int,
           device: torch.device, input_size: int) -> _Setup:
    """Check the arguments, build the images, model and explainer; the configuration and its hash."""
    check_args(shard_size, dtype, target, metrics, seed)
    source = build_source(data, model_spec, input_size)
    if target == "label" and isinstance(source, FolderSource) and source.labels[0] < 0:
        raise XaiError("target='label' needs labelled images (ImageFolder layout: one folder per class); "
                       f"{str(data)!r} is a flat folder.")
    model = build_model(model_spec, weights, device)
    norm = normalisation(model_spec if isinstance(model_spec, str) else None)
    explainer = build_explainer(method, model, options, normalize=norm)
    config = {
        "format": FORMAT,
        "model": model_spec if isinstance(model_spec, str) else type(model_spec).__name__,
        "model_class": type(model).__name__,
        "weights_sha256": weights_sha256(model),
        "method": method if isinstance(method, str) else getattr(method, "__name__", repr(method)),
        "options": canonical(options),
        "explainer": repr(explainer),
        "dataset": {**source.identity, "images": len(source.ids),
                    "ids_sha256": hashlib.sha256("\n".join(source.ids).encode()).hexdigest()},
        "shard_size": shard_size, "dtype": dtype, "target": target, "metrics": sorted(metrics), "seed": seed,
    }
    return _Setup(source, model, explainer, norm, config, hash_json(config))


def _explain_dataset(comm: Comm, out: Path, data: Any, model_spec: Union[str, nn.Module], weights: Optional[str],
                     method: Method, options: Optional[dict[str, Any]], shard_size: int, dtype: str, target: Target,
                     metrics: list[str], seed: int, device: torch.device, input_size: int,
                     progress: Optional[bool], stop_after: Optional[int]) -> RunSummary:
    opts = dict(options or {})
    s = agree(comm, lambda: _setup(data, model_spec, weights, method, opts, shard_size, dtype, target, metrics,
                                   seed, device, input_size))
    source, config, config_hash = s.source, s.config, s.config_hash
    hashes = comm.gather(config_hash)
    if len(set(hashes)) > 1:
        raise CollectiveError(f"the ranks disagree on the run's configuration (config hashes {hashes}): every rank "
                              "must see the same dataset, model and options.")
    n = len(source.ids)
    num_shards = math.ceil(n / shard_size)
    manifest = agree(comm, lambda: read_manifest(out, config, config_hash))
    recorded = {int(k): v for k, v in (manifest or {}).get("shards", {}).items()}

    def verify() -> dict[int, Record]:  # existing shards, split over the ranks
        found = {}
        for k in range(comm.rank, num_shards, comm.world):
            a, b = k * shard_size, min(n, (k + 1) * shard_size)
            if shard_ok(out, k, recorded.get(k), config_hash, source.ids[a:b]):
                found[k] = recorded.get(k) or unrecorded_record(out, k, source.ids[a:b])
        return found

    done: dict[int, Record] = {}
    for part in comm.gather(agree(comm, verify)):
        done.update(part)
    pending = [k for k in range(num_shards) if k not in done]
    reused = sorted(done)

    run_record: dict[str, Any] = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"), "world_size": comm.world,
        "device": device.type, "reused": reused, "computed": [], "seconds": None, "finished": False}
    runs = (manifest or {}).get("runs", []) + [run_record]
    state: dict[str, Any] = {"config_hash": config_hash, "format": FORMAT, "config": canonical(config), "images": n,
                             "num_shards": num_shards, "shards": {}, "complete": False, "runs": runs}
    if comm.rank == 0:
        write_manifest(out, state, done)
    def reseeded(seed: int) -> Explainer:  # the explainer of one shard
        return rebuild_with_seed(method, s.model, opts, s.normalize, s.explainer, seed)

    worker = ShardWorker(out, source, s.model, s.explainer, reseeded, shard_size=shard_size, dtype=dtype, target=target,
                         metrics=metrics, seed=seed, device=device, rank=comm.rank, config_hash=config_hash)
    bar = None
    if comm.rank == 0:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=n, initial=sum(done[k]["images"] for k in done), unit="img", disable=not show,
                   desc=f"xai-torch run ({comm.world} proc)", dynamic_ncols=True)
    mine = pending[comm.rank::comm.world]
    rounds = math.ceil(len(pending) / comm.world)
    start = time.perf_counter()
    computed_images, written = 0, 0
    try:
        for j in range(rounds):
            message = _compute_mine(worker, mine[j], source) if j < len(mine) else None
            if message is not None:
                written += 1
                if stop_after is not None and written >= stop_after and message.record is not None:
                    os._exit(75)  # testing hook: die like a killed process, after the file, before the report
            failure = None
            for rank, msg in enumerate(comm.gather(message)):
                if msg is None:
                    continue
                if msg.record is not None:
                    done[msg.shard] = msg.record
                    run_record["computed"].append(msg.shard)
                    computed_images += msg.record["images"]
                elif failure is None:
                    failure = RankFailure(msg.error or "", rank=rank, shard=msg.shard, image=msg.image)
            run_record["seconds"] = round(time.perf_counter() - start, 3)
            if comm.rank == 0:
                if failure is not None:
                    state["error"] = str(failure)
                write_manifest(out, state, done)
            if bar is not None:
                bar.update(sum(done[m]["images"] for m in done) - bar.n)
            if failure is not None:
                raise failure
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    run_record.update(seconds=round(seconds, 3), finished=True, computed=sorted(run_record["computed"]))
    if comm.rank == 0:
        state.pop("error", None)
        write_manifest(out, state, done)
    return RunSummary(out=out, images=n, computed=run_record["computed"], reused=reused,
                      computed_images=computed_images, seconds=seconds, world_size=comm.world)


class _Outcome(NamedTuple):
    """What a rank reports after a round: the shard's record, or the error and the image to blame."""

    shard: int
    record: Optional[Record] = None
    error: Optional[str] = None
    image: Optional[str] = None


def _compute_mine(worker: ShardWorker, k: int, source: Source) -> _Outcome:
    """Compute shard ``k``; on failure a message naming this rank, the shard and the image."""
    try:
        return _Outcome(k, record=worker.compute(k))
    except Exception as err:  # noqa: BLE001 - reported to every rank, which all stop
        image = err.image if isinstance(err, ImageError) else None
        text = err.message if isinstance(err, ImageError) else f"{type(err).__name__}: {err}"
        a, b = worker.bounds(k)
        where = f"image {image!r}" if image is not None else f"images {source.ids[a]!r}..{source.ids[b - 1]!r}"
        return _Outcome(k, error=f"rank {worker.rank} failed on {where} (shard {k}): {text}", image=image)
