"""The IG family on resnet18 (random weights), 224 px, one image, CPU.

* IntegratedGradients, 50 Gauss-Legendre steps. Floor: the same 50 forward + backward passes
  in plain torch, one batch, weighted sum times (x - b). Reference: Captum's
  IntegratedGradients (one batch), without and with its convergence delta (``explain`` computes
  the delta: two more forwards). Targets: <= 1.05 x floor, no slower than Captum.
* SmoothGrad(Gradient), 25 samples. Floor: drawing the noise and 25 noisy forward + backward
  passes in one batch.
  Reference: Captum's NoiseTunnel(Saliency). Target: <= 1.05 x floor, no slower than Captum.
* GuidedIG, 50 steps. Floor: 50 sequential single-image forward + backward passes. Reference:
  PAIR saliency's GuidedIG (the per-step bookkeeping in numpy). Target: no slower than PAIR.
* Peak memory (max RSS growth, separate processes) of IG with 50 and 500 steps at
  batch_size=50: it must not grow with steps.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import torch
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, table


def _model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def bench_ig(model, x, b, repeats):
    steps, target = 50, 3
    alphas, weights = xt.path.gauss_legendre(steps)
    a = alphas.float().view(-1, 1, 1, 1).to(x.device)
    w = weights.float().view(-1, 1, 1, 1).to(x.device)

    def floor():
        z = (b + a * (x - b)).requires_grad_(True)
        (g,) = torch.autograd.grad(model(z)[:, target].sum(), z)
        return (x - b) * (g * w).sum(0, keepdim=True)

    ig = xt.IntegratedGradients(model, steps=steps, batch_size=steps)
    fns = {"floor": floor, "ours": lambda: ig(x, target=target, baseline=b),
           "ours explain": lambda: ig.explain(x, target=target, baseline=b)}
    rows = [("ig(x)", "ours", None, 1.05), ("ig.explain(x) (+ delta)", "ours explain", None, 1.05)]
    try:
        from captum.attr import IntegratedGradients

        captum = IntegratedGradients(model)
        fns["captum IG"] = lambda: captum.attribute(x, b, target=target, n_steps=steps)
        fns["captum IG + delta"] = lambda: captum.attribute(x, b, target=target, n_steps=steps,
                                                            return_convergence_delta=True)
        rows = [("ig(x)", "ours", "captum IG", 1.05, 1.0),
                ("ig.explain(x) (+ delta)", "ours explain", "captum IG + delta", 1.05, 1.0)]
    except ImportError:
        pass
    return table(f"IntegratedGradients, 50 steps (gauss_legendre), batch 50, {x.device.type}",
                 compare(fns, repeats=repeats, device=x.device), rows)


def bench_smoothgrad(model, x, repeats):
    samples, target = 25, 3
    std = 0.15 * float(x.max() - x.min())

    def floor():  # drawing the noise is part of the work
        z = (x + std * torch.randn(samples, *x.shape[1:], device=x.device)).requires_grad_(True)
        (g,) = torch.autograd.grad(model(z)[:, target].sum(), z)
        return g.mean(0, keepdim=True)

    sg = xt.SmoothGrad(xt.Gradient(model, batch_size=samples), samples=samples, noise=0.15)
    fns = {"floor": floor, "ours": lambda: sg(x, target=target)}
    rows = [("xt.SmoothGrad(Gradient)", "ours", None, 1.05)]
    try:
        from captum.attr import NoiseTunnel, Saliency

        nt = NoiseTunnel(Saliency(model))
        fns["captum NoiseTunnel(Saliency)"] = lambda: nt.attribute(
            x, target=target, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=samples,
            stdevs=std, abs=False)
        rows = [("xt.SmoothGrad(Gradient)", "ours", "captum NoiseTunnel(Saliency)", 1.05, 1.0)]
    except ImportError:
        pass
    return table(f"SmoothGrad, 25 samples, batch 25, {x.device.type}", compare(fns, repeats=repeats, device=x.device),
                 rows)


def bench_guided_ig(model, x, repeats):
    steps, target = 50, 3

    def floor():
        z = torch.zeros_like(x)
        for _ in range(steps):
            zg = z.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(zg)[:, target].sum(), zg)
        return g

    gig = xt.GuidedIG(model, steps=steps)
    fns = {"floor": floor, "ours": lambda: gig(x, target=target, baseline=0.0)}
    rows = [("xt.GuidedIG", "ours", None, None)]
    try:
        import saliency.core as sc
        from saliency.core.base import INPUT_OUTPUT_GRADIENTS

        original = np.quantile

        def quantile(arr, q, *args, interpolation=None, **kwargs):  # saliency 0.2.1 on NumPy 2
            if interpolation is not None:
                kwargs["method"] = interpolation
            return original(arr, q, *args, **kwargs)

        def call(xb, call_model_args=None, expected_keys=None):
            t = torch.from_numpy(np.asarray(xb, dtype=np.float32)).permute(0, 3, 1, 2).requires_grad_(True)
            (g,) = torch.autograd.grad(model(t)[:, target].sum(), t)
            return {INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}

        img = x[0].permute(1, 2, 0).numpy()

        def pair():
            np.quantile = quantile
            try:
                return sc.GuidedIG().GetMask(img, call, x_baseline=np.zeros_like(img), x_steps=steps)
            finally:
                np.quantile = original

        fns["PAIR GuidedIG"] = pair
        rows = [("xt.GuidedIG", "ours", "PAIR GuidedIG", None, 1.0)]
    except ImportError:
        pass
    return table("GuidedIG, 50 steps", compare(fns, repeats=repeats, warmup=1), rows)


_MEMORY = """
import resource, torch, torchvision, xai_torch as xt
torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
x = torch.randn(1, 3, 224, 224)
xt.IntegratedGradients(model, steps=50, batch_size=50)(x, target=3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
xt.IntegratedGradients(model, steps={steps}, batch_size=50)(x, target=3)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after / 1024, (after - before) / 1024)
"""


def bench_memory() -> str:
    lines = ["IntegratedGradients peak memory at batch_size=50 (max RSS, fresh process each)"]
    for steps in (50, 500):
        out = subprocess.run([sys.executable, "-c", _MEMORY.format(steps=steps)], capture_output=True, text=True,
                             check=True)
        peak, grow = (float(v) for v in out.stdout.split()[-2:])
        lines.append(f"  steps={steps:<4} peak {peak:7.0f} MB   growth over a 50-step warm-up call {grow:6.1f} MB")
    return "\n".join(lines)


def run(repeats: int = 11) -> str:
    model = _model()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    dev = device()
    on_dev, x_dev = _model().to(dev), x.to(dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = [f"resnet18, 224 px, one image, {dev.type}, medians",
                 bench_ig(on_dev, x_dev, torch.zeros_like(x_dev), repeats), bench_smoothgrad(on_dev, x_dev, repeats),
                 bench_guided_ig(model, x, max(3, repeats // 3)), bench_memory()]
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(run())
