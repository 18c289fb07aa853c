"""Run faults of issue 22, in one process: a bad image stops the run naming it and the option
(--on-error stop), or is quarantined with the rest of its shard written (--on-error skip), and a
rerun after deleting the bad file resumes; the defaults that fit the machine (threads, DataLoader
workers, a shard size from the image count only); the launch read from torchrun's environment."""
from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest

from xai_torch import XaiError
from xai_torch import dataset as xd
from xai_torch.dataset.engine import fit_threads, fit_workers, launch_from_env

from dist_helpers import COMMON, broken_tensors, image_folder, run_in_process


def test_a_bad_dataset_item_stops_the_run_naming_it_or_is_quarantined(tmp_path, capsys):
    # 12 items, default shard size min(64, ceil(12 / 8)) = 2: item07 is in shard 3
    with pytest.raises(xd.RankFailure, match=r"rank 0 failed on image 'item07' \(shard 3\).*disk on fire.*"
                                             r"--on-error skip") as err:
        run_in_process(tmp_path / "stop", broken_tensors(), method="gradient")
    assert (err.value.shard, err.value.image) == (3, "item07")
    manifest = xd.load(tmp_path / "stop", allow_partial=True).manifest
    assert "item07" in manifest["error"] and not manifest["complete"] and "3" not in manifest["shards"]

    summary = run_in_process(tmp_path / "skip", broken_tensors(), method="gradient", on_error="skip")
    assert [(e["id"], e["shard"]) for e in summary.quarantine] == [("item07", 3)]
    args = xd.add_run_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
        ["dist_helpers:broken_tensors", "--out", str(tmp_path / "cli"), "--on-error", "skip", "--hash", "names",
         *COMMON])
    assert xd.run_command(args) == 0  # the command line says what it quarantined
    assert "1 image(s) quarantined" in capsys.readouterr().out
    assert xd.load(tmp_path / "cli").manifest["config"]["dataset"]["hash"] == "names"
    res = xd.load(tmp_path / "skip")
    assert "item07" not in res.ids and len(res.ids) == 11 and res.manifest["complete"]
    assert "disk on fire" in res.quarantine[0]["reason"] and res.manifest["shards"]["3"]["images"] == 1
    np.testing.assert_array_equal(res.indices, [i for i in range(12) if i != 7])


def test_skip_quarantines_a_bad_file_and_a_rerun_after_deleting_it_resumes(tmp_path):
    images = image_folder(tmp_path / "images")
    clean = tmp_path / "clean"
    shutil.copytree(images, clean)
    (clean / "a" / "img02.png").unlink()
    (images / "a" / "img02.png").write_bytes(b"")  # a 0-byte PNG
    with pytest.raises(XaiError, match=r"image 'a/img02.png'.*--on-error skip"):
        run_in_process(tmp_path / "stop", str(images), method="gradient")
    out = tmp_path / "run"
    summary = run_in_process(out, str(images), method="gradient", on_error="skip", workers=1)  # decoded ahead
    assert [e["id"] for e in summary.quarantine] == ["a/img02.png"] and summary.computed == [0, 1, 2, 3, 4]
    run_in_process(tmp_path / "ref", str(clean), method="gradient")
    res, ref = xd.load(out), xd.load(tmp_path / "ref")
    assert res.ids == ref.ids and len(res.ids) == 9  # per-image gradients: the same without the bad file
    np.testing.assert_allclose(res.attributions, ref.attributions, rtol=1e-5, atol=1e-7)

    (images / "a" / "img02.png").unlink()  # the user removes the bad file: the resume is accepted
    again = run_in_process(out, str(images), method="gradient")
    assert again.computed == [] and again.reused == [0, 1, 2, 3, 4]
    assert [e["id"] for e in xd.load(out).quarantine] == ["a/img02.png"]
    (images / "a" / "img04.png").unlink()  # removing a file that was not quarantined is a change
    with pytest.raises(XaiError, match="different configuration.*dataset"):
        run_in_process(out, str(images), method="gradient")


def test_defaults_fit_the_machine_and_the_launch_comes_from_torchrun_env(tmp_path):
    assert xd.default_shard_size(48) == 6 and xd.default_shard_size(10_000) == 64 and xd.default_shard_size(1) == 1
    assert [fit_threads(2, 1), fit_threads(2, 2), fit_threads(16, 4), fit_threads(1, 4)] == [2, 1, 4, 1]
    assert [fit_workers(2, 2), fit_workers(2, 1), fit_workers(32, 2)] == [0, 1, 2]
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "r1",
           "MASTER_ADDR": "h", "MASTER_PORT": "29500"}
    launch = launch_from_env(env)
    assert (launch.rank, launch.world, launch.local_world, launch.launched) == (3, 4, 2, True)
    assert launch.job == launch_from_env(env).job != launch_from_env({**env, "MASTER_PORT": "29501"}).job
    alone = launch_from_env({})
    assert (alone.rank, alone.world, alone.launched) == (0, 1, False) and alone.job != launch_from_env({}).job
    for bad in ({"on_error": "ignore"}, {"threads": 0}, {"workers": -1}, {"shard_size": 0}):
        with pytest.raises(XaiError, match=next(iter(bad))):
            run_in_process(tmp_path / "bad", broken_tensors(), **bad)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    with pytest.raises(XaiError, match="holds no manifest.json"):
        xd.load(tmp_path)
