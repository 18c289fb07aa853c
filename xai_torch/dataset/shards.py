"""A run's files: one ``shard-KKKKK.npz`` per shard (written atomically, checked by sha256 or,
when not yet recorded, by reading it whole) and ``manifest.json`` (configuration, finished
shards, one record per run). Writes go through :func:`xai_torch.files.atomic_write` (a link
planted in the run folder is replaced, never written through); reads of names found in the
manifest go through :func:`xai_torch.files.inside` (nothing outside the folder is read)."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
from numpy.typing import NDArray

from ..errors import XaiError
from ..files import atomic_write, check_folder, inside
from .config import MANIFEST, canonical, sha256_file

#: one shard's record in the manifest (file, images, first / last id, sha256, bytes, rank, seconds)
Record = dict[str, Any]


def shard_name(k: int) -> str:
    """File name of shard ``k``."""
    return f"shard-{k:05d}.npz"


#: the arrays every shard file holds
SHARD_KEYS = ("ids", "indices", "labels", "targets", "predictions", "attributions")


def read_shard(path: Path) -> dict[str, NDArray[Any]]:
    """All arrays of a shard file (reading every member checks its zip CRC).

    Raises:
        XaiError: the file is not a shard (unreadable, not an ``.npz``, arrays missing).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except Exception as err:  # noqa: BLE001 - zip, pickle and OS errors alike: not a shard
        raise unreadable_shard(path, err) from None
    return check_shard_keys(path, arrays)


def unreadable_shard(path: Path, err: Exception) -> XaiError:
    """The error for a shard file that cannot be read (either engine's format)."""
    return XaiError(f"shard {str(path)!r} is unreadable ({type(err).__name__}: {err}); rerun the same "
                    "command to recompute it.")


def check_shard_keys(path: Path, arrays: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """``arrays`` when it holds every array of a shard (:data:`SHARD_KEYS`).

    Raises:
        XaiError: some are missing: not a shard of an xai-torch run.
    """
    missing = [key for key in SHARD_KEYS if key not in arrays]
    if missing:
        raise XaiError(f"shard {str(path)!r} lacks {missing}: not a shard of an xai-torch run; rerun the same "
                       "command to recompute it.")
    return arrays


def write_shard(out: Path, k: int, arrays: dict[str, NDArray[Any]]) -> tuple[str, int]:
    """Write shard ``k`` atomically; its ``(sha256, bytes)``."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: savez(file, *args: ArrayLike, **kwds)
    data = buf.getvalue()
    atomic_write(out / shard_name(k), data)
    return hashlib.sha256(data).hexdigest(), len(data)


def verify_shard(out: Path, k: int, record: Optional[Record], config_hash: str,
                 expect_ids: list[str]) -> Optional[Record]:
    """Shard ``k``'s record when its file is on disk and complete, else ``None``: the file
    matches the manifest's checksum, or (no record: written just before a crash) it reads
    whole with this run's config hash, shard index and ids (``expect_ids`` less the images
    the shard itself lists as quarantined)."""
    path = out / shard_name(k)
    if path.is_symlink() or not path.is_file():  # a link is never ours: recomputing replaces it
        return None
    if record is not None:
        return record if sha256_file(path) == record.get("sha256") else None
    try:  # written just before a crash, before it was recorded: check it whole
        arrays = read_shard(path)
        bad_ids = [str(i) for i in arrays.get("quarantined", np.zeros(0, dtype=str))]
        reasons = [str(r) for r in arrays.get("quarantine_reasons", np.zeros(0, dtype=str))]
        ids = [str(i) for i in arrays["ids"]]
        if not (str(arrays["config_hash"]) == config_hash and int(arrays["shard"]) == k
                and ids == [i for i in expect_ids if i not in set(bad_ids)]):
            return None
    except Exception:  # noqa: BLE001 - any unreadable file is recomputed
        return None
    return {"file": path.name, "images": len(ids), "first": expect_ids[0], "last": expect_ids[-1],
            "sha256": sha256_file(path), "bytes": path.stat().st_size, "rank": None, "seconds": None,
            "quarantined": [list(q) for q in zip(bad_ids, reasons)]}


def shard_ok(out: Path, k: int, record: Optional[Record], config_hash: str, expect_ids: list[str]) -> bool:
    """Whether shard ``k`` is on disk and complete (:func:`verify_shard`)."""
    return verify_shard(out, k, record, config_hash, expect_ids) is not None


def parse_manifest(out: Path) -> Optional[dict[str, Any]]:
    """The JSON object in ``out/manifest.json``, ``None`` when there is no such file.

    Raises:
        XaiError: the manifest is a link out of ``out``, unreadable, not JSON, or not a JSON object.
    """
    if not (out / MANIFEST).exists():
        return None
    path = inside(out, MANIFEST, "manifest")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise XaiError(f"{str(out / MANIFEST)!r} is unreadable ({err}): not written by xai-torch run, or damaged; "
                       "delete it (and the shards) to start over.") from None
    if not isinstance(manifest, dict):
        raise XaiError(f"{str(out / MANIFEST)!r} holds a JSON {type(manifest).__name__}, not the object xai-torch "
                       "run writes; delete it (and the shards) to start over.")
    return manifest


def prepare_folder(out: Path) -> None:
    """Create the output folder ``out``.

    Raises:
        XaiError: ``out`` is a file, or cannot be created.
    """
    check_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise XaiError(f"cannot create --out {str(out)!r}: {err.strerror or err}.") from None


def check_config(out: Path, manifest: dict[str, Any], config: dict[str, Any], config_hash: str) -> None:
    """Refuse a manifest made with another configuration (the message lists the differences).

    Raises:
        XaiError: the configuration hashes differ.
    """
    if manifest.get("config_hash") != config_hash:
        found = manifest.get("config")
        old: dict[str, Any] = found if isinstance(found, dict) else {}
        diff = [f"{k}: {old.get(k)!r} there, {config.get(k)!r} here" for k in sorted(set(old) | set(config))
                if old.get(k) != canonical(config.get(k))]
        hint = (" (the thread count changes results in the last digits: pass --threads "
                f"{old.get('threads')} to resume)" if old.get("threads") != config.get("threads") else "")
        raise XaiError(f"output folder {str(out)!r} holds a run with a different configuration ("
                       f"{'; '.join(diff) or 'config hash differs'}){hint}. Use another --out folder, or delete "
                       "this one to start over.")
