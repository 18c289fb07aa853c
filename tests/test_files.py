"""xai_torch/files.py and its users in the dataset runner: links planted in an output folder are
replaced, never written through; names read from a manifest never lead out of the run folder;
a manifest that is not one is an XaiError (issue 19 items 7 and 8)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from xai_torch import XaiError
from xai_torch import dataset as xd
from xai_torch.dataset.shards import shard_ok, write_shard
from xai_torch.files import atomic_write, check_folder, inside, staged

from dist_helpers import run_in_process, tensors


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return victim


def test_atomic_write_replaces_a_link_and_leaves_its_target(tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").symlink_to(victim)
    (out / "new.html").symlink_to(tmp_path / "created-through-link.html")  # a dangling link
    atomic_write(out / "report.html", b"mine")
    atomic_write(out / "new.html", b"mine too")
    assert victim.read_text() == "precious" and not (tmp_path / "created-through-link.html").exists()
    assert not (out / "report.html").is_symlink() and (out / "report.html").read_bytes() == b"mine"
    assert (out / "new.html").read_bytes() == b"mine too"
    assert sorted(p.name for p in out.iterdir()) == ["new.html", "report.html"]  # no temporary file left
    (out / "folder").mkdir()
    with pytest.raises(XaiError, match="folder of that name"):
        atomic_write(out / "folder", b"x")


def test_inside_refuses_names_that_leave_the_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.npz").write_bytes(b"")
    (tmp_path / "outside.npz").write_bytes(b"")
    (run / "link.npz").symlink_to(tmp_path / "outside.npz")
    assert inside(run, "a.npz") == (run / "a.npz").resolve()
    for bad in ["../outside.npz", str(tmp_path / "outside.npz"), "link.npz", "", ".", None, 3]:
        with pytest.raises(XaiError, match="outside its folder|not a file name"):
            inside(run, bad, "shard")


def test_staged_moves_files_in_on_success_and_leaves_the_folder_as_it_was_on_failure(tmp_path):
    victim = _victim(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / "cat.png").symlink_to(victim)
    with staged(out) as stage:
        (stage / "cat.png").write_bytes(b"png")
        (stage / "summary.json").write_text("{}")
    assert victim.read_text() == "precious" and (out / "cat.png").read_bytes() == b"png"
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "old.txt", "summary.json"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RuntimeError, match="later method failed"):
        with staged(out) as stage:
            (stage / "cat.png").write_bytes(b"half")
            raise RuntimeError("later method failed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "fresh" / "out"
    with pytest.raises(RuntimeError):
        with staged(fresh) as stage:
            raise RuntimeError("boom")
    assert not fresh.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(XaiError, match="existing file, not a folder"):
        check_folder(tmp_path / "file")
    with pytest.raises(XaiError, match="existing file, not a folder"):
        with staged(tmp_path / "file"):
            pass


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    run_in_process(out, tensors(), method="gradient", shard_size=6)  # 12 tiny images, 2 shards
    return out


def _manifest(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    text = path.read_text()
    path.write_text(edit(text))
    return dst


def test_load_reads_nothing_outside_the_run_folder(tmp_path, run):
    shutil.copy(run / "shard-00000.npz", tmp_path / "outside.npz")

    def escape(text):
        m = json.loads(text)
        m["shards"]["0"]["file"] = "../outside.npz"
        return json.dumps(m)

    bad = _manifest(run, tmp_path / "bad", escape)
    for verify in (True, False):
        with pytest.raises(XaiError, match="points outside its folder"):
            xd.load(bad, verify=verify)
    linked = _manifest(run, tmp_path / "linked", lambda t: t)
    (linked / "shard-00000.npz").unlink()
    (linked / "shard-00000.npz").symlink_to(tmp_path / "outside.npz")
    with pytest.raises(XaiError, match="points outside its folder"):
        xd.load(linked)
    assert len(xd.load(run).ids) == 12


@pytest.mark.parametrize("text, match", [
    ("{not json", "unreadable"), ("[1, 2]", "JSON list, not the object"), ("{}", "num_shards"),
    ('{"num_shards": 2}', "'shards' object"), ('{"num_shards": 2, "shards": {"0": {"file": "x.npz"}}}', "sha256"),
    ('{"num_shards": 1, "shards": {"5": {"file": "x.npz", "sha256": "0"}}}', "below 1"),
])
def test_load_of_a_manifest_that_is_not_one_is_an_xai_error(tmp_path, run, text, match):
    bad = _manifest(run, tmp_path / "bad", lambda t: text)
    with pytest.raises(XaiError, match=match):
        xd.load(bad)


def test_a_shard_that_is_not_one_is_an_xai_error(tmp_path, run):
    def unverified(text):
        m = json.loads(text)
        m["shards"]["0"]["file"] = "junk.npz"
        return json.dumps(m)

    bad = _manifest(run, tmp_path / "bad", unverified)
    (bad / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(XaiError, match="unreadable"):
        xd.load(bad, verify=False)
    np.savez(bad / "junk.npz", x=np.zeros(1))
    with pytest.raises(XaiError, match="lacks"):
        xd.load(bad, verify=False)


def test_the_runner_replaces_links_in_its_folder_and_never_writes_through_them(tmp_path, run):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    outside = tmp_path / "outside.npz"
    shutil.copy(run / "shard-00001.npz", outside)
    before = outside.read_bytes()
    (out / "shard-00001.npz").unlink()
    (out / "shard-00001.npz").symlink_to(outside)  # the same bytes: its checksum matches, still not ours
    assert not shard_ok(out, 1, json.loads((out / "manifest.json").read_text())["shards"]["1"], "", [])
    summary = run_in_process(out, tensors(), method="gradient", shard_size=6)
    assert summary.computed == [1] and summary.reused == [0]
    assert not (out / "shard-00001.npz").is_symlink() and outside.read_bytes() == before
    (out / "shard-00009.npz").symlink_to(tmp_path / "made-through-link.npz")
    write_shard(out, 9, {"x": np.zeros(2)})
    assert not (tmp_path / "made-through-link.npz").exists() and not (out / "shard-00009.npz").is_symlink()
    os.remove(out / "manifest.json")
    (out / "manifest.json").symlink_to(tmp_path / "outside.npz")
    with pytest.raises(XaiError, match="points outside its folder"):
        run_in_process(out, tensors(), method="gradient", shard_size=6)


def test_run_out_naming_a_file_is_an_xai_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(XaiError, match="existing file, not a folder"):
        run_in_process(tmp_path / "file", tensors(), method="gradient", shard_size=6)
