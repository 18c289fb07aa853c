"""`--layer-attribution NAME` (xai_torch/cli/layers.py): per-channel bar charts and layer maps, errors."""
import json
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision

import xai_torch as xt
from xai_torch import cli, zoo
from xai_torch.cli import layers as cli_layers
from xai_torch.models import load_image, load_model
from xai_torch.viz import plots


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A 10-class resnet18 state dict and one small photo (random pixels) on disk."""
    tmp = tmp_path_factory.mktemp("layers")
    torch.manual_seed(0)
    weights = tmp / "resnet18_10.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).eval().state_dict(), weights)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    photo = tmp / "noise.png"
    assert cv2.imwrite(str(photo), rgb)
    return str(weights), str(photo)


def _explain(resnet, out, *extra):
    weights, photo = resnet
    return cli.main(["explain", photo, "--model", "torchvision:resnet18", "--weights", weights, "--num-classes", "10",
                     "--device", "cpu", "--out", str(out), *extra])


def test_layer_attribution_charts_and_maps(resnet, tmp_path, monkeypatch):
    charts = []
    draw = plots.plot_channels
    monkeypatch.setattr(plots, "plot_channels", lambda v, **kw: charts.append(draw(v, **kw)) or charts[-1])
    out = tmp_path / "out"
    assert _explain(resnet, out, "--methods", "gradient,gradcam", "--layer-attribution", "layer4") == 0
    summary = json.loads((out / "summary.json").read_text())
    la = summary["layer_attribution"]
    assert la["layer"] == "layer4" and la["methods"] == ["gradient"] and la["shape"] == [512, 7, 7]
    info = la["images"]["noise"]["gradient"]
    assert info["map_shape"] == [7, 7] and la["matplotlib"] and la["note"] is None
    # the values are xt.Gradient(model, layer="layer4") summed over space
    loaded = load_model("torchvision:resnet18", resnet[0], 10, torch.device("cpu"))
    x = loaded.to_input([zoo.center_crop(load_image(resnet[1])[1])])
    ref = xt.Gradient(loaded.model, layer="layer4")(x, target=summary["images"]["noise"]["target"])
    ref = ref.double().sum((2, 3))[0]
    np.testing.assert_allclose(info["channels"], ref.numpy(), rtol=1e-5, atol=1e-7 * float(ref.abs().max()))
    assert [c for c, _ in info["top_channels"]] == ref.abs().argsort(descending=True)[:5].tolist()
    # one chart, one bar per channel, the bar heights those values
    (fig,) = charts
    bars = fig.axes[0].patches
    assert len(bars) == 512
    np.testing.assert_allclose([b.get_height() for b in bars], ref.numpy(), rtol=1e-6, atol=1e-9)
    # the files: the chart PNG, the 7 x 7 map as 32 x 32 blocks, the report section
    assert cv2.imread(str(out / info["chart"])) is not None
    lmap = cv2.imread(str(out / info["map"]))
    assert lmap.shape == (224, 224, 3) and (lmap[:32, :32] == lmap[0, 0]).all()
    page = (out / "report.html").read_text()
    assert "Layer attribution at <code>layer4</code>" in page
    assert info["chart"] in page and info["map"] in page


def test_plot_channels_one_bar_per_channel():
    v = torch.tensor([0.5, -1.0, 2.0])
    fig = plots.plot_channels(v, title="t")
    heights = [b.get_height() for b in fig.axes[0].patches]
    assert heights == pytest.approx([0.5, -1.0, 2.0])
    with pytest.raises(xt.XaiError, match="finite"):
        plots.plot_channels(torch.tensor([float("nan")]))


def test_unknown_layer_exits_2_and_writes_nothing(resnet, tmp_path, capsys):
    out = tmp_path / "out"
    assert _explain(resnet, out, "--methods", "gradient", "--layer-attribution", "layer5") == 2
    err = capsys.readouterr().err
    assert "--layer-attribution='layer5' is not a submodule" in err and "'layer4'" in err
    assert not out.exists()


def test_no_layer_method_exits_2(resnet, tmp_path, capsys):
    out = tmp_path / "out"
    assert _explain(resnet, out, "--methods", "gradcam", "--layer-attribution", "layer4") == 2
    assert "needs a gradient method" in capsys.readouterr().err
    assert not out.exists()


def test_without_matplotlib_says_so_and_writes_the_maps(resnet, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import matplotlib.figure -> ImportError
    out = tmp_path / "out"
    assert _explain(resnet, out, "--methods", "gradient", "--layer-attribution", "layer3") == 0
    assert "need matplotlib, which is not installed" in capsys.readouterr().err
    la = json.loads((out / "summary.json").read_text())["layer_attribution"]
    info = la["images"]["noise"]["gradient"]
    assert not la["matplotlib"] and info["chart"] is None and len(info["channels"]) == 256
    assert (out / info["map"]).is_file() and not list(out.glob("*_layer_channels.png"))
    assert "No bar charts:" in (out / "report.html").read_text()


def test_demo_layer_attribution_wrapped_and_path_methods(tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--images", "chelsea", "--methods", "gradient,smoothgrad,ig,gradcam", "--no-metrics",
                     "--device", "cpu", "--layer-attribution", "_conv_head", "--out", str(out)]) == 0
    la = json.loads((out / "summary.json").read_text())["layer_attribution"]
    assert la["methods"] == ["gradient", "smoothgrad", "integrated_gradients"] and la["shape"] == [1280, 7, 7]
    for m in la["methods"]:
        info = la["images"]["chelsea"][m]
        assert len(info["channels"]) == 1280 and (out / info["chart"]).is_file() and (out / info["map"]).is_file()
    chosen = cli_layers.layer_methods(list(xt.presets.METHODS))
    assert chosen[:7] == ["gradient", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients",
                          "ig_adaptive", "smoothgrad"]
    assert not any(xt.presets.METHODS[m].layer for m in chosen)  # CAMs take layer_input= but their layer is --layer
