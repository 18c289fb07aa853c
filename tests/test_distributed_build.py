"""Building a run: model, explainer (registry presets with the model's layer) and data;
XaiError for bad arguments."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xai_torch import XaiError
from xai_torch import dataset as xd

from dist_helpers import image_folder, run_in_process


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize("kwargs, message", [
    ({"data": "nowhere/"}, "neither an image folder nor a dataset factory"),
    ({"data": "empty"}, "holds no images"),
    ({"method": "magic"}, "unknown method 'magic'; choose a preset from gradient"),
    ({"model": "torchvision:resnet1"}, "no classification model 'resnet1'"),
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
        run_in_process(tmp_path / "out", data, **kwargs)


def test_cam_preset_takes_the_model_layer(tmp_path, images):
    run_in_process(tmp_path / "cam", str(images), method="gradcam", options={"layer": "conv2"}, shard_size=10)
    res = xd.load(tmp_path / "cam")
    assert res.attributions.shape == (10, 1, 32, 32) and "layer='conv2'" in res.manifest["config"]["explainer"]
    with pytest.raises(XaiError, match="--option layer=NAME"):
        run_in_process(tmp_path / "nolayer", str(images), method="gradcam")
