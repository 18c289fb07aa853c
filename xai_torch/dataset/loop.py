"""The run, as each rank does it: build the model, explainer and images, fix the
configuration (and refuse a folder made with another one), then do the rank's share of the
shards (:mod:`.work`) with the output folder as the only meeting point (:mod:`.locks`)."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from ..errors import XaiError
from ..explainer import Explainer
from .build import Method, Normalize, build_explainer, build_model, normalisation, rebuild_with_seed
from .compute import ShardWorker
from .config import FORMAT, Target, canonical, check_args, default_shard_size, hash_json, weights_sha256
from .engine import Launch, cpu_budget, fit_threads, fit_workers, launch_from_env, watch_parent
from .layout import Plan, dataset_identity, quarantined, run_ids, run_of
from .locks import Claims, JobLock, Ledger
from .shards import check_config, prepare_folder
from .sources import FolderSource, Source, build_source
from .work import RankLoop

_WATCHING: list[bool] = []  # the parent watchdog runs once per process


@dataclass
class RunSummary:
    """What :func:`explain_dataset` returns (on every rank).

    Attributes:
        out: the output folder.
        images: images in the dataset (quarantined ones included).
        computed: shard indices computed by this job (all ranks).
        reused: shard indices found complete and verified, not recomputed (all ranks).
        computed_images: images explained by this job.
        seconds: wall time of this rank's share.
        world_size: number of processes.
        quarantine: ``{"id", "reason", "shard", ...}`` of every image skipped (``on_error="skip"``).
    """

    out: Path
    images: int
    computed: list[int]
    reused: list[int]
    computed_images: int
    seconds: float
    world_size: int
    quarantine: list[dict[str, Any]]

    @property
    def throughput(self) -> float:
        """Images explained per second by this job (all ranks together)."""
        return self.computed_images / self.seconds if self.seconds > 0 else float("nan")


def explain_dataset(out: Union[str, os.PathLike[str]], data: Any, *,
                    model: Union[str, nn.Module] = "efficientnet_lite0", weights: Optional[str] = None,
                    method: Method = "gradient",
                    options: Optional[dict[str, Any]] = None, shard_size: Optional[int] = None,
                    dtype: str = "float32", target: Target = "pred", metrics: Sequence[str] = (), seed: int = 0,
                    device: Optional[str] = None, input_size: int = 224, progress: Optional[bool] = None,
                    on_error: str = "stop", hash: str = "auto", threads: Optional[int] = None,
                    workers: Optional[int] = None, finish_timeout: Optional[float] = None,
                    _fault: Optional[str] = None) -> RunSummary:
    """Explain a dataset, sharded over the processes ``torchrun`` started (or in one process).

    Call it in every process (``xai-torch run`` does). No process group is joined and no
    collective is used: the ranks (``RANK`` / ``WORLD_SIZE`` from torchrun's environment)
    claim shards through file locks in ``out`` (see the package docstring), so a stalled or
    dead rank never blocks the others and a rerun finishes whatever is left.

    Args:
        out: output folder (created; shared by all ranks; one job at a time). A rerun resumes in it.
        data: image folder, ``"package.module:function"`` returning a map-style dataset, or a
            dataset object (items: ``(C, H, W)`` model-space tensors or ``(tensor, label)``).
        model: ``"efficientnet_lite0"``, ``"torchvision:NAME"``, ``"package.module:function"``
            or an ``nn.Module``.
        weights: state-dict file for the model.
        method: preset name (``xai_torch.presets.METHODS``), explainer class name, factory
            ``"package.module:function"`` or callable ``model -> Explainer``.
        options: explainer constructor keywords.
        shard_size: images per shard (and per explainer call); ``None``: the resumed run's, else
            :func:`~xai_torch.dataset.config.default_shard_size` (``min(64, ceil(images / 8))``).
        dtype: ``"float32"`` or ``"float16"`` (stored divided by a per-image scale, which
            :func:`load` multiplies back).
        target: ``"pred"`` (the model's argmax), ``"label"`` (the dataset's label) or a class index.
        metrics: any of ``"deletion"``, ``"insertion"``: per-image AUC in the shards.
        seed: run seed; stochastic explainers get :func:`shard_seed` ``(seed, k)`` per shard.
        device: ``None`` = ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        input_size: crop size for image folders (resize to ``input_size * 256 / 224`` first).
        progress: tqdm bar with images/s on rank 0 (``None``: when stderr is a terminal).
        on_error: ``"stop"`` (an image that cannot be decoded stops the run, naming it) or
            ``"skip"`` (it is left out of its shard and listed in the manifest's quarantine).
        hash: what the configuration records of the images (``"auto"``, ``"content"``,
            ``"names"``; :func:`~xai_torch.dataset.sources.build_source`).
        threads: torch threads of this process, part of the configuration (they change results
            in the last digits); ``None``: the resumed run's, else ``max(1, cores // local ranks)``.
        workers: DataLoader processes decoding ahead per rank (``None``: 0 with one core per rank,
            1 below 8, else 2); not part of the configuration.
        finish_timeout: seconds a rank that has nothing left to claim waits for shards other
            ranks hold without any progress (``None``: ``max(60, 3 x`` the slowest shard recorded ``)``).

    Returns:
        :class:`RunSummary` (on every rank).

    Raises:
        XaiError: bad arguments, an output folder made with another configuration, or in use
            by another job (naming its pid and host).
        RankFailure: this rank failed on a shard (the message names the rank, shard and image).
        IncompleteRun: shards held by another rank made no progress within ``finish_timeout``.

    Example:
        >>> xt.dataset.explain_dataset("runs/ig", "val/", method="integrated_gradients",
        ...                            options={"steps": 32}, metrics=["deletion"], on_error="skip")
        >>> res = xt.dataset.load("runs/ig")
    """
    check_args(shard_size, dtype, target, list(metrics), seed, on_error, threads, workers)
    launch = launch_from_env()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if launch.launched and not _WATCHING and ("TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ):
        watch_parent()
        _WATCHING.append(True)
    path = Path(out)
    prepare_folder(path)
    lock = JobLock(path, launch.job, launch.rank)
    before = torch.get_num_threads()
    try:
        return _run(path, launch, data, model, weights, method, dict(options or {}), shard_size, dtype, target,
                    list(metrics), seed, dev, input_size, progress, on_error, hash, threads, workers,
                    finish_timeout, _fault)
    finally:
        torch.set_num_threads(before)
        lock.release()


@dataclass
class _Setup:
    source: Source
    plan: Plan
    model: nn.Module
    explainer: Explainer
    normalize: Normalize
    config: dict[str, Any]
    config_hash: str


def _setup(recorded: dict[str, Any], data: Any, model_spec: Union[str, nn.Module], weights: Optional[str],
           method: Method, options: dict[str, Any], shard_size: Optional[int], dtype: str, target: Target,
           metrics: list[str], seed: int, device: torch.device, input_size: int, hash: str, threads: int) -> _Setup:
    """Build the images, model and explainer; the shard plan, the configuration and its hash
    (``recorded``: the manifest of the run being resumed, ``{}`` for a new one)."""
    source = build_source(data, model_spec, input_size, hash=hash)
    if target == "label" and isinstance(source, FolderSource) and source.labels[0] < 0:
        raise XaiError("target='label' needs labelled images (ImageFolder layout: one folder per class); "
                       f"{str(data)!r} is a flat folder.")
    quarantine = quarantined(recorded)
    ids = run_ids(source, quarantine)
    old_size = (recorded.get("config") or {}).get("shard_size")
    size = shard_size or (old_size if isinstance(old_size, int) and old_size > 0 else default_shard_size(len(ids)))
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
        "dataset": dataset_identity(source, ids, quarantine),
        "shard_size": size, "dtype": dtype, "target": target, "metrics": sorted(metrics), "seed": seed,
        "threads": threads,
    }
    return _Setup(source, Plan(ids, source.ids, size), model, explainer, norm, config, hash_json(config))


def _run(out: Path, launch: Launch, data: Any, model_spec: Union[str, nn.Module], weights: Optional[str],
         method: Method, opts: dict[str, Any], shard_size: Optional[int], dtype: str, target: Target,
         metrics: list[str], seed: int, device: torch.device, input_size: int, progress: Optional[bool],
         on_error: str, hash: str, threads: Optional[int], workers: Optional[int], finish_timeout: Optional[float],
         fault: Optional[str]) -> RunSummary:
    ledger = Ledger(out)
    recorded = ledger.read() or {}
    old_threads = (recorded.get("config") or {}).get("threads")
    cores = cpu_budget()
    if threads is None:
        threads = old_threads if isinstance(old_threads, int) and old_threads > 0 else \
            fit_threads(cores, launch.local_world)
    torch.set_num_threads(threads)
    s = _setup(recorded, data, model_spec, weights, method, opts, shard_size, dtype, target, metrics, seed, device,
               input_size, hash, threads)
    plan, config_hash = s.plan, s.config_hash

    def start(state: Optional[dict[str, Any]]) -> tuple[Optional[dict[str, Any]], None]:
        if state is None:
            state = {"config_hash": config_hash, "format": FORMAT, "config": canonical(s.config),
                     "images": len(plan.run_ids), "num_shards": plan.num_shards, "shards": {}, "quarantine": [],
                     "complete": False, "runs": []}
        else:
            check_config(out, state, s.config, config_hash)
        if not any(isinstance(r, dict) and r.get("job") == launch.job for r in state.setdefault("runs", [])):
            state["runs"].append({"job": launch.job, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "t0": time.time(),
                                  "world_size": launch.world, "device": device.type, "threads": threads,
                                  "reused": [], "computed": [], "seconds": None, "finished": False})
        run = run_of(state, launch.job)
        state["complete"] = len(set(run["reused"]) | set(run["computed"])) == state["num_shards"]
        return state, None

    ledger.update(start)

    def reseeded(seed_k: int) -> Explainer:  # the explainer of one shard
        return rebuild_with_seed(method, s.model, opts, s.normalize, s.explainer, seed_k)

    worker = ShardWorker(out, s.model, s.explainer, reseeded, dtype=dtype, target=target, metrics=metrics, seed=seed,
                         device=device, rank=launch.rank, config_hash=config_hash, on_error=on_error)
    bar = None
    if launch.rank == 0:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=len(plan.run_ids), unit="img", disable=not show, desc=f"xai-torch run ({launch.world} proc)",
                   dynamic_ncols=True)

    def tick(state: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(sum(int(r.get("images", 0)) for r in state["shards"].values()) - bar.n)

    claims = Claims(out)
    start_time = time.perf_counter()
    try:
        RankLoop(out, plan, s.source, worker, ledger, claims, launch, config_hash=config_hash,
                 workers=fit_workers(cores, launch.local_world) if workers is None else workers,
                 finish_timeout=finish_timeout, fault=fault, tick=tick).run()
    finally:
        claims.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start_time
    state = ledger.read() or {}
    run = run_of(state, launch.job)
    computed = sorted(run["computed"])
    return RunSummary(out=out, images=len(plan.run_ids), computed=computed, reused=sorted(run["reused"]),
                      computed_images=sum(int(state["shards"][str(k)]["images"]) for k in computed),
                      seconds=seconds, world_size=launch.world, quarantine=list(state.get("quarantine", [])))
