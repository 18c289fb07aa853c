"""Attention methods on torchvision vit_b_16 (random weights), 224 px, on the GPU if any.

Floors, in plain torch: one forward (fused attention, ``need_weights=False`` as torchvision
calls it) for rollout, which needs no gradient; one forward and one backward to the input for the
gradient methods (Chefer's TransformerAttribution, LeGrad). Ours recompute every attention call
explicitly so its probabilities exist (and are in the graph). Targets: <= 1.2 x floor. LeGrad is
also timed against torch-cam 0.5's LeGrad (all 12 blocks, its forward plus its maps) in the same
run. ``XT_BENCH_BATCH`` sets the batch (default 8), ``XT_BENCH_REPEATS`` the repeats (default 5).
"""
from __future__ import annotations

import os
import warnings

import torch
import torchvision

import xai_torch as xt

from benchmarks.common import compare, device, table


def run(repeats: int = 0, batch: int = 0) -> str:
    repeats = repeats or int(os.environ.get("XT_BENCH_REPEATS", "5"))
    batch = batch or int(os.environ.get("XT_BENCH_BATCH", "8"))
    dev = device()
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval().to(dev)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)   # torchvision starts the head at zero
    x = torch.randn(batch, 3, 224, 224, device=dev)
    target = torch.arange(batch, device=dev)

    def forward_floor():
        with torch.no_grad():
            return model(x)

    def gradient_floor():
        xg = x.detach().requires_grad_()
        logits = model(xg)
        return torch.autograd.grad(logits.gather(1, target[:, None]).sum(), xg)[0]

    rollout = xt.AttentionRollout(model, batch_size=batch)
    chefer = xt.TransformerAttribution(model, batch_size=batch)
    legrad = xt.LeGrad(model, batch_size=batch)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        medians = compare({"floor": forward_floor, "ours": lambda: rollout(x)}, repeats=repeats, warmup=1, device=dev)
        out.append(table(f"AttentionRollout vit_b_16, 224 px, batch {batch}, {dev.type}, median of {repeats}",
                         medians, [("xt.AttentionRollout", "ours", None, 1.2)]))
        fns = {"floor": gradient_floor, "chefer": lambda: chefer(x, target=target),
               "legrad": lambda: legrad(x, target=target)}
        rows = [("xt.TransformerAttribution", "chefer", None, 1.2), ("xt.LeGrad", "legrad", None, 1.2)]
        try:
            from torchcam.methods import LeGrad as TorchCamLeGrad

            def torchcam_run():
                with TorchCamLeGrad(model, list(model.encoder.layers)) as extractor:
                    return extractor(target.tolist(), model(x), normalized=False)[0]

            fns["torch-cam LeGrad"] = torchcam_run
            rows[1] = ("xt.LeGrad", "legrad", "torch-cam LeGrad", 1.2)
        except ImportError:
            pass
        medians = compare(fns, repeats=repeats, warmup=1, device=dev)
        out.append(table(f"Chefer / LeGrad vit_b_16, 224 px, batch {batch}, {dev.type}, median of {repeats}",
                         medians, rows))
    return "\n\n".join(out)


if __name__ == "__main__":
    print(run())
