"""`xai-torch explain` with timm and Hugging Face transformers (tiny, random weights, nothing downloaded)."""
import json

import cv2
import numpy as np
import pytest
import torch

from xai_torch import cli

pytest.importorskip("timm")
pytest.importorskip("transformers")


def _photo(tmp_path):
    path = tmp_path / "noise.png"
    assert cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8))
    return str(path)


def _config(tmp_path):
    cfg = {"model_type": "vit", "image_size": 224, "patch_size": 32, "hidden_size": 16, "num_hidden_layers": 2,
           "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 10}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path / "config.json")


def test_explain_a_hugging_face_vit_from_a_config(tmp_path, capsys):
    torch.manual_seed(0)
    out = tmp_path / "out"
    assert cli.main(["explain", _photo(tmp_path), "--model", f"hf:{_config(tmp_path)}", "--method",
                     "gradcam,gradient", "--target", "3", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("hf:") and summary["layer"] == "vit.layers.1.layernorm_before"
    assert list(summary["methods"]) == ["gradcam", "gradient"]
    assert cv2.imread(str(out / summary["images"]["noise"]["overlays"]["gradcam"])).shape == (224, 224, 3)
    assert summary["images"]["noise"]["target"] == 3


def test_explain_transformer_errors(tmp_path, capsys):
    def error(*args) -> str:
        assert cli.main(["explain", _photo(tmp_path), *args, "--out", str(tmp_path / "out")]) == 2
        return capsys.readouterr().err

    err = error("--model", "timm:vit_tiny_patch16_244")
    assert "timm has no model 'vit_tiny_patch16_244'" in err and "vit_tiny_patch16_224" in err
    assert "the file does not exist" in error("--model", f"hf:{tmp_path / 'missing.json'}")
    err = error("--model", f"hf:{_config(tmp_path)}", "--layer", "classifier", "--method", "gradcam")
    assert "gradcam: the output of layer 'classifier' is a" in err and "choose a layer before the pooling" in err
    assert not (tmp_path / "out").exists()


def test_explain_a_timm_vit_with_attention_methods_and_layer_attribution(tmp_path, capsys):
    import xai_torch as xt
    from xai_torch import zoo
    from xai_torch.models import load_image, load_model

    out, photo = tmp_path / "out", _photo(tmp_path)
    torch.manual_seed(0)
    assert cli.main(["explain", photo, "--model", "timm:test_vit", "--num-classes", "5", "--method",
                     "rollout,chefer,gradcam,gradient", "--target", "2", "--layer", "blocks.0",
                     "--layer-attribution", "blocks.0", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "blocks.0" and len(summary["images"]["noise"]["predictions"]) == 5
    assert list(summary["methods"]) == ["attention_rollout", "transformer_attribution", "gradcam", "gradient"]
    assert {m["family"] for m in summary["methods"].values()} == {"attention", "cam", "gradient"}
    la = summary["layer_attribution"]
    info = la["images"]["noise"]["gradient"]
    assert la["methods"] == ["gradient"] and la["shape"] == [197, 64] and len(info["channels"]) == 64  # not tokens
    assert info["map_shape"] == [14, 14] and (out / info["map"]).is_file()  # the 196 patch tokens on their grid
    torch.manual_seed(0)  # the same random model: the channels are the tokens' sums of the layer gradient
    lm = load_model("timm:test_vit", num_classes=5)
    x = lm.to_input([zoo.center_crop(load_image(photo)[1])])
    ref = xt.Gradient(lm.model, layer="blocks.0")(x, target=2)
    torch.testing.assert_close(torch.tensor(info["channels"]), ref[0].double().sum(0).float(), rtol=1e-4, atol=1e-7)


def test_groups_skip_the_attention_methods_on_a_cnn_and_the_demo_never_runs_them(tmp_path, capsys):
    from torch import nn

    from xai_torch import XaiError
    from xai_torch.cli.demo import demo
    from xai_torch.cli.explain import without_attention_of_groups
    from xai_torch.presets import METHODS, resolve

    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    attention = [n for n, s in METHODS.items() if s.family == "attention"]
    assert attention and set(attention) <= set(resolve("all"))
    kept = without_attention_of_groups(resolve("all"), "all", cnn)
    assert not set(kept) & set(attention) and "gradient" in kept
    assert "skipping" in capsys.readouterr().err
    # named one by one, they stay (and say themselves why they cannot run)
    named = resolve("rollout,gradient")
    assert without_attention_of_groups(named, "rollout,gradient", cnn) == named
    vit = nn.TransformerEncoderLayer(8, 2)
    assert without_attention_of_groups(resolve("all"), "all", vit) == resolve("all")
    with pytest.raises(XaiError, match="no attention"):
        demo(tmp_path / "out", methods=attention)
    assert not (tmp_path / "out").exists()
