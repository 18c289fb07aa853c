"""Data randomisation test (Adebayo et al. 2018, section 5) on sklearn's digits, CPU.

The same small CNN is trained twice, on the real labels and on a random permutation of them
(the second can only memorise), and a third time on the real labels with another seed (the
reference: how similar two models that learned the same task explain). Held-out images are
explained with every method that runs on such a model, for the real model's predicted class,
and ``xt.metrics.data_randomization`` compares the maps (``|a|`` summed over channels): Spearman,
SSIM and the top-10 % intersection, mean over the images. A method whose "real vs permuted"
similarity stays as high as its "real vs real" one does not reflect what the model learned.

Without scikit-learn, a synthetic task (which quadrant of an 8x8 image is brightest) replaces
the digits.
"""
from __future__ import annotations

import time
import warnings

import torch
from torch import nn

import xai_torch as xt
from xai_torch.metrics import data_randomization

#: python -m benchmarks runs it once: it measures explanations, not speed, so a busy pass adds nothing
BUSY_PASS = False


def digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1800, 1, 8, 8, generator=g)
        quadrants = torch.stack([x[..., :4, :4].mean((1, 2, 3)), x[..., :4, 4:].mean((1, 2, 3)),
                                 x[..., 4:, :4].mean((1, 2, 3)), x[..., 4:, 4:].mean((1, 2, 3))], 1)
        return x, quadrants.argmax(1), "synthetic quadrants (scikit-learn missing)"
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    return x, torch.tensor(data.target), "sklearn digits"


def cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 64, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def methods(segments: torch.Tensor) -> dict[str, tuple]:
    """name -> (factory, call keywords)."""
    return {
        "Gradient": (lambda m: xt.Gradient(m), {}),
        "InputXGradient": (lambda m: xt.InputXGradient(m), {}),
        "IntegratedGradients": (lambda m: xt.IntegratedGradients(m, steps=32), {"baseline": 0.0}),
        "SmoothGrad": (lambda m: xt.SmoothGrad(xt.Gradient(m), samples=16, seed=0), {}),
        "GuidedBackprop": (lambda m: xt.GuidedBackprop(m), {}),
        "GradCAM (conv2)": (lambda m: xt.GradCAM(m, layer="2"), {}),
        "LRP (epsilon_plus_flat)": (lambda m: xt.LRP(m), {}),
        "DeepLift": (lambda m: xt.DeepLift(m), {"baseline": 0.0}),
        "Occlusion (2x2)": (lambda m: xt.Occlusion(m, window=2), {}),
        "RISE": (lambda m: xt.RISE(m, masks=500, cell=2, seed=0), {}),
        "LIME": (lambda m: xt.LIME(m, samples=200, seed=0), {"segments": segments}),
    }


def run(held_out: int = 32, epochs_real: int = 10, epochs_random: int = 60) -> str:
    x, y, source = digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    xtr, ytr, xte, yte = x[held_out:], y[held_out:], x[:held_out], y[:held_out]
    start = time.perf_counter()
    real = train(cnn(0), xtr, ytr, epochs_real, 0)
    other = train(cnn(1), xtr, ytr, epochs_real, 1)
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(2))]
    random = train(cnn(0), xtr, shuffled, epochs_random, 0)
    train_s = time.perf_counter() - start
    cells = torch.arange(8) // 2
    segments = (cells[:, None] * 4 + cells[None, :]).expand(held_out, 8, 8).clone()
    lines = [f"data randomisation, {source}: {len(xtr)} training / {held_out} held-out images, 8x8, CPU, "
             f"{torch.get_num_threads()} threads; training {train_s:.0f} s",
             f"real labels: train {accuracy(real, xtr, ytr):.3f}, held-out {accuracy(real, xte, yte):.3f}; "
             f"second seed: held-out {accuracy(other, xte, yte):.3f}; permuted labels: train (memorised) "
             f"{accuracy(random, xtr, shuffled):.3f}, held-out {accuracy(random, xte, yte):.3f}",
             "similarity of |a| maps, mean over the held-out images (real vs permuted labels | real vs real, "
             "another seed)",
             f"{'method':<26}{'spearman':>10}{'ssim':>8}{'top-10%':>9}  |{'spearman':>10}{'ssim':>8}{'top-10%':>9}"
             f"{'seconds':>9}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (factory, kwargs) in methods(segments).items():
            t = time.perf_counter()
            cols = []
            for second in (random, other):
                r = data_randomization(real, second, factory, xte, call_kwargs=kwargs, k=6,
                                       similarity=("spearman", "ssim", "topk"))
                cols += [r.scores[n].nanmean().item() for n in ("spearman", "ssim", "topk")]
            lines.append(f"{name:<26}{cols[0]:>10.3f}{cols[1]:>8.3f}{cols[2]:>9.3f}  |{cols[3]:>10.3f}"
                         f"{cols[4]:>8.3f}{cols[5]:>9.3f}{time.perf_counter() - t:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
