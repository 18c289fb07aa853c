"""The two stages of a Ray run, as Ray Data callables (no Ray import here: Ray calls them):

* :class:`DecodeShard` - a ``map`` over rows ``{"shard": k}``: the shard's images decoded with
  the run's :class:`~xai_torch.dataset.sources.Source` (the same decoding as the torchrun engine:
  16-bit images scaled, bad files recorded with their reason), passed on pickled.
* :class:`ExplainShard` - the ``map_batches`` callable class, one model and explainer per actor
  (built once, on the actor's GPU when it has one), one shard per batch: the shard's explainer
  seeded with ``shard_seed(seed, k)`` (:class:`~xai_torch.dataset.compute.ShardWorker`, as in
  the torchrun engine, so results are equal), the shard written as Parquet
  (:mod:`.ray_files`), and its manifest record passed back to the driver. A failure is passed
  back as a row too (the driver stops the run, naming the image), never raised inside Ray.
"""
from __future__ import annotations

import json
import os
import pickle
import socket
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..errors import XaiError
from ..explainer import Explainer
from .build import Method, build_explainer, build_model, normalisation, rebuild_with_seed
from .compute import ImageError, ShardWorker
from .config import Target, weights_sha256
from .engine import Loaded, load_images
from .layout import Plan
from .ray_files import part_name, write_part
from .sources import Source


class DecodeShard:
    """``{"shard": [k]}`` -> ``{"shard": [k], "loaded": [pickled Loaded]}`` (a Ray Data ``map_batches`` function)."""

    def __init__(self, source: Source, plan: Plan) -> None:
        self.source, self.plan = source, plan

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        shards = [int(k) for k in batch["shard"]]
        loaded = [pickle.dumps(load_images(self.source, k, self.plan.positions(k), self.plan.ids(k))) for k in shards]
        return {"shard": np.array(shards, dtype=np.int64), "loaded": np.array(loaded, dtype=object)}


class ExplainShard:
    """One actor's model and explainer; called with decoded shards, it writes them and returns
    ``{"shard", "record" (JSON), "error" (JSON or "")}`` rows."""

    def __init__(self, *, out: str, plan: Plan, model: Union[str, nn.Module], weights: Optional[str], method: Method,
                 options: dict[str, Any], dtype: str, target: Target, metrics: list[str], seed: int, threads: int,
                 config_hash: str, weights_hash: str, on_error: str, use_gpu: bool) -> None:
        torch.set_num_threads(threads)
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        built = build_model(model, weights, device)
        if weights_sha256(built) != weights_hash:
            raise XaiError(f"the model built on this Ray worker has other weights (sha256 "
                           f"{weights_sha256(built)[:12]}, the driver's {weights_hash[:12]}): every node needs the "
                           "same weights file and code.")
        norm = normalisation(model if isinstance(model, str) else None)
        explainer = build_explainer(method, built, options, normalize=norm)

        def reseeded(s: int) -> Explainer:
            return rebuild_with_seed(method, built, options, norm, explainer, s)

        self.out, self.plan, self.on_error = Path(out), plan, on_error
        self.worker = ShardWorker(self.out, built, explainer, reseeded, dtype=dtype, target=target, metrics=metrics,
                                  seed=seed, device=device, rank=0, config_hash=config_hash, on_error=on_error)
        self.where = f"ray:{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        records, errors = [], []
        for blob in batch["loaded"]:
            record, error = "", ""
            try:
                record = json.dumps(self.explain(pickle.loads(blob)))
            except ImageError as err:
                error = json.dumps({"image": err.image, "message": err.message})
            except Exception as err:  # noqa: BLE001 - passed to the driver, which stops the run naming it
                error = json.dumps({"image": None, "message": f"{type(err).__name__}: {err}"})
            records.append(record)
            errors.append(error)
        return {"shard": np.asarray(batch["shard"], dtype=np.int64), "record": np.array(records, dtype=object),
                "error": np.array(errors, dtype=object)}

    def explain(self, loaded: Loaded) -> dict[str, Any]:
        """Explain one decoded shard and write its Parquet file; its manifest record."""
        start = time.perf_counter()
        k, ids = loaded.shard, self.plan.ids(loaded.shard)
        arrays, bad = self.worker.arrays(loaded, self.plan.bounds(k)[0], ids)
        sha256, size = write_part(self.out, k, arrays)
        return {"file": part_name(k), "images": len(arrays["ids"]), "first": ids[0], "last": ids[-1], "sha256": sha256,
                "bytes": size, "rank": self.where, "seconds": round(time.perf_counter() - start, 3),
                "quarantined": [list(e) for e in bad]}
