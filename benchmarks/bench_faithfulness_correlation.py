"""Faithfulness correlation (Bhatt et al. 2020) against its plain-torch floor and Quantus 0.6.

``xt.metrics.faithfulness_correlation(model, x, saliency, runs=R, subset_size=224)`` on the
packaged EfficientNet-Lite0 and two photos at 224 px (Quantus's defaults except the number of
runs, ``XT_BENCH_RUNS``, 20 by default: Quantus's 100 runs only multiply every column by 5):

* ours: drawing the subsets, building the ``2 * R`` perturbed images on the device, the clean
  forward that fixes the targets, and scoring, in the automatic chunk size.
* floor: the same forwards in plain torch: the 2 clean images and the ``2 * R`` perturbed images
  (built once outside the timing), no-grad, in chunks of the same size. Target: <= 1.1x.
* reference: ``quantus.FaithfulnessCorrelation(nr_runs=R, subset_size=224)`` on the same model,
  images and map (numpy in, one model call of 2 images per run), in the same run.
"""
from __future__ import annotations

import os
import warnings

import torch

import xai_torch as xt

from benchmarks.common import compare, table

IMAGES = ("chelsea", "coffee")
SUBSET = 224


def run(images=IMAGES, repeats: int = 3) -> str:
    runs = int(os.environ.get("XT_BENCH_RUNS", "20"))
    model = xt.zoo.efficientnet_lite0()
    x = torch.cat([xt.zoo.preprocess(xt.zoo.image(name)) for name in images])
    b = x.shape[0]
    sal = torch.rand(b, 1, *x.shape[2:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = model(x).argmax(1)
    chunk = xt.metrics.Scorer(model, x[:1]).chunk_size()
    f = x[0].numel()
    gen = torch.Generator().manual_seed(1)
    idx = torch.rand(b * runs, f, generator=gen).topk(SUBSET, 1, largest=False).indices
    img = torch.arange(b).repeat_interleave(runs)
    flat = x.flatten(1)
    perturbed = flat[img].scatter(1, idx, flat.amin(1)[img, None].expand(-1, SUBSET)).view(-1, *x.shape[1:])

    def floor() -> None:
        with torch.no_grad():
            model(x)
            for start in range(0, perturbed.shape[0], chunk):
                model(perturbed[start:start + chunk])

    def ours() -> object:
        return xt.metrics.faithfulness_correlation(model, x, sal, target, runs=runs, subset_size=SUBSET)

    fns = {"floor": floor, "ours": ours}
    try:
        import quantus

        metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=SUBSET, return_aggregate=False,
                                                 disable_warnings=True)
        xn, yn, an = x.numpy(), target.numpy(), sal.numpy()
        fns["quantus"] = lambda: metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, channel_first=True,
                                        device="cpu", batch_size=b)
    except ImportError:          # the parity extra is not installed: no reference column
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        medians = compare(fns, repeats=repeats, warmup=1)
    title = (f"faithfulness_correlation, EfficientNet-Lite0, {b} photos at 224 px, {runs} runs of {SUBSET} "
             f"elements ({b * (runs + 1)} forwards), CPU, {torch.get_num_threads()} threads, medians of {repeats}")
    ref = "quantus" if "quantus" in fns else None
    return table(title, medians, [("faithfulness_correlation", "ours", ref, 1.1)])


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
