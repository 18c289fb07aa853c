"""The small-op paths on a quiet and on a busy machine, before and after the scoped thread
counts (issue 23, item 1).

``busy()`` starts one spinning process per core. Each path runs "before" (torch's default
intra-op threads, the previous code where it changed) and "after" (today's code: compiled
loops and/or ``xt.threads.small_ops()``), interleaved, medians; the ratio before / after is
what matters, quiet and busy:

* XRAI ranking, full and fast: before = the tensor-op ranking at the default thread count;
  after = ``xai_torch.region.xrai_rank.rank`` (one compiled loop on the CPU).
* segmentation: XRAI's six Felzenszwalb scales + dilated masks; before = six scikit-image
  runs in a thread pool and the torch scatter dilation, after = ``segmentation.multiscale``.
* PIC curve: ``pic_curve`` without and with its ``small_ops`` scope.
* LIME ridge / KernelSHAP solves and the coalition design: the public functions without and
  inside ``small_ops()`` (when their module already scopes itself, both rows are scoped).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

import xai_torch as xt
from xai_torch import segmentation as seg
from xai_torch.metrics.pic_curve import pic_curve
from xai_torch.region import xrai_rank
from xai_torch.region.kernel_shap import constrained_wls, shapley_coalitions
from xai_torch.region.lime import weighted_ridge
from xai_torch.threads import small_ops

from benchmarks.common import add_row, busy

#: python -m benchmarks runs it once: it times quiet and busy itself
BUSY_PASS = False


def _old_multiscale(x: torch.Tensor) -> torch.Tensor:
    """The segmentation before: scikit-image once per scale in threads, torch scatter dilation."""
    from skimage import segmentation

    im = x[0].detach().double().permute(1, 2, 0).numpy()
    im = (im - im.min()) / (im.max() - im.min()) * 2 - 1

    def one(scale: int) -> torch.Tensor:
        lab = torch.from_numpy(segmentation.felzenszwalb(im, scale=scale, sigma=seg.XRAI_SIGMA,
                                                         min_size=seg.XRAI_MIN_SIZE, channel_axis=-1).astype(np.int64))
        return seg.dilated_label_masks(lab, 0, int(lab.max()), seg.XRAI_DILATION)

    with ThreadPoolExecutor(max_workers=min(len(seg.XRAI_SCALES), os.cpu_count() or 1)) as pool:
        return torch.cat(list(pool.map(one, seg.XRAI_SCALES)))


def _scoped(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with small_ops():
            return fn()
    return run


def paths() -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """name -> (before, after)."""
    x = xt.zoo.preprocess(xt.zoo.image("chelsea"))
    g = torch.Generator().manual_seed(0)
    attr = (torch.randn(x.shape, generator=g) * x.abs())[0].max(0).values.double()
    masks = seg.multiscale(x)[0]
    ent = torch.sort(torch.rand(8, 29, generator=g, dtype=torch.float64), dim=1).values
    scores = torch.rand(8, 29, generator=g, dtype=torch.float64)
    z = (torch.rand(1, 300, 50, generator=g) > 0.5).double()
    y = torch.randn(1, 300, 1, generator=g, dtype=torch.float64)
    w = torch.rand(1, 300, generator=g, dtype=torch.float64)
    total = torch.ones(1, 1, dtype=torch.float64)
    feats = torch.ones(1, 50, dtype=torch.bool)
    return {
        "XRAI ranking full": (lambda: xrai_rank._torch_full(attr, masks),
                              lambda: xrai_rank.rank(attr, masks, "full")),
        "XRAI fast walk": (lambda: xrai_rank._torch_fast(attr, masks), lambda: xrai_rank.rank(attr, masks, "fast")),
        "segmentation (6 scales)": (lambda: _old_multiscale(x), lambda: seg.multiscale(x)),
        "PIC curve (8 images)": (lambda: pic_curve.__wrapped__(ent, scores),  # type: ignore[attr-defined]
                                 lambda: pic_curve(ent, scores)),
        "LIME ridge solve": (lambda: weighted_ridge(z, y, w), _scoped(lambda: weighted_ridge(z, y, w))),
        "KernelSHAP design": (lambda: shapley_coalitions(50, 2048, torch.Generator().manual_seed(0)),
                              _scoped(lambda: shapley_coalitions(50, 2048, torch.Generator().manual_seed(0)))),
        "KernelSHAP solve": (lambda: constrained_wls(z, y, w, total, feats),
                             _scoped(lambda: constrained_wls(z, y, w, total, feats))),
    }


def _median(fn: Callable[[], object], repeats: int) -> float:
    t = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        t.append(time.perf_counter() - start)
    return statistics.median(t)


def run(repeats: int = 5) -> str:
    title = (f"small-op paths, before/after scoped threads, CPU, {torch.get_num_threads()} threads, "
             f"{os.cpu_count()} cores, median of {repeats}")
    lines = [title, f"{'path':<26}{'quiet before':>13}{'after':>9}{'ratio':>8}{'busy before':>13}{'after':>9}"
                    f"{'ratio':>8}  (ms; ratio = before / after)"]
    for name, (before, after) in paths().items():
        before(), after()  # warm-up (numba loads its compiled kernels)
        ms = {}
        for load in ("quiet", "busy"):
            with busy() if load == "busy" else contextlib.nullcontext():
                for _ in range(2):  # interleaved halves
                    for tag, fn in (("before", before), ("after", after)):
                        ms.setdefault((load, tag), []).append(_median(fn, max(1, repeats // 2)) * 1e3)
        q = (statistics.median(ms[("quiet", "before")]), statistics.median(ms[("quiet", "after")]))
        b = (statistics.median(ms[("busy", "before")]), statistics.median(ms[("busy", "after")]))
        lines.append(f"{name:<26}{q[0]:>13.1f}{q[1]:>9.1f}{q[0] / q[1]:>7.1f}x{b[0]:>13.1f}{b[1]:>9.1f}"
                     f"{b[0] / b[1]:>7.1f}x")
        add_row(title, f"{name} quiet", q[1], float("nan"), q[1] / q[0], "before (default threads)")
        add_row(title, f"{name} busy", b[1], float("nan"), b[1] / b[0], "before (default threads)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
