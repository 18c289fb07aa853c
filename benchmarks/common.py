"""Timing helpers: interleaved repeats, medians, ratio tables."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(fns: dict[str, Callable[[], object]], repeats: int = 15, warmup: int = 3,
            device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Median seconds of each function; the candidates run interleaved so that machine noise
    hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def table(title: str, medians: dict[str, float], rows: list[tuple[str, str, str | None, float | None]]) -> str:
    """rows: (label, ours key, reference key or None, target ratio vs floor or None)."""
    lines = [title, f"{'method':<28}{'median ms':>10}{'x floor':>9}{'x ref':>8}{'target':>9}  status"]
    floor = medians["floor"]
    lines.append(f"{'floor (plain torch)':<28}{floor * 1e3:>10.1f}{1.0:>9.2f}")
    for label, ours, ref, target in rows:
        r_floor = medians[ours] / floor
        r_ref = medians[ours] / medians[ref] if ref else float("nan")
        status = "" if target is None else ("ok" if r_floor <= target else "MISSED")
        tgt = f"<={target:.2f}" if target else ""
        lines.append(f"{label:<28}{medians[ours] * 1e3:>10.1f}{r_floor:>9.2f}{r_ref:>8.2f}{tgt:>9}  {status}")
        if ref:
            lines.append(f"{'  reference: ' + ref:<28}{medians[ref] * 1e3:>10.1f}{medians[ref] / floor:>9.2f}")
    return "\n".join(lines)
