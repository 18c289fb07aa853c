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


# --- transformers: timm and Hugging Face models, their default CAM layers --------------------------------
def _hf_config(folder, **extra):
    cfg = {"model_type": "vit", "image_size": 224, "patch_size": 32, "hidden_size": 16, "num_hidden_layers": 2,
           "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 10, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(__import__("json").dumps(cfg))
    return folder / "config.json"


def test_transformer_cam_layers():
    pytest.importorskip("timm")
    from torchvision.models import swin_transformer as sw

    x = torch.zeros(1, 3, 32, 32)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                               mlp_dim=32).eval()
    assert auto_cam_layer(vit, x) == "encoder.layers.encoder_layer_1.ln_1"  # the last block's input norm
    swin = sw.SwinTransformer(patch_size=[4, 4], embed_dim=12, depths=[1, 1], num_heads=[1, 1],
                              window_size=[2, 2]).eval()
    assert auto_cam_layer(swin, x) == "permute"  # the last map before the pooling, channels first
    lm = load_model("timm:test_vit", num_classes=7)
    assert lm.name == "timm:test_vit" and lm.normalize == ((0.5,) * 3, (0.5,) * 3) and not lm.model.training
    assert lm.model(lm.to_input([np.zeros((224, 224, 3), np.uint8)])).shape == (1, 7)  # built at 224 px
    assert auto_cam_layer(lm.model, torch.zeros(1, 3, 224, 224)) == f"blocks.{len(lm.model.blocks) - 1}.norm1"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in lm.model.modules())


def test_load_hf_from_a_local_config_and_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = _hf_config(tmp_path / "cfg")
    lm = load_model(f"hf:{config}")
    assert lm.name == f"hf:{config}" and lm.weights is None and lm.normalize[0] == (0.485, 0.456, 0.406)
    x = lm.to_input([np.zeros((224, 224, 3), np.uint8)] * 2)
    assert lm.model(x).shape == (2, 10)  # the adapter: pixel_values in, logits out
    assert auto_cam_layer(lm.model, x) == "vit.layers.1.layernorm_before"
    # a folder with weights and a preprocessor config: both are used
    torch.manual_seed(0)
    trained = transformers.ViTForImageClassification(transformers.ViTConfig.from_json_file(str(config))).eval()
    trained.save_pretrained(tmp_path / "model")
    pre = '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}'
    (tmp_path / "model" / "preprocessor_config.json").write_text(pre)
    lm = load_model(f"hf:{tmp_path / 'model'}", num_classes=10)
    assert lm.normalize == ((0.5,) * 3, (0.25,) * 3)
    torch.testing.assert_close(lm.model(x), trained(pixel_values=x).logits)
    # --weights: a state dict of the Hugging Face model
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    loaded = load_model(f"hf:{config}", weights=tmp_path / "w.pt").model
    torch.testing.assert_close(loaded(x), trained(pixel_values=x).logits)


def test_timm_and_hf_errors(tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    with pytest.raises(XaiError, match=r"timm has no model 'vit_tiny_patch16_244'\. Closest: vit_tiny_patch16_224"):
        load_model("timm:vit_tiny_patch16_244")
    with pytest.raises(XaiError, match=r"hf:.*nope.*file does not exist.*nothing is downloaded"):
        load_model(f"hf:{tmp_path / 'nope.json'}")
    with pytest.raises(XaiError, match="folder has no config.json"):
        load_model(f"hf:{tmp_path}")
    (tmp_path / "bad.json").write_text('{"hidden_size": 4}')
    with pytest.raises(XaiError, match="no \"model_type\""):
        load_model(f"hf:{tmp_path / 'bad.json'}")
    (tmp_path / "odd.json").write_text('{"model_type": "no_such_model"}')
    with pytest.raises(XaiError, match="does not know model_type 'no_such_model'"):
        load_model(f"hf:{tmp_path / 'odd.json'}")
    with pytest.raises(XaiError, match=r"unknown model 'timm:'.*timm:NAME.*hf:PATH"):
        load_model("timm:")


def test_timm_and_transformers_are_optional(monkeypatch, tmp_path):
    import pathlib
    import re
    import sys

    import xai_torch

    top_level = re.compile(r"^(import|from) (timm|transformers)\b", re.M)  # imported inside functions only
    for path in pathlib.Path(xai_torch.__file__).parent.rglob("*.py"):
        assert not top_level.search(path.read_text()), path
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(XaiError, match="needs timm: pip install timm"):
        load_model("timm:vit_tiny_patch16_224")
    with pytest.raises(XaiError, match="needs transformers: pip install transformers"):
        load_model(f"hf:{_hf_config(tmp_path)}")
