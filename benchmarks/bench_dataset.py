"""xai-torch run: images/s of the torchrun engine (1 and 2 processes) and the Ray Data engine,
and the runner's overhead against a plain loop, on a quiet and on a busy machine.

Gradient on the packaged EfficientNet-Lite0 (224 px) over 32 images (variants of the packaged
photos written as PNGs), shards of 4, one torch thread per process / actor. Times are the
explaining loop the manifest records (model loading and process start-up excluded; Ray's
includes starting its actors); wall time of the whole command beside it. The plain loop is
what a user would write without the runner: decode each shard's images (the same decoder),
call the explainer, keep the maps in memory; the runner's overhead (claims, manifest, shard
files, checksums, DataLoader) is ``1 proc loop / plain loop - 1``, target <= 5 %.
Busy: ``os.cpu_count()`` background processes spinning (started and stopped here). Ray's
workers run with ``RAY_worker_niceness=0`` here (Ray's default, 15, lets any other process
starve them: on the busy machine 32 images did not finish in 9 minutes).

    python -m benchmarks dataset
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: python -m benchmarks runs it once: it times quiet and busy itself
BUSY_PASS = False

ROOT = Path(__file__).resolve().parents[1]
IMAGES, SHARD, METHOD = 32, 4, "gradient"


def _write_images(root: Path, n: int) -> None:
    import cv2

    import xai_torch as xt

    for i in range(n):
        img = xt.zoo.image(xt.zoo.IMAGES[i % len(xt.zoo.IMAGES)])
        img = np.roll(img, 17 * i, axis=1)  # each image different
        cv2.imwrite(str(root / f"img{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """``n`` processes spinning on the CPU for the duration (the shared helper of
    benchmarks/common.py when it is there)."""
    try:
        from benchmarks.common import busy_load  # type: ignore[attr-defined]
    except ImportError:
        busy_load = None
    if busy_load is not None:
        with busy_load(n):
            yield
        return
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"  # ends with this process
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _run(data: Path, out: Path, engine: str, nproc: int) -> tuple[float, float]:
    """(loop seconds from the manifest, wall seconds of the whole command)."""
    args = ["-m", "xai_torch", "run", str(data), "--out", str(out), "--method", METHOD, "--shard-size", str(SHARD),
            "--threads", "1", "--no-progress"]
    if engine == "ray":
        args += ["--engine", "ray"]
    else:
        args += ["--device", "cpu"]
    cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                             if nproc > 1 else []), *args]
    # Ray runs its workers at niceness 15 by default (RAY_worker_niceness): on the busy machine they
    # yielded to the spinners and 32 images did not finish in 9 minutes; 0 here, as every other case
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "", "RAY_worker_niceness": "0"}
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return float(manifest["runs"][-1]["seconds"]), wall


_PLAIN = """
import sys, time, torch
torch.set_num_threads(1)
from xai_torch.dataset.build import build_explainer, build_model
from xai_torch.dataset.sources import build_source
src = build_source(sys.argv[1], "efficientnet_lite0", hash="names")
model = build_model("efficientnet_lite0")
explainer = build_explainer("{method}", model)
start, maps = time.perf_counter(), []
for a in range(0, len(src.ids), {shard}):
    x = torch.stack([src.get(i) for i in range(a, min(a + {shard}, len(src.ids)))])
    maps.append(explainer(x).detach())
print(time.perf_counter() - start)
"""


def _plain(data: Path) -> float:
    """Seconds of the plain loop (one process, one thread)."""
    code = _PLAIN.format(method=METHOD, shard=SHARD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code, str(data)], cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"the plain loop failed:\n{res.stderr[-3000:]}")
    return float(res.stdout.strip().splitlines()[-1])


def run(repeats: int = 1) -> str:
    cases = [("plain loop", "plain", 1), ("torchrun 1", "torchrun", 1), ("torchrun 2", "torchrun", 2),
             ("ray", "ray", 0)]
    try:
        import ray  # noqa: F401
    except ImportError:
        cases = cases[:-1]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        data = base / "images"
        data.mkdir()
        _write_images(data, IMAGES)
        for load in ("quiet", "busy"):
            ctx = busy(os.cpu_count() or 1) if load == "busy" else contextlib.nullcontext()
            with ctx:
                for r in range(repeats):  # interleaved, so that noise hits every case alike
                    for label, engine, nproc in cases:
                        if engine == "plain":
                            t = _plain(data)
                            got = (t, t)
                        else:
                            got = _run(data, base / f"{load}-{engine}{nproc}-{r}", engine, nproc)
                        results.setdefault((load, label), []).append(got)
                        print(f"  {load} {label}: loop {got[0]:.2f} s, wall {got[1]:.1f} s", file=sys.stderr,
                              flush=True)
    lines = [f"xai-torch run, {METHOD} on EfficientNet-Lite0 224 px, {IMAGES} images, shards of {SHARD}, CPU, "
             f"1 thread per process / actor, median of {repeats} (cores: {os.cpu_count()}; busy: as many "
             "spinning processes)",
             f"{'machine':<8}{'case':<13}{'loop s':>8}{'img/s':>8}{'wall s':>8}{'x plain':>9}  target"]
    for load in ("quiet", "busy"):
        plain = float(np.median([t for t, _ in results[(load, "plain loop")]]))
        for label, _engine, _n in cases:
            loop = float(np.median([t for t, _ in results[(load, label)]]))
            wall = float(np.median([w for _, w in results[(load, label)]]))
            target = ""
            if label == "torchrun 1":
                over = loop / plain - 1
                target = f"overhead {over:+.1%} (<= 5 %: {'ok' if over <= 0.05 else 'MISSED'})"
            lines.append(f"{load:<8}{label:<13}{loop:>8.2f}{IMAGES / loop:>8.2f}{wall:>8.1f}{loop / plain:>8.2f}x  "
                         f"{target}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
