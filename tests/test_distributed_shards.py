"""Shard files and the manifest: a killed run resumes with only the missing shards,
corrupt and truncated shards are recomputed, another configuration is refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from xai_torch import XaiError
from xai_torch import dataset as xd

from dist_helpers import COMMON, image_folder, run_cli, run_in_process, same


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


def test_killed_run_resumes_only_missing_shards_and_recomputes_corrupt_ones(tmp_path, images):
    out = tmp_path / "run"
    args = [str(images), "--out", str(out), "--method", "gradient", "--shard-size", "3", *COMMON]
    res = run_cli([*args, "--stop-after-shards", "2"])  # dies right after writing its 2nd shard
    assert res.returncode == 75, res.stderr[-3000:]
    assert sorted(p.name for p in out.glob("shard-*.npz")) == ["shard-00000.npz", "shard-00001.npz"]
    with pytest.raises(XaiError, match="unfinished"):
        xd.load(out)
    assert len(xd.load(out, allow_partial=True).ids) == 3  # shard 1 is on disk but not yet in the manifest
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npz")}

    summary = run_in_process(out, str(images), method="gradient", shard_size=3)
    assert summary.reused == [0, 1] and summary.computed == [2, 3] and summary.computed_images == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-0000[01].npz")} == mtimes
    manifest = xd.load(out).manifest
    assert manifest["complete"] and manifest["runs"][-1]["computed"] == [2, 3]
    run_in_process(tmp_path / "clean", str(images), method="gradient", shard_size=3)
    same(xd.load(tmp_path / "clean"), xd.load(out))

    # corrupt one shard (flip bytes) and truncate another: load refuses, a rerun recomputes both
    shard1, shard3 = out / "shard-00001.npz", out / "shard-00003.npz"
    data = bytearray(shard1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard1.write_bytes(bytes(data))
    shard3.write_bytes(shard3.read_bytes()[:100])
    with pytest.raises(XaiError, match="checksum"):
        xd.load(out)
    summary = run_in_process(out, str(images), method="gradient", shard_size=3)
    assert summary.computed == [1, 3] and summary.reused == [0, 2]
    same(xd.load(tmp_path / "clean"), xd.load(out))
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
    (images / "a" / "extra.png").write_bytes((images / "a" / "img00.png").read_bytes())
    try:
        with pytest.raises(XaiError, match="dataset"):
            run_in_process(out, str(images), method="gradient", shard_size=5)
    finally:
        (images / "a" / "extra.png").unlink()
    assert run_in_process(out, str(images), method="gradient", shard_size=5).reused == [0, 1]
