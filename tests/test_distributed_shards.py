"""Shard files, the manifest and the output folder: a job whose launcher dies stops, holds the
folder against a second job while it runs, and a rerun resumes with only the missing shards
(stale temporary files removed, an unrecorded but whole shard kept); corrupt and truncated
shards are recomputed; another configuration - thread count and hash rule included - is refused."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from xai_torch import XaiError
from xai_torch import dataset as xd

from dist_helpers import COMMON, alive, image_folder, run_in_process, same, start_under_parent


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


def _wait(condition, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def _recorded(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_job_holds_its_folder_dies_with_its_launcher_and_a_rerun_resumes(tmp_path, images):
    out, clean = tmp_path / "run", tmp_path / "clean"
    run_in_process(clean, str(images), method="gradient", shard_size=3)  # 4 shards, uninterrupted
    # a rank that sleeps after recording its 2nd shard, under a launcher that the test kills
    parent, pid = start_under_parent([str(images), "--out", str(out), "--method", "gradient", "--shard-size", "3",
                                      *COMMON, "--test-fault", "sleep@2"])
    try:
        _wait(lambda: _recorded(out) == 2, 120, "the rank's first 2 shards")
        with pytest.raises(XaiError, match=rf"in use by another job \(pid {pid} on host"):
            run_in_process(out, str(images), method="gradient", shard_size=3)
        parent.kill()  # SIGKILL: the launcher gets no chance to stop its rank
        parent.wait()
        _wait(lambda: not alive(pid), 15, "the rank to exit after its launcher died")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert sorted(p.name for p in out.glob("shard-*.npz")) == ["shard-00000.npz", "shard-00001.npz"]
    with pytest.raises(XaiError, match="unfinished"):
        xd.load(out)
    (out / ".shard-00003.npz.tmp-99999-0badc0de").write_bytes(b"half a shard")  # left by a killed write
    shutil.copy(clean / "shard-00002.npz", out)  # whole, same config, but not in the manifest
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].npz")}

    summary = run_in_process(out, str(images), method="gradient", shard_size=3)
    assert summary.reused == [0, 1, 2] and summary.computed == [3] and summary.computed_images == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].npz")} == mtimes
    assert not list(out.glob("*.tmp-*"))
    manifest = xd.load(out).manifest
    assert manifest["complete"] and manifest["runs"][-1]["computed"] == [3] and len(manifest["runs"]) == 2
    same(xd.load(clean), xd.load(out))

    # corrupt one shard (flip bytes) and truncate another: load refuses, a rerun recomputes both
    shard1, shard3 = out / "shard-00001.npz", out / "shard-00003.npz"
    data = bytearray(shard1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard1.write_bytes(bytes(data))
    shard3.write_bytes(shard3.read_bytes()[:100])
    with pytest.raises(XaiError, match="checksum"):
        xd.load(out)
    summary = run_in_process(out, str(images), method="gradient")  # the recorded shard size is reused
    assert summary.computed == [1, 3] and summary.reused == [0, 2]
    same(xd.load(clean), xd.load(out))
    assert run_in_process(out, str(images), method="gradient", shard_size=3).computed == []  # all verified


def test_config_mismatch_is_refused(tmp_path, images):
    out = tmp_path / "run"
    run_in_process(out, str(images), method="gradient", shard_size=5)
    with pytest.raises(XaiError, match=r"different configuration \(.*method: 'gradient' there, 'smoothgrad' here"):
        run_in_process(out, str(images), method="smoothgrad", shard_size=5)
    with pytest.raises(XaiError, match="shard_size: 5 there, 4 here"):
        run_in_process(out, str(images), method="gradient", shard_size=4)
    with pytest.raises(XaiError, match="seed"):
        run_in_process(out, str(images), method="gradient", shard_size=5, seed=3)
    with pytest.raises(XaiError, match=r"threads: 1 there, 2 here.*pass --threads 1 to resume"):
        run_in_process(out, str(images), method="gradient", shard_size=5, threads=2)
    with pytest.raises(XaiError, match=r"dataset: .*'hash': 'content'.* there, .*'hash': 'names'.* here"):
        run_in_process(out, str(images), method="gradient", shard_size=5, hash="names")  # --hash reaches the source
    (images / "a" / "extra.png").write_bytes((images / "a" / "img00.png").read_bytes())
    try:
        with pytest.raises(XaiError, match="dataset"):
            run_in_process(out, str(images), method="gradient", shard_size=5)
    finally:
        (images / "a" / "extra.png").unlink()
    # no --threads: the recorded count is used, so the resume is accepted
    assert run_in_process(out, str(images), method="gradient", shard_size=5, threads=None).reused == [0, 1]
