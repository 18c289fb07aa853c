"""Explaining a shard: float16 storage scaled back by load(), label and argmax targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xai_torch import dataset as xd

from dist_helpers import image_folder, run_in_process


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


def test_float16_options_targets_and_labels(tmp_path, images):
    run_in_process(tmp_path / "f32", str(images), method="integrated_gradients", options={"steps": 8}, shard_size=4,
                target="label")
    run_in_process(tmp_path / "f16", str(images), method="integrated_gradients", options={"steps": 8}, shard_size=4,
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
