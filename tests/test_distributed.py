"""Dataset-scale runs (xai_torch.distributed): torchrun on CPU, resume, corruption, config checks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_helpers import write_images

from xai_torch import XaiError
from xai_torch import distributed as xd

ROOT = Path(__file__).resolve().parents[1]
MODEL = "dist_helpers:tiny_model"
COMMON = ["--model", MODEL, "--input-size", "32", "--threads", "1", "--no-progress"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cli(args: list[str], nproc: int = 0) -> subprocess.CompletedProcess:
    """``xai-torch run`` in a fresh interpreter: plain (nproc=0) or under torchrun."""
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


def _in_process(out, data, **kwargs) -> xd.RunSummary:
    """One process, one torch thread (as each torchrun rank), in this interpreter."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return xd.explain_dataset(out, data, **{"model": MODEL, "input_size": 32, "progress": False, **kwargs})
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_images(root, 10)
    return root


def _same(a: xd.DatasetExplanation, b: xd.DatasetExplanation) -> None:
    assert a.ids == b.ids
    for key in ("indices", "targets", "predictions", "labels"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-6, atol=1e-7)
    assert a.metrics.keys() == b.metrics.keys()
    for key in a.metrics:
        np.testing.assert_allclose(a.metrics[key], b.metrics[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method, options, data, metrics", [
    ("gradient", [], "folder", "deletion,insertion"),                     # deterministic, image folder
    ("smoothgrad", ["samples=4"], "dist_helpers:tensors", ""),      # seeded stochastic, dataset factory
])
def test_torchrun_two_processes_match_one(tmp_path, images, method, options, data, metrics):
    data = str(images) if data == "folder" else data
    opts = [a for o in options for a in ("--option", o)]
    res = _cli([data, "--out", str(tmp_path / "two"), "--method", method, *opts, "--shard-size", "3",
                "--metrics", metrics, *COMMON], nproc=2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 processes" in res.stdout and "img/s" in res.stdout
    _in_process(tmp_path / "one", data, method=method, options=xd.parse_options(options), shard_size=3,
                metrics=[m for m in metrics.split(",") if m])
    two, one = xd.load(tmp_path / "two"), xd.load(tmp_path / "one")
    _same(one, two)
    assert two.manifest["complete"] and two.manifest["runs"][0]["world_size"] == 2
    assert {r["rank"] for r in two.manifest["shards"].values()} == {0, 1}
    n, size = (10, 32) if data == str(images) else (12, 16)
    assert len(two.ids) == n and two.attributions.shape == (n, 3, size, size)
    if metrics:
        assert set(two.metrics) == {"deletion_auc", "insertion_auc"} and np.isfinite(two.metrics["deletion_auc"]).all()
    if method == "smoothgrad":  # the seed really reaches the explainer: another seed, other noise
        _in_process(tmp_path / "seed1", data, method=method, options={"samples": 4}, shard_size=3, seed=1)
        assert not np.allclose(xd.load(tmp_path / "seed1").attributions, one.attributions)


def test_killed_run_resumes_only_missing_shards_and_recomputes_corrupt_ones(tmp_path, images):
    out = tmp_path / "run"
    args = [str(images), "--out", str(out), "--method", "gradient", "--shard-size", "3", *COMMON]
    res = _cli([*args, "--stop-after-shards", "2"])  # dies right after writing its 2nd shard
    assert res.returncode == 75, res.stderr[-3000:]
    assert sorted(p.name for p in out.glob("shard-*.npz")) == ["shard-00000.npz", "shard-00001.npz"]
    with pytest.raises(XaiError, match="unfinished"):
        xd.load(out)
    assert len(xd.load(out, allow_partial=True).ids) == 3  # shard 1 is on disk but not yet in the manifest
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npz")}

    summary = _in_process(out, str(images), method="gradient", shard_size=3)
    assert summary.reused == [0, 1] and summary.computed == [2, 3] and summary.computed_images == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].npz")} == mtimes
    manifest = xd.load(out).manifest
    assert manifest["complete"] and manifest["runs"][-1]["computed"] == [2, 3]
    _in_process(tmp_path / "clean", str(images), method="gradient", shard_size=3)
    _same(xd.load(tmp_path / "clean"), xd.load(out))

    # corrupt one shard (flip bytes) and truncate another: load refuses, a rerun recomputes both
    shard1, shard3 = out / "shard-00001.npz", out / "shard-00003.npz"
    data = bytearray(shard1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard1.write_bytes(bytes(data))
    shard3.write_bytes(shard3.read_bytes()[:100])
    with pytest.raises(XaiError, match="checksum"):
        xd.load(out)
    summary = _in_process(out, str(images), method="gradient", shard_size=3)
    assert summary.computed == [1, 3] and summary.reused == [0, 2]
    _same(xd.load(tmp_path / "clean"), xd.load(out))
    assert _in_process(out, str(images), method="gradient", shard_size=3).computed == []  # all verified


def test_config_mismatch_is_refused(tmp_path, images):
    out = tmp_path / "run"
    _in_process(out, str(images), method="gradient", shard_size=5)
    with pytest.raises(XaiError, match=r"different configuration \(.*method: 'gradient' there, 'smoothgrad' here"):
        _in_process(out, str(images), method="smoothgrad", shard_size=5)
    with pytest.raises(XaiError, match="shard_size: 5 there, 4 here"):
        _in_process(out, str(images), method="gradient", shard_size=4)
    with pytest.raises(XaiError, match="seed"):
        _in_process(out, str(images), method="gradient", shard_size=5, seed=3)
    (images / "a" / "extra.png").write_bytes((images / "a" / "img00.png").read_bytes())
    try:
        with pytest.raises(XaiError, match="dataset"):
            _in_process(out, str(images), method="gradient", shard_size=5)
    finally:
        (images / "a" / "extra.png").unlink()
    assert _in_process(out, str(images), method="gradient", shard_size=5).reused == [0, 1]


def test_error_in_one_rank_stops_the_run_naming_rank_and_image(tmp_path):
    res = _cli(["dist_helpers:broken_tensors", "--out", str(tmp_path / "run"), "--shard-size", "4",
                *COMMON], nproc=2)
    assert res.returncode != 0
    assert "rank 1 failed on image 'item07' (shard 1)" in res.stderr and "disk on fire" in res.stderr
    manifest = xd.load(tmp_path / "run", allow_partial=True).manifest
    assert "item07" in manifest["error"] and not manifest["complete"] and "1" not in manifest["shards"]


def test_float16_options_targets_and_labels(tmp_path, images):
    _in_process(tmp_path / "f32", str(images), method="integrated_gradients", options={"steps": 8}, shard_size=4,
                target="label")
    _in_process(tmp_path / "f16", str(images), method="integrated_gradients", options={"steps": 8}, shard_size=4,
                dtype="float16", target="label")
    a, b = xd.load(tmp_path / "f32"), xd.load(tmp_path / "f16")
    assert "steps=8" in a.manifest["config"]["explainer"]
    assert "normalize=((0.485" in a.manifest["config"]["explainer"]  # the preset follows the model's normalisation
    np.testing.assert_array_equal(b.targets, b.labels)
    np.testing.assert_array_equal(b.labels, [0] * 5 + [1] * 5)
    assert not np.array_equal(b.targets, b.predictions)  # the labels were explained, not the argmax
    scale = np.abs(a.attributions).reshape(10, -1).max(1)[:, None, None, None]
    # float16 keeps 1e-3 of each image's largest value, however small the values are
    assert (np.abs(b.attributions - a.attributions) <= 1e-3 * scale).all() and scale.min() > 0
    assert b.attributions.dtype == np.float32


@pytest.mark.parametrize("kwargs, message", [
    ({"data": "nowhere/"}, "neither an image folder nor a dataset factory"),
    ({"data": "empty"}, "holds no images"),
    ({"method": "magic"}, "unknown method 'magic'; choose a preset from gradient"),
    ({"model": "torchvision:resnet1"}, "unknown torchvision model 'resnet1'"),
    ({"model": "nosuchmodule:f"}, "cannot import module 'nosuchmodule'"),
    ({"options": {"stepz": 3}, "method": "integrated_gradients"}, "does not take option"),
    ({"metrics": ["accuracy"]}, "unknown metric"),
    ({"target": "label", "data": "flat"}, "needs labelled images"),
    ({"weights": "bad.pt"}, "do not fit"),
])
def test_bad_arguments_raise_xai_error(tmp_path, images, kwargs, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes((images / "a" / "img00.png").read_bytes())
    torch.save({"fc.weight": torch.zeros(3, 8)}, tmp_path / "bad.pt")
    data = kwargs.pop("data", str(images))
    data = str(tmp_path / data) if data in ("empty", "flat") else data
    if "weights" in kwargs:
        kwargs["weights"] = str(tmp_path / kwargs["weights"])
    with pytest.raises(XaiError, match=message):
        _in_process(tmp_path / "out", data, **kwargs)


def test_shard_seed_and_option_parsing():
    assert xd.shard_seed(0, 3) == xd.shard_seed(0, 3) != xd.shard_seed(0, 4) != xd.shard_seed(1, 3)
    assert 0 <= xd.shard_seed(2**40, 10**6) < 2**63
    assert xd.parse_options(["steps=16", "normalize=(0.5, 0.5)", "layer=layer4.1"]) == \
        {"steps": 16, "normalize": (0.5, 0.5), "layer": "layer4.1"}
    with pytest.raises(XaiError, match="key=value"):
        xd.parse_options(["steps"])


def test_cam_preset_takes_the_model_layer(tmp_path, images):
    _in_process(tmp_path / "cam", str(images), method="gradcam", options={"layer": "conv2"}, shard_size=10)
    res = xd.load(tmp_path / "cam")
    assert res.attributions.shape == (10, 1, 32, 32) and "layer='conv2'" in res.manifest["config"]["explainer"]
    with pytest.raises(XaiError, match="--option layer=NAME"):
        _in_process(tmp_path / "nolayer", str(images), method="gradcam")
