"""One rank's share of a run, without any collective: claim a shard, verify what is on disk or
explain it, record it in the manifest, release it; own shards first (``range(rank, S, world)``,
decoded ahead by a DataLoader), then whatever is left (a slower, stalled or dead rank's), then
wait - a bounded time - for shards other ranks still hold."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from .compute import ImageError, ShardWorker
from .config import IncompleteRun, RankFailure
from .engine import Launch, Loaded, load_images, prefetch
from .layout import Plan, record_shard, run_of
from .locks import Claims, Ledger
from .shards import Record, shard_name, verify_shard
from .sources import Source

#: how often a rank with nothing left to claim looks at the manifest again (seconds)
POLL = 0.25


def job_done(state: Optional[dict[str, Any]], job: str) -> set[int]:
    """Shards verified or computed by job ``job`` so far."""
    if state is None:
        return set()
    run = run_of(state, job)
    return set(run["reused"]) | set(run["computed"])


class RankLoop:
    """What one rank does in a run (see the module docstring); :meth:`run` does it."""

    def __init__(self, out: Path, plan: Plan, source: Source, worker: ShardWorker, ledger: Ledger, claims: Claims,
                 launch: Launch, *, config_hash: str, workers: int, finish_timeout: Optional[float],
                 fault: Optional[str] = None, tick: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.out, self.plan, self.source, self.worker = out, plan, source, worker
        self.ledger, self.claims = ledger, claims
        self.launch, self.config_hash, self.workers, self.finish_timeout = launch, config_hash, workers, finish_timeout
        self.fault = fault.split("@") if fault else None
        self.tick = tick
        self.written, self.longest = 0, 0.0

    # -- the rank's plan ------------------------------------------------------------------
    def run(self) -> None:
        """Do this rank's shards, then help with the rest, then wait for what others hold.

        Raises:
            RankFailure: a shard failed here (an image that does not load with ``on_error="stop"``,
                an explainer error); the manifest's ``"error"`` says the same.
            IncompleteRun: shards held by another rank did not finish within the finish timeout.
        """
        rank, world, num = self.launch.rank, self.launch.world, self.plan.num_shards
        state = self.ledger.read()
        done = job_done(state, self.launch.job)
        recorded = (state or {}).get("shards", {})
        todo = []
        for k in range(rank, num, world):  # verify what is on disk first: nothing decoded for it
            if k in done:
                continue
            if str(k) in recorded or (self.out / shard_name(k)).exists():
                if self.attempt(k, compute=False) != "todo":
                    continue
            todo.append(k)
        for loaded in prefetch(self.source, self.plan, todo, self.workers):
            self.attempt(loaded.shard, loaded)
        self.finish()

    def finish(self) -> None:
        """Take any shard still free; wait while others hold the rest (bounded, see the class)."""
        since, seen = time.monotonic(), -1
        while True:
            state = self.ledger.read()
            done = job_done(state, self.launch.job)
            if self.tick is not None and state is not None:
                self.tick(state)
            left = [k for k in range(self.plan.num_shards) if k not in done]
            if not left:
                return
            progressed = any([self.attempt(k) == "done" for k in left])
            if progressed or len(done) != seen:
                since, seen = time.monotonic(), len(done)
                if progressed:
                    continue
            limit = self.finish_timeout if self.finish_timeout is not None else max(60.0, 3 * self._slowest(state))
            if time.monotonic() - since > limit:
                raise self._incomplete(left, limit)
            time.sleep(POLL)

    def _slowest(self, state: Optional[dict[str, Any]]) -> float:
        """The longest a shard took so far, here or in any rank's record (seconds)."""
        times = [r.get("seconds") for r in (state or {}).get("shards", {}).values() if isinstance(r, dict)]
        return max([self.longest, *(float(t) for t in times if isinstance(t, (int, float)))])

    # -- one shard ------------------------------------------------------------------------
    def attempt(self, k: int, loaded: Optional[Loaded] = None, compute: bool = True) -> str:
        """Claim shard ``k`` and make sure it is done: ``"done"`` (verified on disk or explained
        now), ``"held"`` (another rank has it) or ``"todo"`` (``compute=False`` and not on disk)."""
        if not self.claims.take(k):
            return "held"
        try:
            self._fault("stop", k)
            self._fault("hang", k)
            state = self.ledger.read()
            if k in job_done(state, self.launch.job):
                return "done"
            rec = (state or {}).get("shards", {}).get(str(k))
            found = verify_shard(self.out, k, rec if isinstance(rec, dict) else None, self.config_hash,
                                 self.plan.ids(k))
            if found is not None:
                self._record(k, found, "reused")
                return "done"
            if not compute:
                return "todo"
            ids = self.plan.ids(k)
            if loaded is None:
                loaded = load_images(self.source, k, self.plan.positions(k), ids)
            try:
                record = self.worker.compute(loaded, self.plan.bounds(k)[0], ids)
            except ImageError as err:
                raise self._failure(k, err) from err
            except Exception as err:  # noqa: BLE001 - any failure stops the rank, named
                raise self._failure(k, ImageError(None, f"{type(err).__name__}: {err}")) from err
            self.written += 1
            self.longest = max(self.longest, float(record["seconds"]))
            self._fault("exit", self.written)  # tests: die after the file, before the record
            self._record(k, record, "computed")
            self._fault("sleep", self.written)
            return "done"
        finally:
            self.claims.give_back(k)

    def _record(self, k: int, record: Record, kind: str) -> None:
        """Record shard ``k`` (``kind``: ``"computed"`` or ``"reused"``) and its quarantined images."""
        def change(state: Optional[dict[str, Any]]) -> tuple[Optional[dict[str, Any]], None]:
            assert state is not None  # created when the job started
            run = record_shard(state, self.source, self.plan, self.launch.job, k, record, kind)
            state["complete"] = len(set(run["reused"]) | set(run["computed"])) == state["num_shards"]
            if state["complete"]:
                run["finished"] = True
                state.pop("error", None)
            if self.tick is not None:
                self.tick(state)
            return state, None

        self.ledger.update(change)

    def _note(self, message: str) -> None:
        def change(state: Optional[dict[str, Any]]) -> tuple[Optional[dict[str, Any]], None]:
            if state is not None:
                state["error"] = message
            return state, None

        self.ledger.update(change)

    def _failure(self, k: int, err: ImageError) -> RankFailure:
        ids = self.plan.ids(k)
        where = f"image {err.image!r}" if err.image is not None else f"images {ids[0]!r}..{ids[-1]!r}"
        message = f"rank {self.launch.rank} failed on {where} (shard {k}): {err.message}"
        self._note(message)
        return RankFailure(message, rank=self.launch.rank, shard=k, image=err.image)

    def _incomplete(self, left: list[int], limit: float) -> IncompleteRun:
        shown = ", ".join(map(str, left[:10])) + (", ..." if len(left) > 10 else "")
        pids = sorted({p for p in (self.claims.holder(k) for k in left[:10]) if p is not None})
        by = f" (pid {', '.join(map(str, pids))})" if pids else ""
        message = (f"rank {self.launch.rank}: shard(s) {shown} are held by another rank{by} that has made no progress "
                   f"for {limit:.0f} s (stalled, or slower than the finish timeout); every other shard is done "
                   "and kept. Stopping: rerun the same command to finish the job.")
        self._note(message)
        return IncompleteRun(message, left)

    def _fault(self, kind: str, value: int) -> None:
        """Test hooks (``--test-fault``): ``stop@K`` stops this process (SIGSTOP) holding shard
        ``K``, ``hang@K`` sleeps holding it (a hung rank), ``exit@N`` exits (status 75) after
        writing its ``N``-th shard, before recording it, ``sleep@N`` sleeps after recording it."""
        if self.fault is None or self.fault[0] != kind or int(self.fault[1]) != value:
            return
        if kind == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif kind == "exit":
            os._exit(75)
        else:
            time.sleep(600)
