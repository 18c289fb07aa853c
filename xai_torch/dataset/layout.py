"""The shard layout of a run and what its configuration records of the dataset, quarantine
included.

**Quarantine and resume.** With ``on_error="skip"`` an image that cannot be decoded is left out
of its shard and listed in the manifest's ``"quarantine"`` (id, reason, shard and the file's
digest as the dataset identity counts it: its sha256 under ``hash="content"``, its size under
``hash="names"``). A user may then delete the bad file and rerun: the run's images are the files
found *plus* the quarantined ids that are gone, so the shard layout, the ids hash and the
dataset identity (recomputed with the recorded digests of the missing files) are those of the
first run and the resume is accepted. Any other change (a new file, a changed good file, a
removed file that was not quarantined) still changes the identity and is refused.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, Optional

from .sources import Source


class Plan:
    """Shard ``k`` holds the run's images ``[k * size, (k + 1) * size)`` (``ids`` sorted as the
    source gives them); :meth:`positions` maps them to the source (``None``: no longer there)."""

    def __init__(self, run_ids: list[str], source_ids: Sequence[str], size: int) -> None:
        self.run_ids, self.size = run_ids, size
        self.where = {id_: i for i, id_ in enumerate(source_ids)}
        self.num_shards = -(-len(run_ids) // size)

    def bounds(self, k: int) -> tuple[int, int]:
        """Run positions ``[a, b)`` of shard ``k``."""
        return k * self.size, min(len(self.run_ids), (k + 1) * self.size)

    def ids(self, k: int) -> list[str]:
        a, b = self.bounds(k)
        return self.run_ids[a:b]

    def positions(self, k: int) -> list[Optional[int]]:
        return [self.where.get(i) for i in self.ids(k)]


def quarantined(manifest: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """The quarantine list of a manifest (``[]`` when none or malformed)."""
    q = (manifest or {}).get("quarantine")
    return [e for e in q if isinstance(e, dict) and isinstance(e.get("id"), str)] if isinstance(q, list) else []


def run_ids(source: Source, quarantine: list[dict[str, Any]]) -> list[str]:
    """The run's image ids: the source's, plus quarantined ids whose files are gone."""
    have = set(source.ids)
    gone = sorted({e["id"] for e in quarantine} - have)
    return sorted([*source.ids, *gone]) if gone else list(source.ids)


def file_digest(source: Source, pos: Optional[int]) -> Optional[str]:
    """What the source's identity counts of image ``pos``: its sha256 (``hash="content"``) or
    its size (``"names"``); ``None`` for a source that keeps no per-file record."""
    if pos is None:
        return None
    digests = getattr(source, "digests", None)
    if isinstance(digests, list):
        return str(digests[pos])
    files = getattr(source, "files", None)
    if isinstance(files, list) and "sizes_sha256" in source.identity:
        try:
            return str(files[pos].stat().st_size)
        except OSError:
            return None
    return None


def _digest_list(ids: Sequence[str], digests: Sequence[str]) -> str:
    # the per-file summary of :mod:`.sources`: sha256 over ``id<TAB>digest`` lines in id order
    return hashlib.sha256("".join(f"{i}\t{d}\n" for i, d in zip(ids, digests)).encode()).hexdigest()


def dataset_identity(source: Source, ids: list[str], quarantine: list[dict[str, Any]]) -> dict[str, Any]:
    """The configuration's ``"dataset"`` entry over the run's ``ids`` (quarantined files that
    were removed count with the digest recorded when they were quarantined)."""
    identity = dict(source.identity)
    gone = {e["id"]: e.get("digest") for e in quarantine if e["id"] not in set(source.ids)}
    key = "content_sha256" if "content_sha256" in identity else "sizes_sha256" if "sizes_sha256" in identity else None
    if gone and key is not None:
        where = {id_: i for i, id_ in enumerate(source.ids)}
        digests = [str(gone[i]) if i in gone else file_digest(source, where[i]) for i in ids]
        identity[key] = _digest_list(ids, [str(d) for d in digests])
    return {**identity, "images": len(ids), "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def run_of(state: dict[str, Any], job: str) -> dict[str, Any]:
    """The record of job ``job`` in the manifest's ``runs`` (it must be there)."""
    for run in state["runs"]:
        if isinstance(run, dict) and run.get("job") == job:
            return run
    raise KeyError(job)


def record_shard(state: dict[str, Any], source: Source, plan: Plan, job: str, k: int, record: dict[str, Any],
                 kind: str) -> dict[str, Any]:
    """Put shard ``k``'s ``record`` in the manifest ``state`` (``kind``: ``"computed"`` or
    ``"reused"`` by job ``job``) with its quarantined images (their file digests, so a resume
    after deleting one is recognised); both engines record through here. Returns the job's run
    record (its ``seconds`` updated)."""
    state["shards"][str(k)] = record
    old = {e["id"]: e for e in state.get("quarantine", []) if isinstance(e, dict)}
    kept = [e for e in old.values() if e.get("shard") != k]
    for id_, reason in record.get("quarantined") or []:
        digest = file_digest(source, plan.where.get(id_))
        if digest is None and id_ in old:
            digest = old[id_].get("digest")  # the file is gone: keep what was recorded of it
        kept.append({"id": id_, "reason": reason, "shard": k, "digest": digest})
    state["quarantine"] = sorted(kept, key=lambda e: str(e["id"]))
    run = run_of(state, job)
    run[kind] = sorted(set(run[kind]) | {k})
    run["seconds"] = round(time.time() - float(run["t0"]), 3)
    return run

