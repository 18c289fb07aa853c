"""The torchrun engine (gloo-free: no process group, CPU): two processes give one process's
results; a stalled rank (hung, holding a shard) does not block the other, which finishes
every other shard and stops with a message; a plain rerun completes the job with the results of
an uninterrupted run. At most two torchrun launches (they are slow): everything else runs in one
process (tests/test_distributed_*.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from xai_torch import dataset as xd

from dist_helpers import COMMON, image_folder, run_cli, run_in_process, same


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


def test_torchrun_two_processes_match_one(tmp_path):
    data = "dist_helpers:tensors"  # 12 images: default shard size min(64, ceil(12 / 8)) = 2, 6 shards
    res = run_cli([data, "--out", str(tmp_path / "two"), "--method", "gradient", "--metrics", "deletion,insertion",
                   "--workers", "1", *COMMON], nproc=2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 processes" in res.stdout and "img/s" in res.stdout
    run_in_process(tmp_path / "one", data, method="gradient", metrics=["deletion", "insertion"])
    two, one = xd.load(tmp_path / "two"), xd.load(tmp_path / "one")
    same(one, two)
    assert two.manifest["complete"] and [r["world_size"] for r in two.manifest["runs"]] == [2]
    assert two.manifest["config"]["shard_size"] == 2 and two.manifest["num_shards"] == 6
    assert {r["rank"] for r in two.manifest["shards"].values()} <= {0, 1}
    assert two.attributions.shape == (12, 3, 16, 16) and set(two.metrics) == {"deletion_auc", "insertion_auc"}
    assert np.isfinite(two.metrics["deletion_auc"]).all()
    assert not list((tmp_path / "two").glob("*.tmp-*"))


def test_a_stalled_rank_does_not_block_the_other_and_a_rerun_completes(tmp_path, images):
    out = tmp_path / "two"
    # whichever rank claims shard 3 hangs holding it; the other finishes the rest, waits 3 s
    # for shard 3, then stops (status 75) and torchrun ends the hung rank (a SIGSTOPped rank is
    # handled the same way, but torchrun then needs its 30 s SIGKILL grace to end it)
    res = run_cli([str(images), "--out", str(out), "--method", "smoothgrad", "--option", "samples=4",
                   "--metrics", "deletion", "--finish-timeout", "3", "--test-fault", "hang@3", *COMMON], nproc=2)
    assert res.returncode != 0
    assert re.search(r"shard\(s\) 3 are held by another rank \(pid \d+\) that has made no progress for 3 s",
                     res.stderr), res.stderr[-3000:]
    assert "rerun the same command to finish the job" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["0", "1", "2", "4"] and not manifest["complete"]
    assert "shard(s) 3" in manifest["error"] and manifest["runs"][0]["world_size"] == 2

    summary = run_in_process(out, str(images), method="smoothgrad", options={"samples": 4}, metrics=["deletion"])
    assert summary.computed == [3] and summary.reused == [0, 1, 2, 4]
    run_in_process(tmp_path / "one", str(images), method="smoothgrad", options={"samples": 4}, metrics=["deletion"])
    mixed, one = xd.load(out), xd.load(tmp_path / "one")
    same(one, mixed)  # shards of 2 processes + 1 process == 1 process: seeds follow the shard, not the rank
    assert mixed.manifest["complete"] and "error" not in mixed.manifest
    # the seed really reaches the explainer: another seed, other noise
    run_in_process(tmp_path / "seed1", str(images), method="smoothgrad", options={"samples": 4}, seed=1)
    assert not np.allclose(xd.load(tmp_path / "seed1").attributions, one.attributions)
