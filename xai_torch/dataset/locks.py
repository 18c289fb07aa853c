"""Coordination through the output folder alone (no process group, no collective):

* :class:`JobLock` - one job per output folder. ``.xai-torch.lock`` is held (``lockf``) for
  the whole run: shared by the ranks of one job (they carry the same job id), refused to any
  other job with an :class:`~xai_torch.errors.XaiError` naming the holder's pid and host. The
  kernel releases it when the holder dies, so a crashed job never leaves a stale lock.
* :class:`Claims` - which rank works on which shard: byte ``k`` of ``.xai-torch.claims`` is
  locked (``lockf``) by the process explaining shard ``k``. A dead rank's claims vanish with it,
  so another rank or a rerun takes its shards over; a stalled rank keeps its claim and is
  reported by the ranks that wait for it.
* :class:`Ledger` - the manifest, read, changed and written back under ``flock`` of
  ``.xai-torch.manifest-lock`` by whichever rank has news (a shard done, a quarantined image).

``lockf`` locks belong to a process (the DataLoader's forked workers do not inherit them, so a
dead rank's locks go with it even while its workers wind down); ``flock`` guards only short
critical sections. Both are file locks: reliable on a local file system (one machine, the
torchrun engine's scope); on a network file system they depend on its lock daemon.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

from ..errors import XaiError
from ..files import atomic_write
from .config import MANIFEST

LOCK_FILE = ".xai-torch.lock"
CLAIMS_FILE = ".xai-torch.claims"
LEDGER_LOCK = ".xai-torch.manifest-lock"
GUARD_FILE = ".xai-torch.guard"
#: temporary files of :func:`xai_torch.files.atomic_write`: ``.NAME.tmp-PID-HEX``
TMP_PATTERN = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]+$")
T = TypeVar("T")


def _open(path: Path) -> int:
    """A read-write descriptor of a lock file (created; a link planted there is refused)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as err:
        raise XaiError(f"cannot open the lock file {str(path)!r}: {err.strerror or err}; remove it if it is a "
                       "link or a folder.") from None


class JobLock:
    """Hold ``out``'s lock for job ``job`` (see the module docstring); :meth:`release` lets go.

    ``fresh`` is true for the process that took the lock first (the job's first rank): it
    removes the temporary files an earlier, dead job left (:func:`remove_stale_tmp`) before any
    other rank of the job may join and write. ``removed`` names them."""

    def __init__(self, out: Path, job: str, rank: int) -> None:
        self.fd: Optional[int] = None
        self.removed: list[str] = []
        guard = _open(out / GUARD_FILE)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)  # one process at a time decides (a short wait at most)
            fd = _open(out / LOCK_FILE)
            try:  # a POSIX lock: DataLoader workers forked later do not inherit it
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fresh = True
            except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: held by another process
                self.fresh = False
            except OSError as err:
                os.close(fd)
                raise XaiError(f"cannot lock {str(out / LOCK_FILE)!r} ({err.strerror or err}): the output folder "
                               "must be on a file system with POSIX file locks (a local disk).") from None
            if self.fresh:
                owner = {"job": job, "pid": os.getpid(), "host": socket.gethostname(), "rank": rank,
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(owner).encode(), 0)
                self.removed = remove_stale_tmp(out)
            else:
                owner = _owner(fd)
                if owner.get("job") != job:
                    os.close(fd)
                    raise XaiError(
                        f"output folder {str(out)!r} is in use by another job (pid {owner.get('pid')} on host "
                        f"{owner.get('host')!r}, started {owner.get('started')}): two jobs would recompute and "
                        "overwrite each other's shards. Wait for it to finish (or stop it), or use another --out.")
            fcntl.lockf(fd, fcntl.LOCK_SH)  # the job's other ranks join (from exclusive: an atomic change)
            self.fd = fd
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
            os.close(guard)

    def release(self) -> None:
        """Let go of the lock (the folder is free once every rank of the job let go or died)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _owner(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = {}
    return data if isinstance(data, dict) else {}


def remove_stale_tmp(out: Path) -> list[str]:
    """Remove the temporary files an interrupted write left in ``out``; their names."""
    gone = []
    for p in out.iterdir():
        if TMP_PATTERN.match(p.name) and (p.is_symlink() or p.is_file()):
            p.unlink(missing_ok=True)
            gone.append(p.name)
    return sorted(gone)


class Claims:
    """Per-shard claims: :meth:`take` locks byte ``k`` of the claims file without waiting."""

    def __init__(self, out: Path) -> None:
        self.fd = _open(out / CLAIMS_FILE)  # one descriptor per process: POSIX locks are per process

    def take(self, k: int) -> bool:
        """Claim shard ``k``; ``False`` when another process holds it."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, k)
            return True
        except (BlockingIOError, PermissionError):
            return False

    def holder(self, k: int) -> Optional[int]:
        """The pid holding shard ``k``'s claim (``F_GETLK``), ``None`` when free or unknown."""
        if sys.platform != "linux":  # the layout of struct flock below is Linux's
            return None
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, k, 1, 0)
        try:
            kind, _, _, _, pid = struct.unpack("hhqqi4x", fcntl.fcntl(self.fd, fcntl.F_GETLK, query))
        except (OSError, struct.error):
            return None
        return int(pid) if kind != fcntl.F_UNLCK and pid > 0 else None

    def give_back(self, k: int) -> None:
        """Release the claim on shard ``k``."""
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, k)

    def close(self) -> None:
        os.close(self.fd)


class Ledger:
    """The manifest of ``out``, changed under a file lock by any rank (see the module docstring)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lock_path = out / LEDGER_LOCK

    def read(self) -> Optional[dict[str, Any]]:
        """The manifest as it is now (a snapshot; writes are atomic renames), ``None`` when absent."""
        from .shards import parse_manifest

        return parse_manifest(self.out)

    def update(self, change: Callable[[Optional[dict[str, Any]]], tuple[Optional[dict[str, Any]], T]]) -> T:
        """Lock, read the manifest, let ``change(state)`` return ``(new_state, result)``, write
        ``new_state`` (unless ``None``), unlock; the ``result``."""
        fd = _open(self.lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state, result = change(self.read())
            if state is not None:
                atomic_write(self.out / MANIFEST, json.dumps(state, indent=1).encode())
            return result
        finally:
            os.close(fd)  # closing the descriptor releases the flock
