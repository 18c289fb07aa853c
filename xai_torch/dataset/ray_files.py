"""The shard files of a Ray run: one Parquet file per shard, ``shard-KKKKK.parquet``, one row per
explained image, with the columns the torchrun engine's ``.npz`` shards hold as arrays: ``ids``,
``indices``, ``labels``, ``targets``, ``predictions``, ``attributions`` (an Arrow fixed-shape
tensor column, float32, or float16 divided by ``attribution_scale``), ``deletion_auc`` /
``insertion_auc`` when scored, ``config_hash`` and ``shard``. The file's schema metadata
(``xai_torch``) repeats the config hash and the shard and lists the quarantined images, so a
shard whose every image was quarantined is still a complete file.

Written atomically (:func:`xai_torch.files.atomic_write`) and checked by sha256 like the
``.npz`` shards, with a CRC in every data page (as the ``.npz`` zip members have) checked on
reading; read with pyarrow alone (Ray is not needed to read a run back): :func:`read_part`
returns the same dict of arrays as :func:`xai_torch.dataset.shards.read_shard`.
Any Parquet reader works too: ``ray.data.read_parquet(out)``, ``pandas.read_parquet(file)``.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import XaiError
from ..files import atomic_write
from .shards import check_shard_keys, unreadable_shard

META_KEY = b"xai_torch"


def _arrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet`` (untyped: imported as ``Any``)."""
    return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")


def part_name(k: int) -> str:
    """File name of shard ``k`` of a Ray run."""
    return f"shard-{k:05d}.parquet"


def write_part(out: Path, k: int, arrays: dict[str, NDArray[Any]]) -> tuple[str, int]:
    """Write shard ``k``'s arrays (the keys of an ``.npz`` shard) as one Parquet file, atomically;
    its ``(sha256, bytes)``."""
    pa, pq = _arrow()
    n = len(arrays["ids"])
    columns: dict[str, Any] = {}
    for key, value in arrays.items():
        v = np.asarray(value)
        if key in ("config_hash", "shard", "quarantined", "quarantine_reasons"):
            continue
        if key == "attributions" and v.ndim >= 2:
            columns[key] = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(v))
        elif key == "ids":
            columns[key] = pa.array([str(i) for i in v], type=pa.string())
        elif v.ndim == 1 and len(v) == n:
            columns[key] = pa.array(v)
        else:
            raise XaiError(f"shard {k}: array {key!r} of shape {v.shape} is not one value per image.")
    config_hash = str(np.asarray(arrays["config_hash"]))
    columns["config_hash"] = pa.array([config_hash] * n, type=pa.string())
    columns["shard"] = pa.array(np.full(n, k, dtype=np.int64))
    bad, reasons = arrays.get("quarantined", ()), arrays.get("quarantine_reasons", ())
    quarantined = [[str(i), str(r)] for i, r in zip(bad, reasons)]
    meta = {"config_hash": config_hash, "shard": k, "quarantined": quarantined}
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)  # CRC per page: a flipped byte is caught
    data = sink.getvalue().to_pybytes()
    atomic_write(out / part_name(k), data)
    return hashlib.sha256(data).hexdigest(), len(data)


def read_part(path: Path) -> dict[str, NDArray[Any]]:
    """All arrays of a Parquet shard, keyed as an ``.npz`` shard's (``config_hash`` and ``shard``
    as 0-d arrays, ``quarantined`` / ``quarantine_reasons`` from the metadata).

    Raises:
        XaiError: the file is unreadable or not a shard of an xai-torch Ray run.
    """
    _, pq = _arrow()
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        meta = json.loads((table.schema.metadata or {})[META_KEY])
        arrays: dict[str, NDArray[Any]] = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if hasattr(col, "to_numpy_ndarray"):  # the fixed-shape tensor column
                arrays[name] = np.asarray(col.to_numpy_ndarray())
            else:
                arrays[name] = np.asarray(col.to_numpy(zero_copy_only=False))
    except Exception as err:  # noqa: BLE001 - Arrow, JSON and OS errors alike: not a shard
        raise unreadable_shard(path, err) from None
    check_shard_keys(path, arrays)
    arrays["ids"] = arrays["ids"].astype(str)
    arrays["config_hash"] = np.array(str(meta.get("config_hash")))
    arrays["shard"] = np.array(int(meta.get("shard", -1)), dtype=np.int64)
    q = meta.get("quarantined") or []
    arrays["quarantined"] = np.array([e[0] for e in q], dtype=str)
    arrays["quarantine_reasons"] = np.array([e[1] for e in q], dtype=str)
    return arrays
