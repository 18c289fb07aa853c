"""What a rank knows of its launch and its machine: rank and world from torchrun's environment
(no process group is joined: the ranks coordinate through the output folder, :mod:`.locks`),
the thread and DataLoader-worker counts that fit its share of the cores, a watchdog that ends
the rank when its launcher dies, and the DataLoader that decodes the rank's next shards ahead.

Why the watchdog: torchrun starts each worker in a session of its own, so killing torchrun's
process group (Ctrl-C in some shells, a batch system's ``kill -9 -PGID``) does not reach the
workers. A rank started by torchrun (``TORCHELASTIC_RUN_ID`` or ``LOCAL_RANK`` set) checks once
a second whether its parent is still the launcher and exits (status 143) when it is not."""
from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .sources import Source


@dataclass(frozen=True)
class Launch:
    """This process's place in the job: ``rank`` of ``world``, ``local_world`` processes on
    this machine, ``job`` (shared by the ranks of one launch) and ``launched`` (by torchrun)."""

    rank: int
    world: int
    local_world: int
    job: str
    launched: bool


def launch_from_env(env: Optional[dict[str, str]] = None) -> Launch:
    """Rank, world size and job id from torchrun's environment (one process of 1 without it).

    The job id is torchrun's ``TORCHELASTIC_RUN_ID`` with the rendezvous address (two
    non-standalone torchrun jobs share the run id ``none``, never the port); a process
    started otherwise is a job of its own (``host:pid:random``, new for every call)."""
    e = dict(os.environ) if env is None else env
    launched = "RANK" in e and "WORLD_SIZE" in e
    if not launched:
        return Launch(0, 1, 1, f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}", False)
    rank, world = int(e["RANK"]), int(e["WORLD_SIZE"])
    local_world = int(e.get("LOCAL_WORLD_SIZE", world))
    job = f"{e.get('TORCHELASTIC_RUN_ID', 'none')}@{e.get('MASTER_ADDR', '')}:{e.get('MASTER_PORT', '')}"
    return Launch(rank, world, local_world, job, True)


def cpu_budget() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def fit_threads(cores: int, local_world: int) -> int:
    """Torch threads per rank: ``max(1, cores // local_world)`` (one process on a 2-core node
    gets 2; two get 1 each: more threads than cores made each rank 3-5x slower)."""
    return max(1, cores // max(1, local_world))


def fit_workers(cores: int, local_world: int) -> int:
    """DataLoader workers per rank: 0 with one core or less per rank (decoding in the loop),
    1 below 8 cores per rank, else 2 (decoding is cheap next to explaining)."""
    per_rank = cores // max(1, local_world)
    return 0 if per_rank < 2 else 1 if per_rank < 8 else 2


def watch_parent(interval: float = 1.0) -> threading.Thread:
    """Start a daemon thread that ends this process when its parent (the launcher) dies."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                print(f"xai-torch: rank process {os.getpid()}: the launcher (pid {parent}) is gone; exiting.",
                      file=sys.stderr, flush=True)
                os._exit(143)

    thread = threading.Thread(target=watch, name="xai-torch-parent-watch", daemon=True)
    thread.start()
    return thread


@dataclass
class Loaded:
    """The decoded images of one shard: ``images[j]`` is ``None`` where ``errors[j]`` says why
    image ``j`` could not be used (its id and reason)."""

    shard: int
    images: list[Optional[torch.Tensor]]
    labels: list[int]
    errors: list[Optional[tuple[str, str]]]


def load_images(source: Source, shard: int, positions: Sequence[Optional[int]], ids: Sequence[str]) -> Loaded:
    """Decode the images of one shard (``positions``: index in ``source``, ``None`` for an
    image no longer there); failures are recorded, not raised (``BadImage`` gives its id and
    reason, any other exception is the image's too)."""
    images: list[Optional[torch.Tensor]] = []
    labels: list[int] = []
    errors: list[Optional[tuple[str, str]]] = []
    for pos, id_ in zip(positions, ids):
        image: Optional[torch.Tensor] = None
        error: Optional[tuple[str, str]] = None
        if pos is None:
            error = (id_, "the file is no longer in the dataset")
        else:
            try:
                image = source.get(pos)
            except Exception as err:  # noqa: BLE001 - any decoding failure is this image's
                reason = getattr(err, "reason", None)
                error = (id_, reason if isinstance(reason, str) else f"{type(err).__name__}: {err}")
        images.append(image)
        errors.append(error)
        labels.append(source.label(pos) if pos is not None else -1)
    return Loaded(shard, images, labels, errors)


class _Shards(torch.utils.data.Dataset[Loaded]):
    def __init__(self, source: Source, plan: Any, shards: Sequence[int]) -> None:
        self.source, self.plan, self.shards = source, plan, list(shards)

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, j: int) -> Loaded:
        k = self.shards[j]
        return load_images(self.source, k, self.plan.positions(k), self.plan.ids(k))


def _as_is(item: Any) -> Any:  # each item is one shard already: nothing to collate
    return item


def prefetch(source: Source, plan: Any, shards: Sequence[int], workers: int) -> Iterator[Loaded]:
    """The decoded images of ``shards``, in order: a DataLoader with ``workers`` processes
    decoding one shard ahead each (``0``: decoded in this process, on demand). One, not torch's
    default two: a shard of 64 images at 224 px is 38 MB in shared memory, and a container's
    ``/dev/shm`` is often 64 MB."""
    if workers <= 0 or not shards:
        for k in shards:
            yield load_images(source, k, plan.positions(k), plan.ids(k))
        return
    loader = torch.utils.data.DataLoader(_Shards(source, plan, shards), batch_size=None, shuffle=False,
                                         num_workers=min(workers, len(shards)), collate_fn=_as_is,
                                         prefetch_factor=1)
    yield from loader
