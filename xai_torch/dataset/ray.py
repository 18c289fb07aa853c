"""Dataset-scale explanations on Ray Data, beyond one machine (``pip install xai_torch[ray]``).

The same run as the torchrun engine (:func:`xai_torch.dataset.explain_dataset`): the same shard
plan, per-shard seeds, decoding, configuration fingerprint and manifest, so the results are
equal; Ray does the scheduling, streaming, retries and the nodes. A run is a Ray Data pipeline
over the shards still to do::

    from_items([{"shard": k}, ...])                  # one row per pending shard
      .map_batches(DecodeShard)                      # our decoding (16-bit, bad files), CPU tasks
      .map_batches(ExplainShard, compute=ActorPoolStrategy(size=N))  # one model per actor; writes shard-K.parquet

Example (20 lines; a local cluster, or ``ray.init(address="auto")`` on a real one)::

    import ray
    import xai_torch as xt
    from xai_torch.dataset import ray as xray

    ray.init(num_cpus=8)                       # or address="auto": an existing cluster
    summary = xray.explain_dataset(
        "runs/gradcam",                        # shared by every node (NFS, a mounted bucket)
        "val/",                                # image folder (ImageFolder layout or flat)
        model="torchvision:resnet50", weights="resnet50.pth",
        method="gradcam", options={"layer": "layer4"},
        metrics=["deletion"], on_error="skip", # quarantine unreadable images, go on
    )
    print(summary.computed_images, "images,", summary.throughput, "img/s")
    res = xt.dataset.load("runs/gradcam")      # the same reader as torchrun runs
    print(res.ids[:3], res.attributions.shape, res.metrics["deletion_auc"].mean())
    # a rerun resumes: finished shards are verified and kept; a rerun with another
    # method or options into the same folder is refused, listing the differences

or ``xai-torch run val/ --out runs/gradcam --engine ray ...`` (it connects to ``RAY_ADDRESS``
when set, else starts a local cluster).

* **CPUs.** Decoding tasks take ``read_cpus`` (0.5) CPU each and the explain actors
  ``cpus_per_actor`` (default 1) each; the number of actors (``actors``) is fitted so that
  ``read_cpus`` stay free for decoding (``floor((cluster CPUs - read_cpus) / cpus_per_actor)``,
  at least 1, with ``cpus_per_actor`` shrunk to fit a 1-CPU cluster), so the read stage is never
  starved (one-CPU actors on ``ray.init(num_cpus=2)`` filled the cluster and hung plain Ray).
  With GPUs in the cluster each actor takes ``gpus_per_actor`` (1) and there is one per GPU.
  Ray runs its workers at niceness 15 (``RAY_worker_niceness``): on a node busy with other
  work they yield to it (measured: starved on a busy 2-core machine); export
  ``RAY_worker_niceness=0`` before the cluster starts to compete on equal terms.
* **Threads.** Each actor runs ``threads`` torch threads (default ``cpus_per_actor``), part of
  the configuration as in the torchrun engine: equal thread counts give equal results.
* **Resume.** The configuration (the torchrun engine's, plus ``"engine": "ray"``) is fixed in
  ``manifest.json``; a rerun with another one is refused with the list of differences (plain Ray
  silently mixed 45 Grad-CAM rows with 147 HiResCAM rows). Finished shards - recorded with their
  sha256, or written just before a crash and read back whole with this configuration's hash -
  are not recomputed. One job per folder (the torchrun engine's lock); stale temporary files
  of a killed job are removed.
* **Files.** ``shard-KKKKK.parquet`` (:mod:`.ray_files`: the ``.npz`` shard's columns, one row
  per image) and ``manifest.json``; :func:`xai_torch.dataset.load` reads them.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from ..errors import XaiError
from .build import Method
from .config import FORMAT, RankFailure, Target, canonical, check_args, hash_json, sha256_file
from .layout import record_shard
from .locks import JobLock, Ledger, remove_stale_tmp
from .loop import RunSummary, _setup
from .ray_files import part_name, read_part
from .shards import Record, check_config, prepare_folder

__all__ = ["engine_for", "explain_dataset", "fit_actors"]


def engine_for(engine: str, torchrun: Callable[..., RunSummary]) -> Callable[..., RunSummary]:
    """``xai-torch run --engine``: ``torchrun`` (that engine's ``explain_dataset``, given) or
    ``ray`` (:func:`explain_dataset`, refusing the options only torchrun has)."""
    if engine != "ray":
        return torchrun

    def on_ray(out: Union[str, os.PathLike[str]], data: Any, *, device: Optional[str] = None,
               workers: Optional[int] = None, finish_timeout: Optional[float] = None,
               _fault: Optional[str] = None, **kwargs: Any) -> RunSummary:
        given = [name for name, v in (("--device", device), ("--workers", workers),
                                      ("--finish-timeout", finish_timeout), ("--test-fault", _fault)) if v is not None]
        if given:
            raise XaiError(f"{', '.join(given)}: torchrun engine options; the Ray engine places its actors (CPUs, "
                           "GPUs) and decoding tasks itself. Leave them out with --engine ray.")
        return explain_dataset(out, data, **kwargs)

    return on_ray


def fit_actors(cpus: float, gpus: float = 0.0, *, actors: Optional[int] = None, cpus_per_actor: Optional[float] = None,
               gpus_per_actor: Optional[float] = None, read_cpus: float = 0.5) -> tuple[int, float, float]:
    """``(actors, cpus_per_actor, gpus_per_actor)`` that leave ``read_cpus`` free for decoding.

    Example:
        >>> fit_actors(2), fit_actors(1), fit_actors(16, 2)
        ((1, 1.0, 0.0), (1, 0.5, 0.0), (2, 1.0, 1.0))
    """
    free = max(cpus - read_cpus, 0.0)
    per = float(cpus_per_actor) if cpus_per_actor is not None else 1.0
    if free < per:
        per = free if free > 0 else 0.0
    gpu = float(gpus_per_actor) if gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    if actors is None:
        by_cpu = int(free // per) if per > 0 else 1
        actors = max(1, min(by_cpu, int(gpus // gpu)) if gpu > 0 else by_cpu)
    return actors, per, gpu


def explain_dataset(out: Union[str, os.PathLike[str]], data: Any, *,
                    model: Union[str, nn.Module] = "efficientnet_lite0", weights: Optional[str] = None,
                    method: Method = "gradient", options: Optional[dict[str, Any]] = None,
                    shard_size: Optional[int] = None, dtype: str = "float32", target: Target = "pred",
                    metrics: Sequence[str] = (), seed: int = 0, input_size: int = 224, on_error: str = "stop",
                    hash: str = "auto", threads: Optional[int] = None, actors: Optional[int] = None,
                    cpus_per_actor: Optional[float] = None, gpus_per_actor: Optional[float] = None,
                    read_cpus: float = 0.5, progress: Optional[bool] = None) -> RunSummary:
    """Explain a dataset on the Ray cluster this process is connected to (a local one is
    started when none is). See the module docstring.

    Args:
        out: output folder, at the same path on every node (a shared file system). A rerun
            resumes in it.
        data, model, weights, method, options, shard_size, dtype, target, metrics, seed,
            input_size, on_error, hash: as :func:`xai_torch.dataset.explain_dataset`. An image
            folder must be at the same path on every node; a dataset object must pickle (it
            is sent to the decoding tasks); factories must be importable on every node.
        threads: torch threads per actor, part of the configuration (default: the resumed
            run's, else ``cpus_per_actor`` rounded up).
        actors: explain actors (default fitted by :func:`fit_actors`).
        cpus_per_actor, gpus_per_actor: Ray resources of one actor (defaults: 1 CPU; 1 GPU
            when the cluster has GPUs).
        read_cpus: Ray CPUs of one decoding task (and kept free of actors).
        progress: Ray Data's progress bars (``None``: Ray's default; ``False``: off).

    Returns:
        :class:`~xai_torch.dataset.RunSummary` (``world_size``: the number of actors).

    Raises:
        XaiError: Ray missing, bad arguments, or an output folder made with another
            configuration (listing the differences) or in use by another job.
        RankFailure: a shard failed (an image that does not decode with ``on_error="stop"``,
            an explainer error); the message names the shard and the image.

    Example:
        >>> xray.explain_dataset("runs/g", "val/", method="gradcam", options={"layer": "layer4"})
    """
    try:
        ray: Any = importlib.import_module("ray")  # untyped: Any
    except ImportError:
        raise XaiError("the Ray engine needs Ray Data: pip install 'xai_torch[ray]' (ray[data]>=2.9).") from None
    check_args(shard_size, dtype, target, list(metrics), seed, on_error, threads, None)
    path = Path(out)
    prepare_folder(path)
    job = f"ray@{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    lock = JobLock(path, job, 0)
    try:
        if lock.fresh:
            remove_stale_tmp(path)
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False)
        if progress is not None:
            ray.data.DataContext.get_current().enable_progress_bars = bool(progress)
        res = ray.cluster_resources()
        n_act, per, gpu = fit_actors(float(res.get("CPU", 1)), float(res.get("GPU", 0)), actors=actors,
                                     cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                                     read_cpus=read_cpus)
        return _run(ray, path, job, data, model, weights, method, dict(options or {}), shard_size, dtype, target,
                    list(metrics), seed, input_size, on_error, hash, threads, n_act, per, gpu, read_cpus)
    finally:
        lock.release()


def _verify(out: Path, k: int, record: Optional[Record], config_hash: str, expect_ids: list[str]) -> Optional[Record]:
    """Shard ``k``'s record when its Parquet file is complete (as :func:`.shards.verify_shard`)."""
    p = out / part_name(k)
    if p.is_symlink() or not p.is_file():
        return None
    if record is not None:
        return record if record.get("file") == p.name and sha256_file(p) == record.get("sha256") else None
    try:
        arrays = read_part(p)
    except XaiError:
        return None
    bad = [str(i) for i in arrays["quarantined"]]
    ids = [str(i) for i in arrays["ids"]]
    if str(arrays["config_hash"]) != config_hash or int(arrays["shard"]) != k or \
            ids != [i for i in expect_ids if i not in set(bad)]:
        return None
    return {"file": p.name, "images": len(ids), "first": expect_ids[0], "last": expect_ids[-1],
            "sha256": sha256_file(p), "bytes": p.stat().st_size, "rank": None, "seconds": None,
            "quarantined": [list(q) for q in zip(bad, (str(r) for r in arrays["quarantine_reasons"]))]}


def _run(ray: Any, out: Path, job: str, data: Any, model_spec: Union[str, nn.Module], weights: Optional[str],
         method: Method, opts: dict[str, Any], shard_size: Optional[int], dtype: str, target: Target,
         metrics: list[str], seed: int, input_size: int, on_error: str, hash: str, threads: Optional[int],
         n_act: int, per: float, gpu: float, read_cpus: float) -> RunSummary:
    import torch

    from .ray_actor import DecodeShard, ExplainShard

    ledger = Ledger(out)
    recorded = ledger.read() or {}
    old = (recorded.get("config") or {}).get("threads")
    threads = threads or (old if isinstance(old, int) and old > 0 else max(1, math.ceil(per)))
    s = _setup(recorded, data, model_spec, weights, method, opts, shard_size, dtype, target, metrics, seed,
               torch.device("cpu"), input_size, hash, threads)
    config = {**s.config, "engine": "ray"}
    config_hash, plan = hash_json(config), s.plan

    def start(state: Optional[dict[str, Any]]) -> tuple[Optional[dict[str, Any]], None]:
        if state is None:
            state = {"config_hash": config_hash, "format": FORMAT, "config": canonical(config),
                     "images": len(plan.run_ids), "num_shards": plan.num_shards, "shards": {}, "quarantine": [],
                     "complete": False, "runs": []}
        else:
            check_config(out, state, config, config_hash)
        state.setdefault("runs", []).append({
            "job": job, "engine": "ray", "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "t0": time.time(),
            "world_size": n_act, "device": "cuda" if gpu > 0 else "cpu", "threads": threads, "reused": [],
            "computed": [], "seconds": None, "finished": False})
        return state, None

    ledger.update(start)
    state = ledger.read() or {}
    reused, todo = [], []
    for k in range(plan.num_shards):
        rec = state.get("shards", {}).get(str(k))
        found = _verify(out, k, rec if isinstance(rec, dict) else None, config_hash, plan.ids(k))
        if found is not None:
            reused.append(k)
            _record(ledger, job, s.source, plan, k, found, "reused")
        else:
            todo.append(k)
    t0, computed, failure = time.perf_counter(), [], None
    if todo:
        ds = ray.data.from_items([{"shard": k} for k in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(DecodeShard(s.source, plan), batch_size=1, num_cpus=read_cpus)
        kwargs = dict(out=str(out), plan=plan, model=model_spec, weights=weights, method=method, options=opts,
                      dtype=dtype, target=target, metrics=metrics, seed=seed, threads=threads,
                      config_hash=config_hash, weights_hash=str(config["weights_sha256"]), on_error=on_error,
                      use_gpu=gpu > 0)
        ds = ds.map_batches(ExplainShard, fn_constructor_kwargs=kwargs, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=n_act), num_cpus=per, num_gpus=gpu)
        try:
            for row in ds.iter_rows():
                k = int(row["shard"])
                if row["error"]:
                    failure = _failure(ledger, plan, k, row["error"])
                    break
                _record(ledger, job, s.source, plan, k, json.loads(row["record"]), "computed")
                computed.append(k)
        except XaiError:
            raise
        except Exception as err:  # noqa: BLE001 - Ray's own errors (an actor that cannot start...)
            cause = str(err).strip().splitlines()
            raise RankFailure(f"the Ray pipeline failed after {len(computed)} of {len(todo)} shards (finished ones "
                              f"are kept; rerun to resume): {type(err).__name__}: {cause[-1] if cause else ''}",
                              rank=0) from err
    if failure is not None:
        raise failure
    state = ledger.read() or {}
    return RunSummary(out=out, images=len(plan.run_ids), computed=sorted(computed), reused=reused,
                      computed_images=sum(int(state["shards"][str(k)]["images"]) for k in computed),
                      seconds=time.perf_counter() - t0, world_size=n_act,
                      quarantine=list(state.get("quarantine", [])))


def _record(ledger: Ledger, job: str, source: Any, plan: Any, k: int, record: Record, kind: str) -> None:
    """Record shard ``k`` in the manifest (``kind``: ``"computed"`` or ``"reused"``) with its quarantine."""
    def change(state: Optional[dict[str, Any]]) -> tuple[Optional[dict[str, Any]], None]:
        assert state is not None  # created when the job started
        run = record_shard(state, source, plan, job, k, record, kind)
        state["complete"] = len(state["shards"]) == state["num_shards"]
        if state["complete"]:
            run["finished"] = True
            state.pop("error", None)
        return state, None

    ledger.update(change)


def _failure(ledger: Ledger, plan: Any, k: int, error: str) -> RankFailure:
    """The run's error for a failed shard, noted in the manifest."""
    info = json.loads(error)
    ids = plan.ids(k)
    image = info.get("image")
    where = f"image {image!r}" if image is not None else f"images {ids[0]!r}..{ids[-1]!r}"
    message = f"a Ray actor failed on {where} (shard {k}): {info.get('message')}"

    def change(state: Optional[dict[str, Any]]) -> tuple[Optional[dict[str, Any]], None]:
        if state is not None:
            state["error"] = message
        return state, None

    ledger.update(change)
    return RankFailure(message, rank=0, shard=k, image=image)

