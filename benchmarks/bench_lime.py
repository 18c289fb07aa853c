"""LIME on resnet18 (random weights), 224 px, one image, CPU.

* ours: ``xt.region.LIME(model, samples=1000)`` with lime's quickshift on the pixel image
  (``image=``) and the automatic chunk size.
* floor: what any implementation must do: the same quickshift (scikit-image, called directly)
  and 1000 forwards in plain torch, in chunks of the same size, on perturbed images made once
  outside the timing. Target: ours <= 1.1 x floor.
* reference: the ``lime`` package (``LimeImageExplainer``, its quickshift, ``hide_color=None``,
  ``batch_size=10``), run with 200 samples to keep the benchmark short; its time at 1000
  samples is estimated as ``segmentation + 5 x (measured - segmentation)`` (its cost past the
  segmentation is per sample) and both numbers are printed.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings

import numpy as np
import torch
import torchvision

import xai_torch as xt
from xai_torch.region import LIME

from benchmarks.common import table

SAMPLES, LIME_SAMPLES = 1000, 200


def _image(size: int = 224) -> np.ndarray:
    """A photo-like test image: the packaged photo when there is one, else smooth colour blobs."""
    try:
        return xt.zoo.center_crop(xt.zoo.image("chelsea"), size=size).astype(np.float64) / 255.0
    except Exception:  # noqa: BLE001 - any missing asset: fall back to a synthetic image
        g = np.random.default_rng(0)
        low = g.uniform(0, 1, (3, 8, 8))
        up = torch.nn.functional.interpolate(torch.from_numpy(low)[None], size=size, mode="bicubic")[0]
        return up.clamp(0, 1).permute(1, 2, 0).numpy()


def run(repeats: int = 3) -> str:
    from skimage import segmentation

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    pixels = _image()  # (H, W, 3) in [0, 1]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def normalise(p: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) pixels -> model space
        return (p - mean) / std

    x = normalise(torch.from_numpy(pixels).permute(2, 0, 1).float()[None])
    lime = LIME(model, samples=SAMPLES, seed=0)
    chunk = lime._chunk_size(x, x.device)
    quick = dict(kernel_size=4, max_dist=200, ratio=0.2, rng=42)
    labels = segmentation.quickshift(pixels, **quick)
    on = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (chunk, int(labels.max()) + 1))).bool()
    batch = torch.where(on[:, torch.from_numpy(labels)][:, None], x, x.mean())  # made once, not timed

    def floor():
        segmentation.quickshift(pixels, **quick)
        with torch.no_grad():
            for start in range(0, SAMPLES, chunk):
                model(batch[:min(chunk, SAMPLES - start)])

    def ours():
        return lime.explain(x, image=pixels[None])

    fns = {"floor": floor, "ours": ours}
    try:
        from lime import lime_image

        def classifier(images):
            t = normalise(torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2))
            with torch.no_grad():
                return model(t).softmax(1).numpy()

        def reference():
            with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
                return lime_image.LimeImageExplainer(random_state=0).explain_instance(
                    pixels, classifier, top_labels=1, hide_color=None, num_samples=LIME_SAMPLES, batch_size=10)

        fns["lime"] = reference
    except ImportError:
        pass

    times = {name: [] for name in fns}
    seg_times = []
    with torch.no_grad():
        model(batch[:2])  # warm-up: allocator, thread pool
    for _ in range(repeats):  # interleaved, so that machine noise hits every candidate alike
        start = time.perf_counter()
        segmentation.quickshift(pixels, **quick)
        seg_times.append(time.perf_counter() - start)
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    seg = statistics.median(seg_times)
    rows = [(f"xt LIME, {SAMPLES} samples", "ours", None, 1.1)]
    notes = [f"quickshift alone: {seg * 1e3:.0f} ms; chunks of {chunk} images (automatic size)"]
    if "lime" in medians:
        medians["lime est"] = seg + (medians["lime"] - seg) * SAMPLES / LIME_SAMPLES
        rows = [(f"xt LIME, {SAMPLES} samples", "ours", "lime est", 1.1)]
        notes.append(f"lime package, {LIME_SAMPLES} samples (measured): {medians['lime'] * 1e3:.0f} ms; "
                     f"'lime est' = seg + {SAMPLES // LIME_SAMPLES} x (measured - seg), its time at {SAMPLES} samples")
    title = (f"LIME on resnet18 (weights=None), 224 px, one image, CPU, {torch.get_num_threads()} threads, "
             f"medians of {repeats}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return table(title, medians, rows) + "\n" + "\n".join(notes)


if __name__ == "__main__":
    print(run())
