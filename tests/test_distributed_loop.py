"""The run loop of xai_torch.distributed under torchrun (gloo, CPU): two processes give one process's results;
a failing rank stops every rank, naming itself and the image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xai_torch import dataset as xd

from dist_helpers import COMMON, image_folder, run_cli, run_in_process, same


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("method, options, data, metrics", [
    ("gradient", [], "folder", "deletion,insertion"),                     # deterministic, image folder
    ("smoothgrad", ["samples=4"], "dist_helpers:tensors", ""),      # seeded stochastic, dataset factory
])
def test_torchrun_two_processes_match_one(tmp_path, images, method, options, data, metrics):
    data = str(images) if data == "folder" else data
    opts = [a for o in options for a in ("--option", o)]
    res = run_cli([data, "--out", str(tmp_path / "two"), "--method", method, *opts, "--shard-size", "3",
                "--metrics", metrics, *COMMON], nproc=2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 processes" in res.stdout and "img/s" in res.stdout
    run_in_process(tmp_path / "one", data, method=method, options=xd.parse_options(options), shard_size=3,
                metrics=[m for m in metrics.split(",") if m])
    two, one = xd.load(tmp_path / "two"), xd.load(tmp_path / "one")
    same(one, two)
    assert two.manifest["complete"] and two.manifest["runs"][0]["world_size"] == 2
    assert {r["rank"] for r in two.manifest["shards"].values()} == {0, 1}
    n, size = (10, 32) if data == str(images) else (12, 16)
    assert len(two.ids) == n and two.attributions.shape == (n, 3, size, size)
    if metrics:
        assert set(two.metrics) == {"deletion_auc", "insertion_auc"} and np.isfinite(two.metrics["deletion_auc"]).all()
    if method == "smoothgrad":  # the seed really reaches the explainer: another seed, other noise
        run_in_process(tmp_path / "seed1", data, method=method, options={"samples": 4}, shard_size=3, seed=1)
        assert not np.allclose(xd.load(tmp_path / "seed1").attributions, one.attributions)


def test_error_in_one_rank_stops_the_run_naming_rank_and_image(tmp_path):
    res = run_cli(["dist_helpers:broken_tensors", "--out", str(tmp_path / "run"), "--shard-size", "4",
                *COMMON], nproc=2)
    assert res.returncode != 0
    assert "rank 1 failed on image 'item07' (shard 1)" in res.stderr and "disk on fire" in res.stderr
    manifest = xd.load(tmp_path / "run", allow_partial=True).manifest
    assert "item07" in manifest["error"] and not manifest["complete"] and "1" not in manifest["shards"]
