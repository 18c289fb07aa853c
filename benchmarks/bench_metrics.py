"""Deletion / insertion: speed against the floor, and the AUC of every method.

Timing (8 images at 224 px: the six packaged photos and two of them mirrored, the packaged
EfficientNet-Lite0, CPU or the model's device):

* ours: ``xt.metrics.deletion`` / ``insertion`` with a given map, ``step = 224 * 8`` (RISE's
  batched notebook setting: 29 points per curve), automatic chunk size. This includes the
  clean forward that fixes the target, building every curve image on the device, and scoring.
* floor: the same number of plain forwards (the 8 clean images and the 8 x 29 curve images,
  made once outside the timing) in chunks of the same size. Target: ours <= 1.1 x floor.

Table: deletion (lower is better) and insertion (higher is better) AUC, mean over three
packaged photos (chelsea, coffee, motorcycle), for every method of the command line
(``xai_torch.presets.METHODS``) with its demo settings, and a uniform random map as the chance
level. On a CPU the sampling methods run with smaller budgets (``CPU_BUDGETS``, printed in the
table) and Score-CAM (1280 forwards per image) is left out unless named. Pixel attributions
shown in grayscale (gradients, guided backprop, IG...) are ranked by ``|a|`` summed over
channels (``reduce="abs"``), signed ones (G x I, LIME, KernelSHAP, occlusion) and maps by their
signed value. ``XT_BENCH_METHODS=gradient,gradcam,...`` runs part of the table.
"""
from __future__ import annotations

import os
import sys
import time

import torch

import xai_torch as xt
from xai_torch import presets
from xai_torch.imageops import rise_blur
from xai_torch.metrics.faithfulness import causal_images

from benchmarks.common import compare, table

STEP = 224 * 8
TABLE_IMAGES = ("chelsea", "coffee", "motorcycle")
#: smaller budgets for the sampling methods on a CPU (name -> (factory, what changed))
CPU_BUDGETS = {
    "lime": (lambda m: xt.LIME(m, samples=500, seed=0), "500 samples"),
    "kernel_shap": (lambda m: xt.KernelSHAP(m, samples=500, seed=0), "500 coalitions"),
    "rise": (lambda m: xt.RISE(m, masks=1000, seed=0), "1000 masks"),
}


def _images(device) -> torch.Tensor:
    names = xt.zoo.IMAGES
    x = xt.zoo.preprocess([xt.zoo.center_crop(xt.zoo.image(n)) for n in names], crop=False)
    return torch.cat([x, x[:2].flip(-1)]).to(device)


def timing(model, x) -> str:
    b, _, h, w = x.shape
    sal = torch.rand(b, h, w, generator=torch.Generator().manual_seed(0)).to(x.device)
    probe = xt.metrics.deletion(model, x, sal, step=STEP)
    n1 = probe.curve.shape[1]
    chunk = xt.metrics.Scorer(model, x[:1]).chunk_size()
    order = xt.metrics.descending_order(sal)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=x.device).expand(b, -1))
    rank = rank.reshape(b, h, w)
    changed = (torch.arange(n1, device=x.device) * STEP).clamp(max=h * w)
    img = torch.arange(b, device=x.device).repeat_interleave(n1)
    pre = {"deletion": causal_images(x[img], torch.zeros_like(x)[img], rank[img], changed.repeat(b)),
           "insertion": causal_images(rise_blur(x)[img], x[img], rank[img], changed.repeat(b))}

    def floor(points):
        with torch.no_grad():
            for start in range(0, b, chunk):
                model(x[start:start + chunk])
            for start in range(0, points.shape[0], chunk):
                model(points[start:start + chunk])

    fns = {
        "floor": lambda: floor(pre["deletion"]),
        "deletion": lambda: xt.metrics.deletion(model, x, sal, step=STEP),
        "floor_ins": lambda: floor(pre["insertion"]),
        "insertion": lambda: xt.metrics.insertion(model, x, sal, step=STEP),
    }
    med = compare(fns, repeats=3, warmup=1, device=x.device)
    med["floor"] = (med["floor"] + med["floor_ins"]) / 2
    title = (f"deletion / insertion, {b} images 224 px, step {STEP} ({n1} points per curve), "
             f"EfficientNet-Lite0 on {x.device.type} ({torch.get_num_threads()} threads), medians of 3")
    return table(title, med, [("deletion", "deletion", None, 1.10), ("insertion", "insertion", None, 1.10)])


def auc_table(model, x) -> str:
    x = x[[xt.zoo.IMAGES.index(n) for n in TABLE_IMAGES]]
    cpu = x.device.type == "cpu"
    wanted = os.environ.get("XT_BENCH_METHODS")
    methods = [m for m in presets.METHODS if (m in wanted.split(",") if wanted else not (cpu and m == "scorecam"))]
    rows = []
    random_map = torch.rand(x.shape[0], *x.shape[2:], generator=torch.Generator().manual_seed(0)).to(x.device)
    entries = [("random map (chance)", random_map, "sum", 0.0)]
    for name in methods:
        spec = presets.METHODS[name]
        factory, kind = (lambda m, spec=spec: spec.build(m, normalize=xt.zoo.NORMALIZE)), spec.kind
        if cpu and name in CPU_BUDGETS:
            factory, note = CPU_BUDGETS[name]
            name = f"{name} ({note})"
        start = time.perf_counter()
        attr = factory(model)(x)
        entries.append((name, attr, "abs" if kind == "grayscale" else "sum", time.perf_counter() - start))
    for name, attr, reduce, seconds in entries:
        print(f"  metrics: {name}", file=sys.stderr, flush=True)
        d = xt.metrics.deletion(model, x, attr, step=STEP, reduce=reduce)
        i = xt.metrics.insertion(model, x, attr, step=STEP, reduce=reduce)
        rows.append(f"{name:<32}{reduce:>6}{float(d.auc.mean()):>11.3f}{float(i.auc.mean()):>11.3f}"
                    f"{float(i.auc.mean() - d.auc.mean()):>10.3f}{seconds:>10.1f}")
    head = (f"deletion (lower is better) / insertion (higher) AUC, softmax of the clean top-1, step {STEP}, "
            f"mean over {', '.join(TABLE_IMAGES)}, EfficientNet-Lite0 on {x.device.type}\n"
            f"{'method':<32}{'reduce':>6}{'deletion':>11}{'insertion':>11}{'ins-del':>10}{'expl. s':>10}")
    return "\n".join([head, *rows])


def run() -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = xt.zoo.efficientnet_lite0(device)
    x = _images(device)
    return timing(model, x) + "\n\n" + auc_table(model, x)


if __name__ == "__main__":
    print(run())
