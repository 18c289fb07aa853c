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


def table(title: str, medians: dict[str, float], rows: list[tuple]) -> str:
    """rows: ``(label, ours key, reference key or None, max ratio vs floor or None[, max ratio vs
    reference])``; a row's status is ``ok`` only when every target it names is met."""
    lines = [title, f"{'method':<30}{'median ms':>10}{'x floor':>9}{'x ref':>8}  {'targets':<22}status"]
    floor = medians["floor"]
    lines.append(f"{'floor (plain torch)':<30}{floor * 1e3:>10.1f}{1.0:>9.2f}")
    for label, ours, ref, target, *rest in rows:
        ref_target = rest[0] if rest else None
        r_floor = medians[ours] / floor
        r_ref = medians[ours] / medians[ref] if ref else float("nan")
        checks, names = [], []
        if target is not None:
            checks.append(r_floor <= target)
            names.append(f"floor<={target:.2f}")
        if ref_target is not None:
            checks.append(r_ref <= ref_target)
            names.append(f"ref<={ref_target:.2f}")
        status = "" if not checks else ("ok" if all(checks) else "MISSED")
        lines.append(f"{label:<30}{medians[ours] * 1e3:>10.1f}{r_floor:>9.2f}{r_ref:>8.2f}  "
                     f"{' '.join(names):<22}{status}")
        if ref:
            lines.append(f"{'  reference: ' + ref:<30}{medians[ref] * 1e3:>10.1f}{medians[ref] / floor:>9.2f}")
    return "\n".join(lines)
