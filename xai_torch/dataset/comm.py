"""The process group of a run: rank, world size and an all-gather of Python objects."""
from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Optional, TypeVar

from ..errors import XaiError
from .config import CollectiveError, RankFailure

#: how long a rank may wait for the others at the end of a round (slow methods, big shards)
ROUND_TIMEOUT = datetime.timedelta(hours=24)
T = TypeVar("T")


class Comm:
    """Rank, world size and an all-gather of Python objects (a gloo group, also under NCCL).

    Joins the process group from torchrun's environment (NCCL for CUDA, gloo otherwise)
    unless one is already initialised; a single process without torchrun is rank 0 of 1."""

    def __init__(self, device_type: str) -> None:
        import torch.distributed as dist

        self.dist, self.owned = dist, False
        self.group: Optional[dist.ProcessGroup] = None
        launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        if launched and not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=ROUND_TIMEOUT)
            self.owned = True
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if dist.get_backend() != "gloo" and self.world > 1:
                group = dist.new_group(backend="gloo", timeout=ROUND_TIMEOUT)  # every rank is a member
                self.group = group if isinstance(group, dist.ProcessGroup) else None
        else:
            self.rank, self.world = 0, 1

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order (blocks until all ranks call it)."""
        if self.world == 1:
            return [obj]
        out: list[T] = [obj] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def close(self) -> None:
        """Leave the process group if this object joined it."""
        if self.owned and self.dist.is_initialized():
            self.dist.destroy_process_group()


def agree(comm: Comm, fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; if it raises on any, raise the first error on all of them."""
    got: list[T] = []
    err: Optional[tuple[str, str]] = None
    try:
        got.append(fn())
    except XaiError as e:
        err = ("xai", str(e))
    except Exception as e:  # noqa: BLE001 - reported to every rank
        err = ("other", f"{type(e).__name__}: {e}")
    for rank, reported in enumerate(comm.gather(err)):
        if reported is not None:
            kind, text = reported
            where = f"rank {rank}: " if comm.world > 1 else ""
            raise CollectiveError(where + text) if kind == "xai" else RankFailure(where + text, rank=rank)
    return got[0]
