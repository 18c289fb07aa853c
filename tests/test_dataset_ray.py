"""The Ray Data engine on a local 2-CPU Ray cluster (one cluster for the module): results equal
the torchrun engine's (same shards, seeds, decoding, quarantine), Parquet shards readable by
load(), a rerun reuses every finished shard (recorded or not) without running Ray, and a rerun
with another method into the same folder is refused with the configuration's differences."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xai_torch import XaiError
from xai_torch import dataset as xd

from dist_helpers import write_images

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}})  # actors import dist_helpers
    yield
    ray.shutdown()


def test_fit_actors_leaves_cpus_for_reading():
    from xai_torch.dataset.ray import fit_actors

    # ray.init(num_cpus=2) with two one-CPU actors left nothing for the read stage and hung
    assert fit_actors(2) == (1, 1.0, 0.0)
    assert fit_actors(1) == (1, 0.5, 0.0)
    assert fit_actors(16, 2) == (2, 1.0, 1.0)  # one actor per GPU
    assert fit_actors(8.0, read_cpus=2.0, cpus_per_actor=2) == (3, 2.0, 0.0)


def test_command_line_engine_option(tmp_path):
    import argparse

    from xai_torch.dataset.ray import engine_for

    args = xd.add_run_parser(argparse.ArgumentParser().add_subparsers()).parse_args(
        [str(tmp_path), "--out", str(tmp_path / "o"), "--engine", "ray", "--device", "cpu"])
    assert args.engine == "ray"
    assert engine_for("torchrun", xd.explain_dataset) is xd.explain_dataset
    with pytest.raises(XaiError, match="--device: torchrun engine options; the Ray engine places its actors"):
        engine_for("ray", xd.explain_dataset)(args.out, args.data, device=args.device)
    assert xd.run_command(args) == 2 and not (tmp_path / "o").exists()  # refused before anything is written


def test_ray_run_equals_torchrun_resumes_and_refuses(tmp_path, cluster):
    from xai_torch.dataset import ray as xray
    from xai_torch.dataset.ray_files import part_name

    root = tmp_path / "imgs"
    write_images(root, 6)
    (root / "a" / "cut.png").write_bytes(b"")  # quarantined in both engines
    kw = dict(model="dist_helpers:tiny_model", method="smoothgrad", options={"samples": 2}, input_size=16,
              threads=1, shard_size=3, on_error="skip", metrics=["deletion"], dtype="float16")
    xd.explain_dataset(tmp_path / "torch", str(root), **kw)
    s = xray.explain_dataset(tmp_path / "ray", str(root), **kw)
    assert s.computed == [0, 1, 2] and s.reused == [] and s.computed_images == 6 and s.world_size == 1
    a, b = xd.load(tmp_path / "torch"), xd.load(tmp_path / "ray")
    assert b.ids == a.ids and len(b.ids) == 6 and "a/cut.png" not in b.ids
    for key in ("indices", "labels", "targets", "predictions", "attributions"):
        np.testing.assert_array_equal(getattr(b, key), getattr(a, key), err_msg=key)  # seeded per shard: equal
    np.testing.assert_array_equal(b.metrics["deletion_auc"], a.metrics["deletion_auc"])
    assert [(q["id"], q["reason"]) for q in b.quarantine] == [("a/cut.png", "empty file (0 bytes)")]
    assert (tmp_path / "ray" / part_name(0)).is_file() and not list((tmp_path / "ray").glob("*.npz"))
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["config"]["engine"] == "ray" and manifest["complete"]

    import pyarrow.parquet as pq  # any Parquet reader sees the shard's columns, one row per image

    table = pq.read_table(tmp_path / "ray" / part_name(1))
    assert {"ids", "indices", "labels", "targets", "predictions", "attributions", "attribution_scale",
            "deletion_auc", "config_hash", "shard"} <= set(table.column_names) and table.num_rows == 3

    del manifest["shards"]["2"]  # written just before a crash, never recorded: read back whole, kept
    (tmp_path / "ray" / "manifest.json").write_text(json.dumps(manifest))
    again = xray.explain_dataset(tmp_path / "ray", str(root), **kw)
    assert again.computed == [] and again.reused == [0, 1, 2]  # nothing handed to Ray
    with pytest.raises(XaiError, match="different configuration .*method: 'smoothgrad' there, 'gradient' here"):
        xray.explain_dataset(tmp_path / "ray", str(root), **{**kw, "method": "gradient", "options": {}})
    with pytest.raises(XaiError, match="engine: 'ray' there, None here"):  # the engines never mix their shards
        xd.explain_dataset(tmp_path / "ray", str(root), **kw)

    from xai_torch.dataset.ray import _verify

    path = tmp_path / "ray" / part_name(1)
    record = json.loads((tmp_path / "ray" / "manifest.json").read_text())["shards"]["1"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))  # a flipped byte: recomputed, never reused
    ids = [str(i) for i in table.column("ids").to_pylist()]
    assert _verify(tmp_path / "ray", 1, record, manifest["config_hash"], ids) is None
    assert _verify(tmp_path / "ray", 1, None, manifest["config_hash"], ids) is None


def test_explain_actor_passes_a_bad_image_back_as_a_row(tmp_path):
    """The map_batches class on its own (no cluster): with on_error='stop' a bad image comes back
    as an error row that the driver turns into a RankFailure naming it; with 'skip' the shard is
    written without it and the record quarantines it; another model's weights are refused."""
    import pickle

    import torch

    from xai_torch.dataset import RankFailure
    from xai_torch.dataset.config import weights_sha256
    from xai_torch.dataset.engine import Loaded
    from xai_torch.dataset.layout import Plan
    from xai_torch.dataset.locks import Ledger
    from xai_torch.dataset.ray import _failure
    from xai_torch.dataset.ray_actor import ExplainShard
    from xai_torch.dataset.ray_files import part_name, read_part

    from dist_helpers import tiny_model

    plan, model = Plan(["a", "b"], ["a", "b"], 2), tiny_model()
    kw = dict(out=str(tmp_path), plan=plan, model=model, weights=None, method="gradient", options={}, dtype="float32",
              target="pred", metrics=[], seed=0, threads=1, config_hash="h", weights_hash=weights_sha256(model),
              use_gpu=False)
    loaded = Loaded(0, [torch.rand(3, 8, 8), None], [1, 2], [None, ("b", "empty file (0 bytes)")])
    batch = {"shard": np.array([0]), "loaded": np.array([pickle.dumps(loaded)], dtype=object)}
    row = ExplainShard(**kw, on_error="stop")(batch)
    assert row["record"][0] == "" and not (tmp_path / part_name(0)).exists()
    err = _failure(Ledger(tmp_path), plan, 0, row["error"][0])
    assert isinstance(err, RankFailure) and err.image == "b" and err.shard == 0
    assert "image 'b' (shard 0): cannot load it: empty file (0 bytes). Pass --on-error skip" in str(err)
    row = ExplainShard(**kw, on_error="skip")(batch)
    record = json.loads(row["record"][0])
    assert row["error"][0] == "" and record["images"] == 1 and record["quarantined"] == [["b", "empty file (0 bytes)"]]
    part = read_part(tmp_path / part_name(0))
    assert list(part["ids"]) == ["a"] and list(part["quarantined"]) == ["b"]
    assert part["attributions"].shape == (1, 3, 8, 8)
    with pytest.raises(XaiError, match="other weights"):
        ExplainShard(**{**kw, "weights_hash": "0" * 64}, on_error="stop")
