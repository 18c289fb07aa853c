"""viz's matplotlib plots (xai_torch/viz/plots.py), matplotlib imported on first use."""
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import viz


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    return net, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _png_bytes(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_plot_path_curve_of_integrated_gradients(tiny):
    from matplotlib.figure import Figure

    net, x = tiny
    ig = xt.IntegratedGradients(net, steps=8)
    black, white = ig.explain(x, baseline="black"), ig.explain(x, baseline="white")
    fig = viz.plot_path_curve(black, index=1)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and _png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"
    top, bottom = fig.axes
    np.testing.assert_allclose(top.lines[0].get_xdata(), black.alphas.numpy())
    np.testing.assert_allclose(top.lines[0].get_ydata(), black.path_probs[1, 0].double().numpy())
    np.testing.assert_allclose(bottom.lines[0].get_ydata(), black.path_grad[1, 0].double().numpy())
    assert top.get_ylabel() == "target probability"
    fig2 = viz.plot_path_curve([black, white], labels=["black", "white"], probability=False)
    assert [t.get_text() for t in fig2.axes[0].get_legend().get_texts()] == ["black", "white"]
    np.testing.assert_allclose(fig2.axes[0].lines[1].get_ydata(), white.path_scores[0, 0].double().numpy())
    arrays = {"alphas": np.linspace(0, 1, 5), "probs": np.linspace(0, 1, 5) ** 2}
    fig3 = viz.plot_path_curve(arrays)
    assert len(fig3.axes) == 1 and len(fig3.axes[0].lines) == 1
    with pytest.raises(xt.XaiError, match="explain"):
        viz.plot_path_curve(ig.explain(x).__class__(attributions=x, targets=None, scores=None))


def test_plot_causal_curves_and_randomization(tiny):
    net, x = tiny
    attr = xt.Gradient(net)(x)
    d = xt.metrics.deletion(net, x, attr, step=16)
    i = xt.metrics.insertion(net, x, attr, step=16)
    fig = viz.plot_causal_curves(d, i)
    dele, ins = fig.axes
    np.testing.assert_allclose(dele.lines[0].get_xdata(), d.fractions.numpy())
    np.testing.assert_allclose(dele.lines[0].get_ydata(), d.curve.double().mean(0).numpy())
    assert f"{float(d.auc.mean()):.3f}" in dele.get_legend().get_texts()[0].get_text()
    assert ins.get_title() == "Insertion"
    one = viz.plot_causal_curves({"gradient": d, "random": d}, index=0)
    np.testing.assert_allclose(one.axes[0].lines[1].get_ydata(), d.curve[0].double().numpy())
    res = xt.metrics.model_randomization(net, xt.Gradient(net), x, similarity=("spearman", "spearman_abs"))
    fig = viz.plot_randomization(res)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 + 1  # one line per similarity, plus the zero line
    ydata = ax.lines[0].get_ydata()
    assert ydata[0] == pytest.approx(float(res.rerun["spearman"].mean()))
    np.testing.assert_allclose(ydata[1:], res.scores["spearman"].double().mean(0).numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["intact (rerun)", *res.layers]
    table = viz.randomization_table({"gradient": res}, similarity="spearman_abs")
    lines = table.splitlines()
    assert lines[0] == "| step | gradient |" and len(lines) == 2 + 1 + len(res.layers)
    assert lines[-1].startswith(f"| {res.layers[-1]} | ")
    with pytest.raises(xt.XaiError, match="similarity 'ssim' is not in the result"):
        viz.plot_randomization(res, similarity="ssim")
    with pytest.raises(xt.XaiError, match="CausalCurve"):
        viz.plot_causal_curves(res)


def test_plots_without_matplotlib(monkeypatch, tiny):
    for name in [m for m in list(__import__("sys").modules) if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    net, x = tiny
    d = xt.metrics.deletion(net, x, xt.Gradient(net)(x), step=32)
    with pytest.raises(xt.XaiError, match="pip install xai_torch\\[plots\\]"):
        viz.plot_causal_curves(d)
    assert viz.plot_causal_curves is xt.viz.plots.plot_causal_curves and "plot_path_curve" in dir(viz)
    assert viz.heatmap_overlay(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2))).shape == (2, 2, 3)
