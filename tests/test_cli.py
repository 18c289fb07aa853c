"""`xai-torch demo` / `xai-torch explain` / `python -m xai_torch`: files written, JSON content, errors."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision

from xai_torch import cli, zoo
from xai_torch.errors import XaiError

# 5 points per deletion / insertion curve instead of 29: the same code, a sixth of the model calls
COARSE = str(224 * 56)


def test_demo_writes_overlays_summary_and_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--images", "chelsea,coffee", "--methods",
                     "gradient,GBP,gradcam++,ig", "--steps", "8", "--no-metrics", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    chelsea, coffee = summary["images"]["chelsea"], summary["images"]["coffee"]
    assert chelsea["predictions"][0]["label"] == "tiger cat" and chelsea["target"] == 282
    assert coffee["predictions"][0]["label"] == "espresso"
    probs = [p["probability"] for p in chelsea["predictions"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    # aliases resolve to the canonical names, in the order given
    assert list(summary["methods"]) == ["gradient", "guided_backprop", "gradcam_pp", "integrated_gradients"]
    assert all(m["seconds"] > 0 and m["kind"] in cli.KINDS for m in summary["methods"].values())
    assert summary["metrics"] is None and "deletion_auc" not in chelsea
    assert summary["layer"] == "_conv_head" and summary["weights"] == "packaged"
    for name in ("chelsea_gradient", "coffee_guided_backprop", "chelsea_gradcam_pp", "coffee_integrated_gradients",
                 "chelsea"):
        img = cv2.imread(str(out / f"{name}.png"))
        assert img is not None and img.shape == (224, 224, 3) and img.std() > 5  # a picture, not a blank
    grid = cv2.imread(str(out / "chelsea_grid.png"))
    assert grid.shape[1] > 5 * 224  # the photo and 4 overlays side by side
    assert (out / "report.html").is_file()
    printed = capsys.readouterr().out
    assert "tiger cat" in printed and "report.html" in printed


def test_demo_rejects_unknown_names(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--methods", "magic"]) == 2
    assert "unknown method(s) ['magic']; choose from gradient" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path), "--images", "lena"]) == 2
    assert "unknown image(s) ['lena']" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_method_names_aliases_and_groups():
    names = cli._names("IG, gradcam++, Guided-Backprop, shap, ig", cli.METHODS, "method(s)", cli.ALIASES, cli.GROUPS)
    assert names == ["integrated_gradients", "gradcam_pp", "guided_backprop", "kernel_shap"]
    assert cli._names("all", cli.METHODS, "m", cli.ALIASES, cli.GROUPS) == list(cli.METHODS)
    fast = cli._names("fast", cli.METHODS, "m", cli.ALIASES, cli.GROUPS)
    assert "gradcam" in fast and not set(fast) & set(cli.SLOW)
    assert all(cli.ALIASES[a] in cli.METHODS for a in cli.ALIASES)
    with pytest.raises(XaiError, match=r"unknown method\(s\) \['gradcm'\].*Did you mean gradcam"):
        cli._names("gradcm", cli.METHODS, "method(s)", cli.ALIASES, cli.GROUPS)
    assert cli.DEMO_METHODS == list(cli.METHODS)  # the demo shows every method


def test_every_method_builds_an_explainer(lite0):
    import xai_torch as xt

    resnet = torchvision.models.resnet18(weights=None)
    for name, (factory, kind) in cli.METHODS.items():
        assert isinstance(factory(lite0), xt.Explainer), name
        assert kind in cli.KINDS, name
        # another model: its CAM layer, its normalisation, other path steps
        e = factory(resnet, "layer4", cli.IMAGENET_NORMALIZE, 7)
        assert isinstance(e, xt.Explainer), name
        if name in cli.CAM_METHODS:
            assert "layer4" in repr(e), name
        if name in ("integrated_gradients", "blur_ig", "guided_ig", "xrai"):
            assert e.steps == 7, name


def _write_png(path, rgb):
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return str(path)


def test_explain_packaged_model_on_files(tmp_path, capsys):
    # an odd-sized file, resized and centre-cropped; a cat stays a cat only with the right channel order
    photo = _write_png(tmp_path / "my cat.png", zoo.image("chelsea")[20:320, 40:400])
    out = tmp_path / "out"
    assert cli.main(["explain", photo, "--method", "gradcam", "--metrics", "--metric-step", COARSE,
                     "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["images"]) == ["my_cat"]  # the file stem, made file-safe
    cat = summary["images"]["my_cat"]
    assert cat["file"] == photo
    assert cat["predictions"][0]["label"] in ("tiger cat", "Egyptian cat", "tabby, tabby cat")
    assert summary["metrics"]["step"] == 224 * 56
    assert 0 < cat["deletion_auc"]["gradcam"] < 1 and 0 < cat["insertion_auc"]["gradcam"] < 1
    assert cv2.imread(str(out / cat["overlays"]["gradcam"])).shape == (224, 224, 3)
    m = summary["methods"]["gradcam"]
    assert len(m["fractions"]) == len(m["deletion_curve_mean"]) == len(m["insertion_curve_mean"]) == 5
    assert m["fractions"][0] == 0 and m["fractions"][-1] == 1.0
    assert m["deletion_auc_mean"] == cat["deletion_auc"]["gradcam"]
    assert (out / "report.html").is_file()


def test_load_image_reads_files_and_packaged_names(tmp_path):
    grey = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    assert cv2.imwrite(str(tmp_path / "g.png"), grey)
    name, rgb, src = cli.load_image(str(tmp_path / "g.png"))
    assert (name, rgb.shape, rgb.dtype, src) == ("g", (30, 40, 3), np.uint8, str(tmp_path / "g.png"))
    assert (rgb == grey[..., None]).all()
    bgra = np.zeros((8, 8, 4), np.uint8)
    bgra[..., 0] = 255  # blue in OpenCV's order
    assert cv2.imwrite(str(tmp_path / "b.png"), bgra)
    assert cli.load_image(str(tmp_path / "b.png"))[1][0, 0].tolist() == [0, 0, 255]  # RGB, alpha dropped
    name, rgb, src = cli.load_image("coffee")
    assert name == "coffee" and src == "packaged:coffee" and np.array_equal(rgb, zoo.image("coffee"))
    assert cli._unique(["a", "a", "my cat"]) == ["a", "a_2", "my_cat"]


def test_explain_torchvision_model_with_weights_file(tmp_path, capsys):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    weights = tmp_path / "resnet18_10.pt"
    torch.save({"state_dict": model.state_dict()}, weights)  # a checkpoint dict holding the state dict
    rgb = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    photo = _write_png(tmp_path / "noise.png", rgb)
    out = tmp_path / "out"
    assert cli.main(["explain", photo, "--model", "torchvision:resnet18", "--weights", str(weights),
                     "--num-classes", "10", "--method", "gradcam,gradient", "--target", "3", "--device", "cpu",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "torchvision:resnet18" and summary["weights"] == str(weights)
    assert summary["layer"] == "layer4"  # found automatically
    info = summary["images"]["noise"]
    assert info["target"] == 3 and summary["target"] == 3
    # the predictions are those of the same weights on the ImageNet-normalised 224 crop
    crop = zoo.center_crop(rgb).astype(np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(((crop - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    top = probs.topk(5)
    assert [p["class"] for p in info["predictions"]] == top.indices.tolist()
    assert [p["probability"] for p in info["predictions"]] == pytest.approx(top.values.tolist(), abs=2e-4)
    assert "label" not in info["predictions"][0]  # 10 classes: not ImageNet's
    for m in ("gradcam", "gradient"):
        assert cv2.imread(str(out / f"noise_{m}.png")).shape == (224, 224, 3)


def test_explain_errors(tmp_path, capsys):
    def error(*args) -> str:
        assert cli.main(["explain", *args, "--out", str(tmp_path / "out")]) == 2
        return capsys.readouterr().err

    photo = _write_png(tmp_path / "ok.png", np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "broken.png").write_text("not a picture")
    assert "image file 'missing.jpg' does not exist" in error("missing.jpg")
    assert "OpenCV cannot decode it" in error(str(tmp_path / "broken.png"))
    assert "is a folder" in error(str(tmp_path))
    assert "unknown model 'resnet18'" in error(photo, "--model", "resnet18")
    err = error(photo, "--model", "torchvision:resnet19")
    assert "torchvision has no classification model 'resnet19'" in err and "resnet18" in err
    assert "unknown method(s) ['magic']" in error(photo, "--method", "gradcam,magic")
    assert "--target must be 'top' or a class index" in error(photo, "--target", "cat")
    assert "[0, 999]" in error(photo, "--target", "1000")
    assert "--layer='layer9' is not a submodule" in error(photo, "--model", "torchvision:resnet18",
                                                          "--layer", "layer9")
    assert "weights file" in error(photo, "--weights", str(tmp_path / "none.pt"))
    assert "could not read" in error(photo, "--weights", str(tmp_path / "broken.png"))
    if not torch.cuda.is_available():
        assert "CUDA is not available" in error(photo, "--device", "cuda")
    assert not (tmp_path / "out").exists()  # nothing written on an error


def test_explain_weights_that_do_not_fit(tmp_path, capsys):
    photo = _write_png(tmp_path / "ok.png", np.zeros((32, 32, 3), np.uint8))
    ten = tmp_path / "resnet18_10.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), ten)
    assert cli.main(["explain", photo, "--model", "torchvision:resnet18", "--weights", str(ten)]) == 2
    err = capsys.readouterr().err
    assert "do not fit torchvision:resnet18" in err
    assert "fc.weight: file [10, 512] vs model [1000, 512]" in err and "--num-classes" in err
    other = tmp_path / "squeezenet.pt"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), other)
    assert cli.main(["explain", photo, "--model", "torchvision:resnet18", "--weights", str(other)]) == 2
    err = capsys.readouterr().err
    assert "missing from the file (e.g. conv1.weight" in err and "another architecture" in err
    # the packaged model checks its weights the same way
    assert cli.main(["explain", photo, "--weights", str(ten)]) == 2
    assert "do not fit efficientnet_lite0" in capsys.readouterr().err


@pytest.mark.parametrize("name, layer", [("resnet18", "layer4"), ("mobilenet_v2", "features"),
                                         ("squeezenet1_1", "classifier.1")])
def test_auto_cam_layer_leaves_no_hooks(name, layer):
    model = torchvision.models.get_model(name, weights=None).eval()
    assert cli.auto_cam_layer(model, torch.zeros(1, 3, 64, 64)) == layer
    assert not any(m._forward_hooks for m in model.modules())


def test_python_dash_m_works_like_the_console_script():
    res = subprocess.run([sys.executable, "-m", "xai_torch", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "demo" in res.stdout and "explain" in res.stdout
