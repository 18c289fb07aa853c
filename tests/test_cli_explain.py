"""`xai-torch explain` (xai_torch/cli/explain.py): files written, JSON content, errors."""
import importlib
import json

import cv2
import numpy as np
import pytest
import torch
import torchvision

from xai_torch import cli, zoo
from xai_torch.cli.explain import _unique

# 5 points per deletion / insertion curve instead of 29: the same code, a sixth of the model calls
COARSE = str(224 * 56)


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
    # a newcomer's third command prints where the report is
    assert f"report: {(out / 'report.html').resolve()}" in capsys.readouterr().out


def test_unique_file_names():
    assert _unique(["a", "a", "my cat"]) == ["a", "a_2", "my_cat"]


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
    # a JPEG cut off at 40 %: OpenCV decodes it with grey for the rest and only a warning, we refuse it
    jpeg = cv2.imencode(".jpg", zoo.image("chelsea")[..., ::-1])[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 4 // 10])
    assert "'" + str(tmp_path / "cut.jpg") + "' is an incomplete JPEG" in error(str(tmp_path / "cut.jpg"))
    assert not (tmp_path / "out").exists()  # nothing written on an error
    (tmp_path / "out").write_text("a file")
    assert "--out '" + str(tmp_path / "out") + "' is an existing file, not a folder" in error(photo)
    assert (tmp_path / "out").read_text() == "a file"


def test_jpeg_complete_walks_segments():
    from xai_torch.models import jpeg_complete

    bgr = zoo.image("chelsea")[..., ::-1]
    for params in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]):
        data = cv2.imencode(".jpg", bgr, params)[1].tobytes()
        assert jpeg_complete(data) and jpeg_complete(data + b"trailing bytes")
        assert not any(jpeg_complete(data[:n]) for n in (3, 200, len(data) * 4 // 10, len(data) - 2))
    assert jpeg_complete(b"\x89PNG not a jpeg")  # not a JPEG: not its to judge


def test_explain_replaces_links_in_out_and_never_writes_through_them(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "chelsea.png").symlink_to(victim)
    (out / "report.html").symlink_to(tmp_path / "created.html")  # dangling: following it would create a file
    assert cli.main(["explain", "chelsea", "--method", "gradient", "--device", "cpu", "--out", str(out)]) == 0
    assert victim.read_text() == "precious" and not (tmp_path / "created.html").exists()
    for name in ("chelsea.png", "report.html"):
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "chelsea_gradient.png", "chelsea_grid.png",
                                                     "plot_seconds.png", "report.html", "summary.json"]


def test_a_method_that_fails_leaves_out_as_it_was(tmp_path, monkeypatch):
    module = importlib.import_module("xai_torch.cli.explain")  # the module: the package exports its function
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("kept")
    calls, fail_at = [], [2]

    def picture(*args):
        calls.append(1)
        if len(calls) == fail_at[0]:
            raise RuntimeError("the second method broke")
        return real(*args)

    real = module.picture
    monkeypatch.setattr(module, "picture", picture)
    with pytest.raises(RuntimeError, match="second method broke"):
        cli.explain("chelsea", methods="gradient,gradcam", out=out, progress=False)
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # no PNG of the first method, no staging folder
    calls.clear()
    fail_at[0] = 1
    with pytest.raises(RuntimeError):  # a folder this call created is removed again
        cli.explain("chelsea", methods="gradcam", out=tmp_path / "new" / "out", progress=False)
    assert not (tmp_path / "new" / "out").exists()


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




def test_explain_metrics_list_per_image(tmp_path, capsys):
    """--metrics with names: the catalogue's metrics per image x method in the output, summary and report;
    deletion named is the curve at --metric-step; --metrics alone stays deletion + insertion."""
    from xai_torch.cli.metrics import plan_metrics

    assert plan_metrics(True) == (True, []) and plan_metrics(False) == (False, [])
    assert plan_metrics("sparseness,deletion") == (True, ["sparseness"])
    out = tmp_path / "out"
    assert cli.main(["explain", "chelsea", "--method", "gradient", "--metrics=deletion,sparseness,complexity",
                     "--metric-step", COARSE, "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    cat = summary["images"]["chelsea"]
    assert list(summary["metric_catalogue"]) == ["sparseness", "complexity"]
    assert 0 < cat["metrics"]["sparseness"]["gradient"] < 1 and cat["metrics"]["complexity"]["gradient"] > 0
    assert summary["methods"]["gradient"]["metrics"]["sparseness"] == cat["metrics"]["sparseness"]["gradient"]
    assert 0 < cat["deletion_auc"]["gradient"] < 1 and "insertion_auc" in cat
    printed = capsys.readouterr().out
    assert "metrics of chelsea" in printed and "sparseness ↑" in printed and "complexity ↓" in printed
    assert "Metrics per image" in (out / "report.html").read_text()
    assert cli.main(["explain", "chelsea", "--metrics=delet", "--out", str(tmp_path / "o2")]) == 2
    assert "unknown metric 'delet'" in capsys.readouterr().err
