"""Timing helpers: interleaved repeats, medians, peak memory, ratio tables, and the one summary
table that ``python -m benchmarks`` prints at the end (every row any benchmark's ``table``
made, with the machine it ran on)."""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import torch

#: peak memory (MB) of the last ``compare`` run of each function, by name
PEAKS: dict[str, float] = {}
#: rows of every ``table`` call in this process: (benchmark title, label, ms, x floor, x ref, ref, peak MB, status,
#: load), load being "quiet" or "busy" (the phase that ``python -m benchmarks`` runs, see :data:`LOAD`)
SUMMARY: list[tuple] = []
#: the machine's load while the rows being added now were measured: ``python -m benchmarks`` runs every
#: benchmark once quiet and once inside :func:`busy`, and sets this for each phase
LOAD = ["quiet"]


def device() -> torch.device:
    """Where the benchmarks run: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine() -> str:
    """One line naming the machine the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def _mmap_threshold(size: int) -> None:
    """glibc's ``M_MMAP_THRESHOLD``: blocks of this size or more are mmapped and given back to
    the system on free. :func:`peak_memory` lowers it to 1 MB for its one measured call, so the
    resident set follows the memory in use and its high-water mark is the call's peak, then sets
    32 MB, where glibc's own threshold settles (a low threshold costs page faults: Lite0 ran
    1.8x slower with 1 MB)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, size)
    except (OSError, AttributeError):
        pass


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Memory one call of ``fn`` takes at its peak, in MB, above what was in use before it:
    CUDA memory allocated on a GPU, else the process's resident set (its high-water mark is
    reset through ``/proc/self/clear_refs`` first; NaN where Linux does not allow that). Memory
    the allocator kept from before the call and reuses is not counted: a lower bound."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _mmap_threshold(1 << 20)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _rss_mb("VmRSS")
        fn()
        return _rss_mb("VmHWM") - before
    except OSError:
        return float("nan")
    finally:
        _mmap_threshold(32 << 20)


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
    for name, fn in fns.items():
        PEAKS[name] = peak_memory(fn, device)
    return {name: statistics.median(t) for name, t in times.items()}


def table(title: str, medians: dict[str, float], rows: list[tuple]) -> str:
    """rows: ``(label, ours key, reference key or None, max ratio vs floor or None[, max ratio vs
    reference])``; a row's status is ``ok`` only when every target it names is met."""
    lines = [title, f"{'method':<30}{'median ms':>10}{'x floor':>9}{'x ref':>8}{'peak MB':>9}  {'targets':<22}status"]
    floor = medians["floor"]
    floor_peak = PEAKS.get("floor", float("nan"))
    lines.append(f"{'floor (plain torch)':<30}{floor * 1e3:>10.1f}{1.0:>9.2f}{'':>8}{floor_peak:>9.0f}")
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
        peak = PEAKS.get(ours, float("nan"))
        lines.append(f"{label:<30}{medians[ours] * 1e3:>10.1f}{r_floor:>9.2f}{r_ref:>8.2f}{peak:>9.0f}  "
                     f"{' '.join(names):<22}{status}")
        SUMMARY.append((title, label, medians[ours] * 1e3, r_floor, r_ref, ref or "", peak, status, LOAD[0]))
        if ref:
            ref_peak = PEAKS.get(ref, float("nan"))
            lines.append(f"{'  reference: ' + ref:<30}{medians[ref] * 1e3:>10.1f}{medians[ref] / floor:>9.2f}"
                         f"{'':>8}{ref_peak:>9.0f}")
    return "\n".join(lines)


def add_row(title: str, label: str, ms: float, x_floor: float, x_ref: float, ref: str, peak: float = float("nan"),
            status: str = "") -> None:
    """A summary row for benchmarks that do not go through :func:`table`."""
    SUMMARY.append((title, label, ms, x_floor, x_ref, ref, peak, status, LOAD[0]))


def summary() -> str:
    """Every row of this run in one table, with the machine it came from: a row measured both quiet
    and busy (``python -m benchmarks`` runs both) shows both ratios side by side."""
    busy_rows = {(r[0], r[1]): r for r in SUMMARY if r[8] == "busy"}
    lines = [f"SUMMARY on {machine()} (quiet: nothing else started; busy: one spinning process per core)",
             f"{'benchmark':<44}{'method':<28}{'ms':>9}{'x floor':>9}{'x ref':>8}{'peak MB':>9}"
             f"{'busy ms':>9}{'x floor':>9}{'x ref':>8}  {'reference':<26}status (quiet / busy)"]
    for title, label, ms, r_floor, r_ref, ref, peak, status, load in SUMMARY:
        if load == "busy" and any(r[8] == "quiet" and (r[0], r[1]) == (title, label) for r in SUMMARY):
            continue  # printed beside its quiet row
        short = title if len(title) <= 42 else title[:41] + "…"
        b = busy_rows.get((title, label)) if load == "quiet" else None
        busy_cols = (f"{b[2]:>9.1f}{b[3]:>9.2f}{b[4]:>8.2f}" if b is not None else f"{'':>26}")
        if load == "busy":  # measured busy only
            busy_cols, ms, r_floor, r_ref = f"{ms:>9.1f}{r_floor:>9.2f}{r_ref:>8.2f}", float("nan"), float("nan"), \
                float("nan")
        statuses = f"{status or '-'} / {b[7] or '-'}" if b is not None else status
        lines.append(f"{short:<44}{label:<28}{ms:>9.1f}{r_floor:>9.2f}{r_ref:>8.2f}{peak:>9.0f}{busy_cols}  "
                     f"{ref:<26}{statuses}")
    return "\n".join(lines)


def gradient_floor(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   target: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The plain-torch floor of a gradient method: one forward and one backward of the targets'
    logits with respect to a fresh copy of ``x``."""
    def floor() -> torch.Tensor:
        xg = x.detach().clone().requires_grad_(True)
        out = model(xg)
        return torch.autograd.grad(out.gather(1, target[:, None]).sum(), xg)[0]
    return floor


@contextlib.contextmanager
def busy(processes: int | None = None) -> Iterator[int]:
    """A busy machine for the block: ``processes`` (default ``os.cpu_count()``) background
    Python processes that spin on one core each, killed on exit. Benchmarks time each path
    quiet and inside ``busy()`` and print both ratios: a shared node, several ``torchrun``
    ranks or DataLoader workers make every core busy, where intra-op threads that wait for
    each other cost far more than on a quiet machine."""
    n = processes if processes is not None else os.cpu_count() or 1
    spin = "while True:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(0.3)  # the spinners are running before the first measurement
        yield n
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
