"""One GPU script for every family: ``make bench-gpu`` = ``python -m benchmarks --gpu``.

For each family (gradients, guided backprop, CAMs incl. Score-CAM, IG 50 and adaptive,
SmoothGrad, Guided IG, XRAI, LIME, KernelSHAP, RISE, deletion / insertion, a layer method, LRP,
DeepLIFT, the transformer attention methods on a timm ViT built from its config) it prints, on a
batch of images: ms per image, the ratio to the plain-torch floor (the same model work in plain
torch: forwards of already-built inputs, or forward + backward passes), the ratio to the
reference library when it is installed (same run, same device), the peak CUDA memory of our call
(``torch.cuda.max_memory_allocated`` above what was in use; on CPU the resident set), and the
``precision="bfloat16"`` variant: its ms per image, speed-up, the correlation of its map with the
float32 map and, for IG, the relative completeness error of both. Then it runs the CUDA tests
(``pytest -m gpu``) and prints their summary. Sized for at most 10 minutes on one GPU
(resnet18 and ViT-Tiny at 224 px, 8 images, 3 timed repeats; ``XT_GPU_BATCH`` / ``XT_GPU_REPEATS``).

Without a GPU it runs on the CPU; ``--smoke`` (``run(smoke=True)``) uses a tiny CNN, 16 px images,
2 images, 1 repeat and tiny budgets, to check that the script works (``tests/test_bench_gpu_smoke.py``).
Families failing on a machine are printed as ``failed: ...`` rows; the script goes on.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

import xai_torch as xt

from benchmarks.common import add_row, device, gradient_floor, machine, peak_memory, sync

Fn = Callable[[], Any]


@dataclass
class Family:
    """ours(precision) -> a call; floor: the plain-torch work; ref: a factory of the reference
    library's call (raises ImportError when it is not installed); bf16: whether precision applies."""

    name: str
    ours: Callable[[str], Fn]
    floor: Optional[Fn] = None
    ref: Optional[Callable[[], Fn]] = None
    bf16: bool = True
    ref_name: str = ""


