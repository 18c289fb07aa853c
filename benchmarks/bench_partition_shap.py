"""Partition SHAP: 500 evaluations on 4 images, a small CNN (random weights, logits scaled up so
that the probabilities move) at 64 px, CPU.

* ours: ``xt.PartitionSHAP(model, masker=M, max_evals=500, round_size=50)`` on the 4 images at
  once, top-2 classes per image (``(B, 2)`` targets), automatic chunk size.
* reference: shap's ``PartitionExplainer`` with ``maskers.Image(M)``, ``max_evals=500,
  batch_size=50`` (seed 002's), ``outputs=argsort.flip[:2]``, on the same images (0..255, HWC;
  its numba functions compiled in the warm-up). The values are compared: the largest
  difference is printed.
* floor: what any implementation must do: 4 x 500 forwards in plain torch, in chunks of the
  same size, of masked images made once outside the timing, plus the masker's fills: the
  blur once per image, or one ``cv2.inpaint`` per masked image (holes: random boxes of
  random size, half the image on average) in the same thread pool.

Target: ours >= 5 x faster than shap, and close to the floor.
"""
from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from xai_torch.region import PartitionSHAP
from xai_torch.region.maskers import box_blur

from benchmarks.common import table

EVALS, IMAGES, SIZE, ROUND = 500, 4, 64, 50


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 10)).eval()
    with torch.no_grad():  # logits that move: probabilities far from uniform, values far above rounding
        model[-1].weight.mul_(30.0)
    return model


def _images() -> torch.Tensor:
    """Photo-like images in [0, 1] with integer pixels: smooth colour blobs."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(IMAGES, 3, 6, 6, generator=g)
    up = nn.functional.interpolate(low, size=SIZE, mode="bicubic", align_corners=False).clamp(0, 1)
    return (up * 255).round() / 255


def _holes(n: int, g: np.random.Generator) -> np.ndarray:
    """(n, H, W) uint8 inpainting holes: random boxes, about half the image on average."""
    out = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        h, w = g.integers(8, SIZE + 1, 2)
        top, left = g.integers(0, SIZE - h + 1), g.integers(0, SIZE - w + 1)
        out[i, top:top + h, left:left + w] = 1
    return out


def _case(masker: str, model: nn.Module, x: torch.Tensor, repeats: int) -> str:
    import cv2

    ours = PartitionSHAP(model, masker=masker, max_evals=EVALS, round_size=ROUND, input_range=(0, 1), seed=0)
    chunk = ours._chunk_size(x, x.device)
    with torch.no_grad():
        top2 = model(x).softmax(1).argsort(1, descending=True)[:, :2]
    g = np.random.default_rng(0)
    keep = torch.from_numpy(g.random((chunk, 1, SIZE, SIZE)) < 0.5)
    batch = torch.where(keep, x[:1], x[:1].mean())  # made once, not timed
    pixels = np.ascontiguousarray((x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    holes = _holes(IMAGES * EVALS, g)
    workers = os.cpu_count() or 1
    kx = int(masker[5:].split(",")[0]) if masker.startswith("blur") else 0

    def floor() -> None:
        if kx:
            box_blur(x, kx, kx)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda i: cv2.inpaint(pixels[i % IMAGES], holes[i], 3, cv2.INPAINT_TELEA),
                              range(IMAGES * EVALS)))
        with torch.no_grad():
            for start in range(0, IMAGES * EVALS, chunk):
                model(batch[:min(chunk, IMAGES * EVALS - start)])

    def mine() -> torch.Tensor:
        return ours.explain(x, target=top2).attributions

    fns = {"floor": floor, "ours": mine}
    values = {}
    try:
        import shap

        def f(z: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.asarray(z, dtype=np.float32)).permute(0, 3, 1, 2) / 255
            with torch.no_grad():
                return model(t).softmax(1).double().numpy()

        photo = (x * 255).permute(0, 2, 3, 1).numpy().astype(np.float64)
        explainer = shap.Explainer(f, shap.maskers.Image(masker, photo.shape[1:]), algorithm="partition")

        def reference() -> torch.Tensor:
            sv = explainer(photo, max_evals=EVALS, batch_size=ROUND, outputs=shap.Explanation.argsort.flip[:2],
                           silent=True)
            return torch.from_numpy(sv.values).permute(0, 4, 3, 1, 2)

        fns["shap"] = reference
    except ImportError:
        pass
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():  # warm-up: numba compilation, allocator, thread pools
        out = fn()
        if out is not None:
            values[name] = out
    for _ in range(repeats):  # interleaved, so that machine noise hits every candidate alike
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    ref = "shap" if "shap" in medians else None
    title = (f"PartitionSHAP {masker}, {EVALS} evals x {IMAGES} images, small CNN {SIZE} px, CPU, "
             f"{torch.get_num_threads()} threads, medians of {repeats}")
    rows = [(f"xt PartitionSHAP {masker}", "ours", ref, None, 0.2 if ref else None)]
    note = ""
    if ref:
        diff = float((values["ours"].double() - values["shap"]).abs().max())
        scale = float(values["shap"].abs().max())
        slower = medians["shap"] / medians["ours"]
        note = f"\nlargest |ours - shap| = {diff:.2e} (values up to {scale:.2e}); shap is {slower:.1f} x slower"
    return table(title, medians, rows) + note


def run(repeats: int = 3) -> str:
    model, x = _model(), _images()
    return "\n\n".join(_case(m, model, x, repeats) for m in ("blur(16,16)", "inpaint_telea"))


if __name__ == "__main__":
    print(run())
