"""`xai-torch demo` as a newcomer runs it (`make demo`): the wall time and each method's share.

Runs the default demo (every family, each slow method with its CPU budget, 2 photos, 9-point
deletion / insertion curves) on the GPU if any, else the CPU, into a temporary folder, and
prints per method: seconds explaining (wall and CPU time of this process), seconds with its
pictures and deletion / insertion curves and that as a share of the demo's wall time, and the estimate the demo printed
before starting (one timed forward and gradient x the method's model calls). Target: the
whole demo in at most 120 s on 2 quiet CPU cores (issue 13).

``python -m benchmarks demo``; ``run(full=True)`` times ``make demo-full`` instead (long on a CPU).
"""
from __future__ import annotations

import tempfile
import time
from typing import Optional

import torch

from benchmarks.common import add_row, device


def run(full: bool = False, images: Optional[list[str]] = None, methods: Optional[list[str]] = None) -> str:
    from xai_torch.cli import demo

    dev = device()
    title = f"xai-torch demo{' --full' if full else ''} on {dev.type} ({torch.get_num_threads()} threads)"
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = demo(out, images, methods, device=dev, full=full, progress=False)
        wall = time.perf_counter() - start
    methods = summary["methods"]
    # a method's share of the wall time: explaining, its pictures and its deletion / insertion curves
    lines = [title, f"{'method':<22}{'explain s':>10}{'cpu s':>8}{'with curves s':>14}{'estimate s':>11}"
                    f"{'share %':>9}  budget"]
    explained = sum(m["seconds"] for m in methods.values())
    for name, info in methods.items():
        step = info.get("step_seconds", info["seconds"])
        lines.append(f"{name:<22}{info['seconds']:>10.2f}{info.get('cpu_seconds', float('nan')):>8.1f}"
                     f"{step:>14.1f}{info.get('estimate_seconds', float('nan')):>11.1f}{100 * step / wall:>9.1f}"
                     f"  {info.get('budget', '')}")
        add_row(title, name, 1e3 * step, float("nan"), float("nan"), "", status="")
    lines.append(f"{'explaining (sum)':<22}{explained:>10.1f}")
    lines.append(f"{'whole demo (wall)':<22}{wall:>10.1f}{'':>22}{summary['estimate_seconds']:>11.1f}"
                 f"  (target <= 120 s on 2 quiet CPU cores; the estimate counts model time only)")
    add_row(title, "whole demo", 1e3 * wall, float("nan"), float("nan"), "",
            status="ok" if wall <= 120 or dev.type != "cpu" else "MISSED")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
