"""XRAI segmentation + ranking on one 224 px photo, CPU, given the base attribution.

Ours (``xt.XRAI`` with ``base_attribution=``: multiscale Felzenszwalb with the six scales in
threads, dilation by scattering the label maps, the greedy as incremental updates of a
regions x pixels matrix) against PAIR saliency's ``XRAI.GetMaskWithDetails`` on the same
image and base attribution, in the same run; the outputs are checked equal first. Target: at
least 10x faster than PAIR ("full"). There is no plain-torch floor for this work.
"""
from __future__ import annotations

import numpy as np
import torch

import xai_torch as xt
from xai_torch.region.xrai import XRAI

from benchmarks.common import PEAKS, add_row, compare


def run(repeats: int = 7) -> str:
    x = xt.zoo.preprocess(xt.zoo.image("chelsea"))
    base = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * x.abs()
    lines = [f"XRAI segmentation + ranking, chelsea 224 px, CPU, {torch.get_num_threads()} threads, "
             f"median of {repeats}",
             f"{'algorithm':<10}{'ours ms':>10}{'PAIR ms':>10}{'speed-up':>10}  target     status"]
    try:
        import saliency.core as sc
    except ImportError:
        return "\n".join(lines + ["saliency is not installed: nothing to compare with"])
    img, attr = x[0].permute(1, 2, 0).numpy(), base[0].permute(1, 2, 0).numpy()
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # scores only (a 3-class toy)
    for algorithm in ("full", "fast"):
        ours = XRAI(model, algorithm=algorithm)
        params = sc.XRAIParameters(algorithm=algorithm, return_xrai_segments=True)

        def pair(params=params):
            return sc.XRAI().GetMaskWithDetails(img, None, base_attribution=attr, extra_parameters=params)

        def mine(ours=ours):
            return ours.explain(x, base_attribution=base)

        same = np.array_equal(mine().ranks[0, 0].numpy(), pair().segments)
        medians = compare({"ours": mine, "pair": pair}, repeats=repeats, warmup=1)
        speed = medians["pair"] / medians["ours"]
        target = "" if algorithm == "fast" else ">= 10x"
        status = ("ok" if speed >= 10 else "MISSED") if target else ""
        add_row(lines[0], f"xt.XRAI {algorithm}", medians["ours"] * 1e3, float("nan"), 1 / speed, "PAIR XRAI",
                PEAKS.get("ours", float("nan")), status)
        lines.append(f"{algorithm:<10}{medians['ours'] * 1e3:>10.0f}{medians['pair'] * 1e3:>10.0f}{speed:>9.1f}x  "
                     f"{target:<10} {status}{'' if same else '  (OUTPUT DIFFERS)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
