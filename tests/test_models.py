"""The one model loader (xai_torch/models.py): images, weights files, CAM layers, devices."""
import cv2
import numpy as np
import pytest
import torch
import torchvision

from xai_torch import zoo
from xai_torch.errors import XaiError
from xai_torch.models import auto_cam_layer, check_device, load_image, load_model


def test_load_image_reads_files_and_packaged_names(tmp_path):
    grey = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    assert cv2.imwrite(str(tmp_path / "g.png"), grey)
    name, rgb, src = load_image(str(tmp_path / "g.png"))
    assert (name, rgb.shape, rgb.dtype, src) == ("g", (30, 40, 3), np.uint8, str(tmp_path / "g.png"))
    assert (rgb == grey[..., None]).all()
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[..., 0] = 255  # blue in OpenCV's order
    assert cv2.imwrite(str(tmp_path / "b.png"), bgra)
    assert load_image(str(tmp_path / "b.png"))[1][0, 0].tolist() == [0, 0, 255]  # RGB, alpha dropped
    name, rgb, src = load_image("coffee")
    assert name == "coffee" and src == "packaged:coffee" and np.array_equal(rgb, zoo.image("coffee"))


@pytest.mark.parametrize("name, layer", [("resnet18", "layer4"), ("mobilenet_v2", "features"),
                                         ("squeezenet1_1", "classifier.1")])
def test_auto_cam_layer_leaves_no_hooks(name, layer):
    model = torchvision.models.get_model(name, weights=None).eval()
    assert auto_cam_layer(model, torch.zeros(1, 3, 64, 64)) == layer
    assert not any(m._forward_hooks for m in model.modules())


def test_load_model_and_device_errors():
    lm = load_model("efficientnet_lite0")
    assert lm.name == "efficientnet_lite0" and lm.layer == "_conv_head" and lm.normalize == zoo.NORMALIZE
    assert not lm.model.training
    with pytest.raises(XaiError, match="--num-classes must be a positive integer"):
        load_model("torchvision:resnet18", num_classes=0)
    with pytest.raises(XaiError, match="--device must be cpu, cuda or cuda:N"):
        check_device("gpu0")
    assert check_device("cpu") == torch.device("cpu")
