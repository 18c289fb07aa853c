"""XRAI segmentation + ranking on one 224 px photo, CPU, given the base attribution, on a quiet
and on a busy machine (``busy()``: one spinning process per core, started by the benchmark).

Ours (``xt.XRAI`` with ``base_attribution=``: the six Felzenszwalb scales from one sorted graph
and the ranking as compiled loops, glue under ``small_ops()``) against PAIR saliency's
``XRAI.GetMaskWithDetails`` on the same image and base attribution, in the same run; the maps
and ranks are checked identical first and the check is printed. Target: at least 10x faster
than PAIR, quiet and busy. There is no plain-torch floor for this work.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import xai_torch as xt
from xai_torch.region.xrai import XRAI

from benchmarks.common import add_row, busy

#: python -m benchmarks runs it once: it times quiet and busy itself
BUSY_PASS = False


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run interleaved."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run(repeats: int = 3) -> str:
    x = xt.zoo.preprocess(xt.zoo.image("chelsea"))
    base = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * x.abs()
    title = (f"XRAI segmentation + ranking, chelsea 224 px, CPU, {torch.get_num_threads()} threads, "
             f"median of {repeats}, quiet and busy")
    lines = [title, f"{'algorithm':<10}{'load':<7}{'ours ms':>10}{'PAIR ms':>10}{'speed-up':>10}  target     "
                    "status  identical map"]
    try:
        import saliency.core as sc
    except ImportError:
        return "\n".join(lines + ["saliency is not installed: nothing to compare with"])
    img, attr = x[0].permute(1, 2, 0).numpy(), base[0].permute(1, 2, 0).numpy()
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # scores only
    for algorithm in ("full", "fast"):
        ours = XRAI(model, algorithm=algorithm)
        params = sc.XRAIParameters(algorithm=algorithm, return_xrai_segments=True)

        def pair(params: object = params) -> object:
            return sc.XRAI().GetMaskWithDetails(img, None, base_attribution=attr, extra_parameters=params)

        def mine(ours: XRAI = ours) -> object:
            return ours.explain(x, base_attribution=base)

        res, ref = mine(), pair()  # also the warm-up (numba loads its compiled kernels)
        same = (np.array_equal(res.ranks[0, 0].numpy(), ref.segments)
                and np.allclose(res.attributions[0, 0].numpy(), ref.attribution_mask, rtol=1e-6, atol=1e-9))
        for load in ("quiet", "busy"):
            with busy() if load == "busy" else contextlib.nullcontext():
                medians = timed({"ours": mine, "pair": pair}, repeats)
            speed = medians["pair"] / medians["ours"]
            status = "ok" if speed >= 10 else "MISSED"
            add_row(title, f"xt.XRAI {algorithm} {load}", medians["ours"] * 1e3, float("nan"), 1 / speed,
                    "PAIR XRAI", float("nan"), status)
            lines.append(f"{algorithm:<10}{load:<7}{medians['ours'] * 1e3:>10.0f}{medians['pair'] * 1e3:>10.0f}"
                         f"{speed:>9.1f}x  {'>= 10x':<10} {status:<7} {'yes' if same else 'NO (OUTPUT DIFFERS)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
