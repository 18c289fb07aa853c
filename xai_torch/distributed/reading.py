"""Reading a run back: :func:`load` and what it returns."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from numpy.typing import NDArray

from ..errors import XaiError
from .config import MANIFEST, sha256_file
from .shards import read_shard


@dataclass
class DatasetExplanation:
    """What :func:`load` returns: the images in dataset order (shard by shard).

    Attributes:
        ids: image ids (paths relative to the image folder, or the dataset's ids).
        indices: ``(N,)`` position of each image in the dataset.
        attributions: ``(N, ...)`` float32 (``(N, C, H, W)`` pixel attributions or
            ``(N, 1, H, W)`` maps).
        targets: ``(N,)`` class explained per image.
        predictions: ``(N,)`` argmax of the model's output.
        labels: ``(N,)`` dataset label (ImageFolder class index), -1 when unknown.
        metrics: name -> ``(N,)`` per-image values (``"deletion_auc"``, ``"insertion_auc"``).
        manifest: the run's ``manifest.json``.
    """

    ids: list[str]
    indices: NDArray[Any]
    attributions: NDArray[Any]
    targets: NDArray[Any]
    predictions: NDArray[Any]
    labels: NDArray[Any]
    metrics: dict[str, NDArray[Any]]
    manifest: dict[str, Any]


def load(out_dir: Union[str, os.PathLike[str]], *, verify: bool = True,
         allow_partial: bool = False) -> DatasetExplanation:
    """Read a run's shards back, in dataset order.

    Args:
        out_dir: the run's output folder.
        verify: check every shard against the sha256 in the manifest.
        allow_partial: return the finished shards of an unfinished run instead of raising.

    Returns:
        :class:`DatasetExplanation` (attributions as float32, float16 runs scaled back).

    Raises:
        XaiError: no manifest, an unfinished run (unless ``allow_partial``), a missing or
        corrupt shard.

    Example:
        >>> res = xt.distributed.load("runs/ig")
        >>> res.ids[:2], res.attributions.shape, res.metrics["deletion_auc"].mean()
    """
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        raise XaiError(f"{str(out)!r} holds no {MANIFEST}: not the output folder of an xai-torch run.")
    manifest = json.loads(path.read_text())
    shards = {int(k): v for k, v in manifest.get("shards", {}).items()}
    missing = [k for k in range(manifest["num_shards"]) if k not in shards]
    if missing and not allow_partial:
        raise XaiError(f"the run in {str(out)!r} is unfinished: {len(missing)} of {manifest['num_shards']} shards "
                       "missing. Rerun the same command to finish it, or pass allow_partial=True.")
    parts = []
    for k in sorted(shards):
        file = out / shards[k]["file"]
        if not file.is_file():
            raise XaiError(f"shard {str(file)!r} is missing; rerun the same command to recompute it.")
        if verify and sha256_file(file) != shards[k]["sha256"]:
            raise XaiError(f"shard {str(file)!r} does not match its checksum; rerun the same command to "
                           "recompute it.")
        parts.append(read_shard(file))
    if not parts:
        raise XaiError(f"the run in {str(out)!r} has no finished shard yet.")

    def cat(key: str) -> NDArray[Any]:
        return np.concatenate([p[key] for p in parts])

    attributions = []
    for p in parts:
        a = p["attributions"]
        if "attribution_scale" in p:
            a = a.astype(np.float32) * p["attribution_scale"].reshape(-1, *[1] * (a.ndim - 1))
        attributions.append(a.astype(np.float32, copy=False))
    metrics = {key: cat(key) for key in parts[0] if key.endswith("_auc")}
    return DatasetExplanation(ids=[str(i) for i in cat("ids")], indices=cat("indices"),
                              attributions=np.concatenate(attributions), targets=cat("targets"),
                              predictions=cat("predictions"), labels=cat("labels"), metrics=metrics,
                              manifest=manifest)
