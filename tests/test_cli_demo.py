"""`xai-torch demo` (xai_torch/cli/demo.py): every family in the default demo, budgets in the report."""
import json

import cv2

from xai_torch import cli
from xai_torch.presets import FAMILIES, KINDS, METHODS
from xai_torch.report import write_report


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
    assert all(m["seconds"] > 0 and m["kind"] in KINDS for m in summary["methods"].values())
    assert summary["metrics"] is None and "deletion_auc" not in chelsea
    assert summary["layer"] == "_conv_head" and summary["weights"] == "packaged"
    assert summary["budget"] == "demo" and summary["estimate_seconds"] > 0 and summary["wall_seconds"] > 0
    assert summary["methods"]["integrated_gradients"]["budget"] == METHODS["integrated_gradients"].budget
    for name in ("chelsea_gradient", "coffee_guided_backprop", "chelsea_gradcam_pp", "coffee_integrated_gradients",
                 "chelsea"):
        img = cv2.imread(str(out / f"{name}.png"))
        assert img is not None and img.shape == (224, 224, 3) and img.std() > 5  # a picture, not a blank
    grid = cv2.imread(str(out / "chelsea_grid.png"))
    assert grid.shape[1] > 5 * 224  # the photo and 4 overlays side by side
    assert (out / "report.html").is_file()
    printed = capsys.readouterr().out
    assert "tiger cat" in printed and "report.html" in printed and "demo finished in" in printed
    assert "of model time" in printed  # the estimate, printed before the work


def test_default_demo_shows_every_family_within_its_budget():
    methods = [METHODS[m] for m in cli.DEMO_METHODS]
    assert {s.family for s in methods} == set(FAMILIES)
    # the families issue 13 names, each by a method of the default demo
    for name in ("gradient", "guided_backprop", "deconvnet", "gradcam", "gradcam_pp", "integrated_gradients",
                 "blur_ig", "guided_ig", "smoothgrad", "xrai", "lime", "kernel_shap", "occlusion", "rise"):
        assert name in cli.DEMO_METHODS, name
    assert "scorecam" not in cli.DEMO_METHODS and "scorecam" in METHODS  # left to --full
    for spec in methods:
        if spec.slow:  # every slow method runs with a budget, fewer model calls than its full run
            assert spec.demo and spec.model_calls(demo=True) < spec.model_calls(), spec.name
    assert len(cli.DEMO_IMAGES) < len(cli.FULL_IMAGES)


def test_report_names_each_budget(tmp_path):
    summary = {"command": "demo", "budget": "demo", "metrics": None, "images": {},
               "methods": {m: {"kind": METHODS[m].kind, "seconds": 1.0, "seconds_per_image": 0.5,
                               "budget": METHODS[m].budget} for m in cli.DEMO_METHODS}}
    page = write_report(tmp_path, summary, plots=False).read_text()
    assert "CPU budget" in page
    for m in cli.DEMO_METHODS:
        row = page[page.index(f"<tr><td>{m}</td>"):]
        assert METHODS[m].budget in row[:row.index("</tr>")], m
