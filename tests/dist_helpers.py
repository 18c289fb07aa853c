"""Helpers of the tests/test_distributed_*.py files; torchrun subprocesses import the model and
dataset factories (``dist_helpers:...``, with tests/ on PYTHONPATH), so pytest is imported only
where it is used."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> GAP -> FC, 5 classes, fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def tiny_model() -> nn.Module:
    """The model factory ``dist_helpers:tiny_model`` (same weights in every process)."""
    gen = torch.Generator().manual_seed(0)
    model = TinyNet()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


class Tensors(torch.utils.data.Dataset):
    """12 random 3 x 16 x 16 images with labels; item 7 raises when ``broken``."""

    def __init__(self, broken: bool = False) -> None:
        self.x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
        self.ids = [f"item{i:02d}" for i in range(12)]
        self.broken = broken

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        if self.broken and i == 7:
            raise OSError("disk on fire")
        return self.x[i], i % 5


def tensors() -> Tensors:
    return Tensors()


def broken_tensors() -> Tensors:
    return Tensors(broken=True)


def write_images(root: Path, n: int = 10) -> list[str]:
    """``n`` small PNGs (crops of the packaged photos, 40 x 48) in an ImageFolder layout."""
    import cv2

    import xai_torch as xt

    names = []
    for i in range(n):
        img = xt.zoo.image(xt.zoo.IMAGES[i % len(xt.zoo.IMAGES)])
        img = cv2.resize(img, (48 + i, 40), interpolation=cv2.INTER_AREA)
        img = np.roll(img, 3 * i, axis=1)
        folder = root / ("a" if i % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"img{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        names.append(f"{folder.name}/img{i:02d}.png")
    return sorted(names)


def image_folder(root: Path) -> Path:
    """``root`` holding 10 small PNGs in an ImageFolder layout (:func:`write_images`)."""
    write_images(root, 10)
    return root


ROOT = Path(__file__).resolve().parents[1]
MODEL = "dist_helpers:tiny_model"
COMMON = ["--model", MODEL, "--input-size", "32", "--threads", "1", "--no-progress"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(args: list[str], nproc: int = 0) -> subprocess.CompletedProcess:
    """``xai-torch run`` in a fresh interpreter: plain (nproc=0) or under torchrun."""
    import pytest

    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "xai_torch", "run", *args]
    else:
        cmd = [sys.executable, "-m", "xai_torch", "run", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: the group this test started
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in 180 s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def start_under_parent(args: list[str]) -> tuple[subprocess.Popen, int]:
    """``xai-torch run`` as torchrun starts a rank (in a session of its own, ``RANK`` etc. set),
    under a go-between parent process; the parent and the rank's pid (the test kills the parent)."""
    env = {**_env(), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    code = ("import subprocess, sys; p = subprocess.Popen(sys.argv[1:], start_new_session=True); "
            "print(p.pid, flush=True); p.wait()")
    parent = subprocess.Popen([sys.executable, "-c", code, sys.executable, "-m", "xai_torch", "run", *args], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_in_process(out: Any, data: Any, **kwargs: Any) -> Any:
    """``explain_dataset`` in one process, one torch thread (as each torchrun rank of ``COMMON``) and
    no DataLoader worker unless asked, in this interpreter."""
    from xai_torch import dataset as xd

    return xd.explain_dataset(out, data, **{"model": MODEL, "input_size": 32, "progress": False, "threads": 1,
                                            "workers": 0, **kwargs})


def same(a: Any, b: Any) -> None:
    """Two :class:`~xai_torch.distributed.DatasetExplanation` hold the same results."""
    assert a.ids == b.ids
    for key in ("indices", "targets", "predictions", "labels"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-6, atol=1e-7)
    assert a.metrics.keys() == b.metrics.keys()
    for key in a.metrics:
        np.testing.assert_allclose(a.metrics[key], b.metrics[key], rtol=1e-6, atol=1e-7)