class TinyCNN(nn.Module):
    """The smoke-test model: conv-ReLU-conv-ReLU-GAP-FC."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def _attr(out: Any) -> torch.Tensor:
    return out.attributions if hasattr(out, "attributions") else out


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten().double().cpu(), b.detach().flatten().double().cpu()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def forwards(model: nn.Module, x: torch.Tensor, n: int, chunk: int) -> Fn:
    """The floor of a forward-only method: ``n`` forwards of already-built images, in chunks."""
    built = x[torch.arange(chunk, device=x.device) % x.shape[0]].clone()

    def floor() -> None:
        with torch.no_grad():
            for start in range(0, n, chunk):
                model(built[:min(chunk, n - start)])
    return floor


def backwards(model: nn.Module, x: torch.Tensor, target: torch.Tensor, n: int, chunk: int) -> Fn:
    """The floor of a gradient method: ``n`` forward + backward passes of built inputs, in chunks."""
    rows = torch.arange(chunk, device=x.device) % x.shape[0]
    built, tgt = x[rows].clone(), target[rows]

    def floor() -> None:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            gradient_floor(model, built[:m], tgt[:m])()
    return floor


def _grid(x: torch.Tensor, cells: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    rows, cols = torch.arange(h) * cells // h, torch.arange(w) * cells // w
    return (rows[:, None] * cells + cols[None]).expand(x.shape[0], h, w).clone().to(x.device)


def cnn_families(model: nn.Module, x: torch.Tensor, t: torch.Tensor, layer: str, channels: int,
                 smoke: bool) -> list[Family]:
    b, chunk = x.shape[0], max(x.shape[0], 32 if smoke else 64)
    steps, samples, masks, gsteps = (4, 16, 32, 4) if smoke else (50, 1000, 2000, 50)
    asteps = 32 if smoke else 50  # the adaptive rule's least
    seg = _grid(x, 4 if smoke else 8)
    grad1 = gradient_floor(model, x, t)
    cap = _captum()

    def ig_ref() -> Fn:
        ig = cap.IntegratedGradients(model)
        return lambda: ig.attribute(x, target=t, n_steps=steps, internal_batch_size=chunk)

    refs = {"Gradient": "captum Saliency", "GuidedBackprop": "captum GuidedBackprop", "GradCAM": "captum LayerGradCam",
            "ScoreCAM": "pytorch-grad-cam ScoreCAM", f"IG {steps}": "captum IntegratedGradients"}

    def fam(name: str, make: Callable[[str], Fn], floor: Optional[Fn], ref: Optional[Callable[[], Fn]] = None,
            bf16: bool = True) -> Family:
        return Family(name, make, floor, ref, bf16, refs.get(name, ""))

    base = xt.Gradient(model)(x, target=t)  # XRAI's base attribution and the metrics' ranking
    return [
        fam("Gradient", lambda p: lambda: xt.Gradient(model, precision=p)(x, target=t), grad1,
            lambda: (lambda s: lambda: s.attribute(x, target=t, abs=False))(cap.Saliency(model))),
        fam("GuidedBackprop", lambda p: lambda: xt.GuidedBackprop(model, precision=p)(x, target=t), grad1,
            lambda: (lambda s: lambda: s.attribute(x, target=t))(cap.GuidedBackprop(model))),
        fam("GradCAM", lambda p: lambda: xt.GradCAM(model, layer=layer, precision=p)(x, target=t), grad1,
            lambda: (lambda s: lambda: s.attribute(x, target=t))(cap.LayerGradCam(model, _module(model, layer)))),
        fam("ScoreCAM", lambda p: lambda: xt.ScoreCAM(model, layer=layer, precision=p)(x, target=t),
            forwards(model, x, b * (channels + 1), chunk), _gradcam_lib_scorecam(model, layer, x, t, chunk)),
        fam(f"IG {steps}", lambda p: lambda: xt.IntegratedGradients(model, steps=steps, precision=p).explain(x, t),
            backwards(model, x, t, b * steps, chunk), ig_ref),
        fam(f"IG adaptive {asteps}", lambda p: lambda: xt.IntegratedGradients(
            model, steps=asteps, method="adaptive", precision=p).explain(x, t),
            backwards(model, x, t, b * asteps, chunk)),
        fam("SmoothGrad 25", lambda p: lambda: xt.SmoothGrad(xt.Gradient(model, precision=p), samples=25, seed=0,
                                                             precision=p)(x, target=t),
            backwards(model, x, t, b * 25, chunk)),
        fam(f"GuidedIG {gsteps}", lambda p: lambda: xt.GuidedIG(model, steps=gsteps, precision=p)(x, target=t),
            backwards(model, x, t, b * gsteps, chunk)),
        fam("XRAI (base attribution given)", lambda p: lambda: xt.XRAI(model, steps=steps, precision=p)(
            x, target=t, base_attribution=base, segments=seg), None),
        fam(f"LIME {samples}", lambda p: lambda: xt.LIME(model, samples=samples, seed=0, precision=p)(
            x, target=t, segments=seg), forwards(model, x, b * samples, chunk)),
        fam(f"KernelSHAP {samples}", lambda p: lambda: xt.KernelSHAP(model, samples=samples, seed=0, precision=p)(
            x, target=t, segments=seg), forwards(model, x, b * (samples + 2), chunk)),
        fam(f"RISE {masks}", lambda p: lambda: xt.RISE(model, masks=masks, cell=4 if smoke else 7, seed=0,
                                                        precision=p)(x, target=t),
            forwards(model, x, b * masks, chunk)),
        fam("deletion + insertion", lambda p: lambda: (xt.metrics.deletion(model, x, base, t),
                                                       xt.metrics.insertion(model, x, base, t)), None, bf16=False),
        fam(f"LayerConductance {steps}", lambda p: lambda: xt.LayerConductance(
            model, layer, steps=steps, precision=p)(x, target=t), backwards(model, x, t, b * steps, chunk)),
        fam("LRP", lambda p: lambda: xt.LRP(model, precision=p)(x, target=t), grad1),
        fam("DeepLift", lambda p: lambda: xt.DeepLift(model, precision=p)(x, target=t), grad1),
    ]


def vit_families(smoke: bool, b: int, dev: torch.device) -> list[Family]:
    import timm

    size = 32 if smoke else 224
    cfg = dict(img_size=size, patch_size=16, embed_dim=192, depth=2 if smoke else 12, num_heads=3, num_classes=10)
    model = timm.models.VisionTransformer(**cfg).eval().to(dev)  # from a config: no weights downloaded
    x = torch.randn(b, 3, size, size, device=dev)
    t = torch.arange(b, device=dev) % 10
    grad1 = gradient_floor(model, x, t)

    def fwd() -> None:
        with torch.no_grad():
            model(x)
    return [Family("ViT AttentionRollout", lambda p: lambda: xt.AttentionRollout(model, precision=p)(x, target=t), fwd),
            Family("ViT TransformerAttribution", lambda p: lambda: xt.TransformerAttribution(model, precision=p)(
                x, target=t), grad1),
            Family("ViT LeGrad", lambda p: lambda: xt.LeGrad(model, precision=p)(x, target=t), grad1)]


def _captum() -> Any:
    try:
        import captum.attr as cap
        return cap
    except ImportError:
        return None


def _module(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


def _gradcam_lib_scorecam(model: nn.Module, layer: str, x: torch.Tensor, t: torch.Tensor,
                          chunk: int) -> Callable[[], Fn]:
    def make() -> Fn:
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = ScoreCAM(model, [_module(model, layer)])
        cam.batch_size = chunk
        targets = [ClassifierOutputTarget(int(c)) for c in t]
        return lambda: cam(input_tensor=x, targets=targets)
    return make


def measure(fam: Family, b: int, repeats: int, dev: torch.device, warm: bool = True) -> str:
    fns: dict[str, Fn] = {"ours": fam.ours("float32")}
    if fam.bf16:
        fns["bf16"] = fam.ours("bfloat16")
    if fam.floor is not None:
        fns["floor"] = fam.floor
    if fam.ref is not None:
        try:
            fns["ref"] = fam.ref()
        except Exception:  # noqa: BLE001 - a reference missing or not applicable: no ratio
            pass
    outs = {name: fn() for name, fn in fns.items() if name in ("ours", "bf16")}  # warm-up, results kept
    for name, fn in fns.items():
        if name not in outs and warm:
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved
        for name, fn in fns.items():
            sync(dev)
            start = time.perf_counter()
            fn()
            sync(dev)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    peak = peak_memory(fns["ours"], dev)
    ms = med["ours"] * 1e3 / b
    r_floor = med["ours"] / med["floor"] if "floor" in med else float("nan")
    r_ref = med["ours"] / med["ref"] if "ref" in med else float("nan")
    extra = ""
    if "bf16" in med:
        a32, a16 = _attr(outs["ours"]), _attr(outs["bf16"])
        extra = f"{med['bf16'] * 1e3 / b:>9.2f}{med['ours'] / med['bf16']:>7.2f}{_corr(a32, a16):>7.3f}"
        d32, d16 = getattr(outs["ours"], "relative_delta", None), getattr(outs["bf16"], "relative_delta", None)
        if d32 is not None and d16 is not None:
            extra += f"  IG rel. completeness error f32 {float(d32.max()):.2e}, bf16 {float(d16.max()):.2e}"
    add_row("GPU script" if dev.type == "cuda" else "GPU script (on CPU)", fam.name, ms, r_floor, r_ref,
            fam.ref_name if "ref" in med else "", peak)
    return f"{fam.name:<32}{ms:>9.2f}{r_floor:>8.2f}{r_ref:>7.2f}{peak:>9.0f}{extra}"


def gpu_tests() -> str:
    """``pytest -m gpu`` on the test suite, its summary line(s)."""
    if not torch.cuda.is_available():
        return "CUDA tests (pytest -m gpu): no GPU here, not run"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    return "CUDA tests (pytest -m gpu): " + "\n".join(failed + lines[-1:])


def run(smoke: bool = False, families: Optional[list[str]] = None, tests: bool = True) -> str:
    """The table (and the CUDA tests' summary); ``families``: names to run (prefix match)."""
    dev = torch.device("cpu") if smoke else device()
    b = 2 if smoke else int(os.environ.get("XT_GPU_BATCH", "8"))
    repeats = 1 if smoke else int(os.environ.get("XT_GPU_REPEATS", "3"))
    torch.manual_seed(0)
    if smoke:
        model: nn.Module = TinyCNN().eval()
        layer, channels, size = "conv2", 16, 16
    else:
        import torchvision

        model, layer, channels, size = torchvision.models.resnet18(weights=None).eval(), "layer4", 512, 224
    model = model.to(dev)
    x = torch.randn(b, 3, size, size, device=dev)
    with torch.no_grad():
        t = model(x).argmax(1)
    fams = cnn_families(model, x, t, layer, channels, smoke)
    wanted = (lambda n: any(n.lower().startswith(f.lower()) for f in families)) if families else (lambda n: True)
    if not families or any(f.lower().startswith("vit") for f in families):
        try:
            fams += vit_families(smoke, b, dev)
        except Exception as err:  # noqa: BLE001 - no timm: say so and go on
            fams.append(Family(f"ViT ({type(err).__name__}: {err})", lambda p: lambda: None, bf16=False))
    what = "tiny CNN 16 px (smoke)" if smoke else "resnet18 (weights=None) 224 px / timm ViT-Tiny from config"
    lines = [f"GPU script on {machine()}", f"{what}, batch {b}, median of {repeats}, {dev.type}",
             f"{'family':<32}{'ms/img':>9}{'x floor':>8}{'x ref':>7}{'peak MB':>9}{'bf16 ms':>9}{'x f32':>7}"
             f"{'corr':>7}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fam in fams:
            if not wanted(fam.name):
                continue
            try:
                lines.append(measure(fam, b, repeats, dev, warm=not smoke))
            except Exception as err:  # noqa: BLE001 - one family failing must not hide the others
                lines.append(f"{fam.name:<32}failed: {type(err).__name__}: {str(err)[:160]}")
            print(lines[-1], flush=True, file=sys.stderr)
    if tests and not smoke:
        lines.append(gpu_tests())
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(smoke="--smoke" in sys.argv))
