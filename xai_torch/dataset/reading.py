"""Reading a run back: :func:`load` and what it returns."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from numpy.typing import NDArray

from ..errors import XaiError
from ..files import inside
from .config import MANIFEST, sha256_file
from .layout import quarantined
from .shards import Record, parse_manifest, read_shard


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
        quarantine: ``{"id", "reason", "shard", ...}`` of the images left out (``on_error="skip"``).
    """

    ids: list[str]
    indices: NDArray[Any]
    attributions: NDArray[Any]
    targets: NDArray[Any]
    predictions: NDArray[Any]
    labels: NDArray[Any]
    metrics: dict[str, NDArray[Any]]
    manifest: dict[str, Any]
    quarantine: list[dict[str, Any]] = field(default_factory=list)


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
        XaiError: no manifest, a manifest that is not one (not JSON, not an object, keys
        missing), an unfinished run (unless ``allow_partial``), a missing or corrupt shard, or
        a shard path that leads out of ``out_dir`` (``../x.npz``, an absolute path, a link out:
        only files inside the run folder are read).

    Example:
        >>> res = xt.dataset.load("runs/ig")
        >>> res.ids[:2], res.attributions.shape, res.metrics["deletion_auc"].mean()
    """
    out = Path(out_dir)
    manifest = parse_manifest(out) if out.is_dir() else None
    if manifest is None:
        raise XaiError(f"{str(out)!r} holds no {MANIFEST}: not the output folder of an xai-torch run.")
    shards = _shard_records(out, manifest)
    missing = [k for k in range(manifest["num_shards"]) if k not in shards]
    if missing and not allow_partial:
        raise XaiError(f"the run in {str(out)!r} is unfinished: {len(missing)} of {manifest['num_shards']} shards "
                       "missing. Rerun the same command to finish it, or pass allow_partial=True.")
    parts = []
    for k in sorted(shards):
        file = inside(out, shards[k]["file"], f"shard {k}")
        if not file.is_file():
            raise XaiError(f"shard {str(file)!r} is missing; rerun the same command to recompute it.")
        if verify and sha256_file(file) != shards[k]["sha256"]:
            raise XaiError(f"shard {str(file)!r} does not match its checksum; rerun the same command to "
                           "recompute it.")
        part = read_shard(file) if file.suffix != ".parquet" else _read_part(file)  # Parquet: a Ray run
        if len(part["ids"]):  # a shard whose every image is quarantined holds none
            parts.append(part)
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
                              manifest=manifest, quarantine=quarantined(manifest))


def _read_part(file: Path) -> dict[str, NDArray[Any]]:
    from .ray_files import read_part  # pyarrow only: reading a Ray run needs no Ray

    return read_part(file)


def _shard_records(out: Path, manifest: dict[str, Any]) -> dict[int, Record]:
    """The manifest's shard records by index, checked: ``num_shards`` an int >= 0, ``shards`` an
    object of ``{"file": str, "sha256": str, ...}`` keyed by shard indices below it."""
    where = f"{str(out / MANIFEST)!r}"
    fix = "not written by xai-torch run, or damaged; rerun the command that made it (or delete the folder)."
    count, records = manifest.get("num_shards"), manifest.get("shards")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise XaiError(f"{where} has no valid 'num_shards' (got {count!r}): {fix}")
    if not isinstance(records, dict):
        raise XaiError(f"{where} has no 'shards' object (got {type(records).__name__}): {fix}")
    shards: dict[int, Record] = {}
    for key, rec in records.items():
        k = int(key) if isinstance(key, str) and key.isdigit() else -1
        if not 0 <= k < count or not isinstance(rec, dict) or not isinstance(rec.get("file"), str) \
                or not isinstance(rec.get("sha256"), str):
            raise XaiError(f"{where}: shard record {key!r} is not a shard index below {count} with 'file' and "
                           f"'sha256' strings (got {rec!r:.120}): {fix}")
        shards[k] = rec
    return shards
