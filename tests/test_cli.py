import json

import cv2

from xai_torch import cli


def test_demo_writes_overlays_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--images", "chelsea,coffee",
                     "--methods", "gradient,guided_backprop,gradcam", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"]["chelsea"][0]["label"] == "tiger cat"
    assert summary["images"]["coffee"][0]["label"] == "espresso"
    assert set(summary["seconds"]) == {"gradient", "guided_backprop", "gradcam"}
    for name in ("chelsea_gradient", "coffee_guided_backprop", "chelsea_gradcam", "chelsea_grid"):
        img = cv2.imread(str(out / f"{name}.png"))
        assert img is not None and img.shape[0] >= 224
    assert "tiger cat" in capsys.readouterr().out


def test_demo_rejects_unknown_names(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--methods", "magic"]) == 2
    assert "unknown method(s) ['magic']; choose from gradient" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path), "--images", "lena"]) == 2
    assert not list(tmp_path.iterdir())


def test_demo_runs_the_path_methods(tmp_path):
    out = tmp_path / "demo"
    methods = "integrated_gradients,smoothgrad,blur_ig"
    assert cli.main(["demo", "--out", str(out), "--images", "chelsea", "--methods", methods, "--device", "cpu"]) == 0
    for m in methods.split(","):
        img = cv2.imread(str(out / f"chelsea_{m}.png"))
        assert img is not None and img.std() > 5  # a picture, not a blank


def test_every_demo_method_builds_an_explainer(lite0):
    import xai_torch as xt

    for name, (factory, kind) in cli.METHODS.items():
        assert isinstance(factory(lite0), xt.Explainer), name
        assert kind in ("grayscale", "diverging", "map"), name
