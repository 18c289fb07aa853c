"""A run's files: one ``shard-KKKKK.npz`` per shard (written atomically, checked by sha256 or,
when not yet recorded, by reading it whole) and ``manifest.json`` (configuration, finished
shards, one record per run)."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

from ..errors import XaiError
from .config import MANIFEST, atomic_write, canonical, sha256_file

#: one shard's record in the manifest (file, images, first / last id, sha256, bytes, rank, seconds)
Record = dict[str, Any]


def shard_name(k: int) -> str:
    """File name of shard ``k``."""
    return f"shard-{k:05d}.npz"


def read_shard(path: Path) -> dict[str, NDArray[Any]]:
    """All arrays of a shard file (reading every member checks its zip CRC)."""
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def write_shard(out: Path, k: int, arrays: dict[str, NDArray[Any]]) -> tuple[str, int]:
    """Write shard ``k`` atomically; its ``(sha256, bytes)``."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: savez(file, *args: ArrayLike, **kwds)
    data = buf.getvalue()
    atomic_write(out / shard_name(k), data)
    return hashlib.sha256(data).hexdigest(), len(data)


def shard_ok(out: Path, k: int, record: Optional[Record], config_hash: str, expect_ids: list[str]) -> bool:
    """Whether shard ``k`` is on disk and complete: its checksum matches the manifest's record,
    or (no record: written just before a crash) it reads whole with this run's config hash and ids."""
    path = out / shard_name(k)
    if not path.is_file():
        return False
    if record is not None:
        return bool(sha256_file(path) == record.get("sha256"))
    try:  # written just before a crash, before rank 0 recorded it: check it whole
        arrays = read_shard(path)
        return (str(arrays["config_hash"]) == config_hash and int(arrays["shard"]) == k
                and list(arrays["ids"]) == list(expect_ids))
    except Exception:  # noqa: BLE001 - any unreadable file is recomputed
        return False


def unrecorded_record(out: Path, k: int, ids: list[str]) -> Record:
    """The manifest record of a verified shard file that no manifest lists yet."""
    path = out / shard_name(k)
    return {"file": path.name, "images": len(ids), "first": ids[0], "last": ids[-1], "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "rank": None, "seconds": None}


def read_manifest(out: Path, config: dict[str, Any], config_hash: str) -> Optional[dict[str, Any]]:
    """The manifest in ``out`` (created if missing), ``None`` when there is none yet.

    Raises:
        XaiError: an unreadable manifest, or one made with another configuration (the message
        lists the differences).
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise XaiError(f"{str(path)!r} is unreadable ({err}); delete it (and the shards) to start over.") from None
    if manifest.get("config_hash") != config_hash:
        old = manifest.get("config", {})
        diff = [f"{k}: {old.get(k)!r} there, {config.get(k)!r} here" for k in sorted(set(old) | set(config))
                if old.get(k) != canonical(config.get(k))]
        raise XaiError(f"output folder {str(out)!r} holds a run with a different configuration ("
                       f"{'; '.join(diff) or 'config hash differs'}). Use another --out folder, or delete this "
                       "one to start over.")
    return manifest


def write_manifest(out: Path, state: dict[str, Any], done: dict[int, Record]) -> None:
    """Record the finished shards ``done`` in ``state`` and write it as the manifest (atomically)."""
    state["shards"] = {str(k): done[k] for k in sorted(done)}
    state["complete"] = len(done) == state["num_shards"]
    atomic_write(out / MANIFEST, json.dumps(state, indent=1).encode())
