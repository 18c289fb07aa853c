"""The path-integration engine (xai_torch/path/engine.py): the batching plan of every path
method, and peak memory that does not grow with the number of steps."""
import pytest
import torch

import xai_torch as xt

from conftest import Counting, torchvision_model


def test_model_calls_follow_the_batching_plan(small, small_x):
    model = Counting(small)
    ig = xt.IntegratedGradients(model, steps=50, batch_size=16)
    res = ig.explain(small_x[:2], baseline=["black", "white"])
    # clean scores (2), baseline scores (2 x 2), then 2 images x 2 baselines x 50 steps in chunks of 16
    assert model.sizes == [2, 4] + [16] * 12 + [8]
    assert res.model_calls == sum(model.sizes)
    model.sizes.clear()
    ig.explain(small_x[:2], target=[[0, 1], [2, 3]], baseline=["black", "white"])
    assert model.sizes == [2, 4] + [16] * 25  # K targets share the clean and baseline forwards
    model.sizes.clear()
    ig(small_x[:2], target=[1, 2], baseline=["black", "white"])  # no delta asked: the path only
    assert model.sizes == [16] * 12 + [8]
    model.sizes.clear()
    ig(small_x[:2], baseline="black")  # argmax targets need the clean scores
    assert model.sizes == [2, 16, 16, 16, 16, 16, 16, 4]
    model.sizes.clear()
    xt.BlurIG(model, steps=30, batch_size=25).explain(small_x[:2])
    assert model.sizes == [2, 25, 25, 10, 2]  # clean, the path, the fully blurred images
    model.sizes.clear()
    xt.GuidedIG(model, steps=7, batch_size=2).explain(small_x)
    assert model.sizes == [2, 1] + [2, 1] * 7  # sequential steps, batched across images
    model.sizes.clear()
    xt.ExpectedGradients(model, small_x, samples=3, batch_size=4, seed=0).explain(small_x[:2])
    assert model.sizes == [2, 3, 4, 2]  # clean, the 3 distinct references, 2 x 3 samples
    model.sizes.clear()
    xt.ExpectedGradients(model, small_x, samples=3, batch_size=4, seed=0)(small_x[:2], target=0)
    assert model.sizes == [4, 2]


def _peak_rss_mb(steps: int) -> float:
    import subprocess
    import sys

    code = f"""
import resource, torch, xai_torch as xt
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
x = torch.randn(1, 3, 160, 160)
xt.IntegratedGradients(model, steps=4, batch_size=8)(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
xt.IntegratedGradients(model, steps={steps}, batch_size=8)(x)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def test_peak_memory_does_not_grow_with_steps():
    # 500 steps of a 3x160x160 input would be 150 MB if the path were materialised
    grow = _peak_rss_mb(500) - _peak_rss_mb(50)
    assert grow < 20, f"peak memory grew by {grow:.1f} MB from 50 to 500 steps"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU path; CI has none)")
def test_peak_cuda_memory_same_for_50_and_500_steps():
    model = torchvision_model("resnet18").cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    peaks = []
    for steps in (50, 500):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        xt.IntegratedGradients(model, steps=steps, batch_size=16)(x)
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] <= peaks[0] * 1.02
