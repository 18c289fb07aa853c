"""The leaderboard (issue 21 item 7): every default-demo method x every catalogue metric on the
packaged EfficientNet-Lite0 and three packaged photos, with bootstrap intervals, model calls and
the reliability figures, written to ``out/leaderboard`` (markdown, HTML, JSON).

On a CPU each method runs with its demo budget and the metrics are
:data:`xai_torch.leaderboard.CPU_METRICS` (target: the whole run in about 5 minutes on 2 quiet
cores); on a GPU every metric that needs no ground-truth masks runs.

``python -m benchmarks evaluate`` (``run(out=..., methods=[...], metrics=[...])``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Union

from benchmarks.common import add_row, device

#: python -m benchmarks runs it once: it measures explanations, not speed, so a busy pass adds nothing
BUSY_PASS = False


def run(out: Union[str, Path] = "out/leaderboard", methods: Optional[list[str]] = None,
        metrics: Optional[list[str]] = None, bootstrap: int = 1000, verbose: bool = True) -> str:
    from xai_torch.leaderboard import packaged, to_markdown, write

    dev = device()
    start = time.perf_counter()
    board = packaged(methods, metrics, device=dev, bootstrap=bootstrap,
                     log=(lambda line: print(f"[{time.perf_counter() - start:7.1f} s] {line}", flush=True))
                     if verbose else None)
    wall = time.perf_counter() - start
    paths = write(board, out, title=f"xai_torch leaderboard: EfficientNet-Lite0 on {dev.type}")
    title = f"leaderboard ({len(board.methods)} methods x {len(board.metrics)} metrics, {dev.type})"
    budget = 300.0
    add_row(title, "whole run", 1e3 * wall, float("nan"), float("nan"), "",
            status="ok" if wall <= budget or dev.type != "cpu" else "MISSED")
    explain_s = sum(board.seconds.values())
    metric_s = sum(v for row in board.metric_seconds.values() for v in row.values())
    return (f"{title}: {wall:.1f} s wall (explaining {explain_s:.1f} s, metrics {metric_s:.1f} s; "
            f"target <= {budget:.0f} s on 2 quiet CPU cores)\nwritten: {', '.join(str(p) for p in paths)}\n\n"
            + to_markdown(board))


if __name__ == "__main__":
    print(run())
