"""Relative input stability (Agarwal et al. 2022) against its plain-torch floor and Quantus 0.6.

``xt.metrics.relative_input_stability(xt.Gradient(model), x, samples=S)`` on the packaged
EfficientNet-Lite0 and two photos at 224 px (``XT_BENCH_SAMPLES`` noisy copies per image, 4 by
default; Quantus' 200 only multiply every column):

* ours: the clean explanation, the ``B * S`` noisy copies explained in the automatic chunk, and
  the ``B * (S + 1)`` no-grad forwards of the prediction check, with the ratios.
* floor: the same work in plain torch: one forward + backward of the target logits for the
  clean images and for the noisy copies (built once outside the timing), and the no-grad
  forwards of both, in chunks of the same size. Target: <= 1.1x.
* reference: ``quantus.RelativeInputStability(nr_samples=S)`` with the same gradient explainer
  (numpy in and out): per sample, one explainer call of B images and two predictions.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

import xai_torch as xt

from benchmarks.common import compare, table

IMAGES = ("chelsea", "coffee")


def run(images=IMAGES, repeats: int = 3) -> str:
    samples = int(os.environ.get("XT_BENCH_SAMPLES", "4"))
    model = xt.zoo.efficientnet_lite0()
    x = torch.cat([xt.zoo.preprocess(xt.zoo.image(name)) for name in images])
    b = x.shape[0]
    with torch.no_grad():
        target = model(x).argmax(1)
    grad = xt.Gradient(model)
    noisy = x.repeat_interleave(samples, 0) + torch.empty(b * samples, *x.shape[1:]).uniform_(
        0.02, 0.2, generator=torch.Generator().manual_seed(0))
    rows = target.repeat_interleave(samples)
    chunk = xt.metrics.Scorer(model, x[:1]).chunk_size()

    def gradient(z: torch.Tensor, t: torch.Tensor) -> None:
        zg = z.detach().clone().requires_grad_(True)
        out = model(zg)
        torch.autograd.grad(out.gather(1, t[:, None]).sum(), zg)

    def floor() -> None:
        gradient(x, target)
        for start in range(0, noisy.shape[0], chunk):
            gradient(noisy[start:start + chunk], rows[start:start + chunk])
        with torch.no_grad():
            model(x)
            for start in range(0, noisy.shape[0], chunk):
                model(noisy[start:start + chunk])

    def ours() -> object:
        return xt.metrics.relative_input_stability(grad, x, target, samples=samples)

    fns = {"floor": floor, "ours": ours}
    try:
        import quantus

        metric = quantus.RelativeInputStability(nr_samples=samples, disable_warnings=True)

        def explain(model, inputs, targets, **kwargs):
            return grad(torch.from_numpy(np.asarray(inputs)), target=torch.as_tensor(targets)).numpy()

        xn, yn = x.numpy(), target.numpy()
        fns["quantus"] = lambda: metric(model=model, x_batch=xn, y_batch=yn, explain_func=explain,
                                        channel_first=True, device="cpu", batch_size=b)
    except ImportError:          # the parity extra is not installed: no reference column
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        medians = compare(fns, repeats=repeats, warmup=1)
    title = (f"relative_input_stability, EfficientNet-Lite0 Gradient, {b} photos at 224 px, {samples} noisy copies "
             f"({b * (samples + 1)} explained + {b * (samples + 1)} forwards), CPU, {torch.get_num_threads()} "
             f"threads, medians of {repeats}")
    ref = "quantus" if "quantus" in fns else None
    return table(title, medians, [("relative_input_stability", "ours", ref, 1.1)])


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
