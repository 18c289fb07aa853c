"""Path methods in a layer's space (xai_torch/path/layer.py): IG with ``layer=`` in closed form,
completeness in the layer's space, model-call counts, bad input, no trace, parity with Captum's
LayerIntegratedGradients."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import SideNet, assert_no_trace, snapshot, torchvision_model

RULES = ["gauss_legendre", "riemann_left", "riemann_right", "riemann_middle", "captum_trapezoid"]


class Head(nn.Module):
    """conv -> ReLU -> (layer "feat": flatten) -> linear: linear after the layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu, self.feat, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(self.feat(self.relu(self.conv(x))))


def _x(b=2, size=6, seed=1):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", [*RULES, "adaptive"])
def test_closed_form_on_a_linear_head(method):
    model, x = Head().eval(), _x()
    b = torch.full_like(x, 0.3)
    steps = 40 if method == "adaptive" else 3
    res = xt.IntegratedGradients(model, steps=steps, method=method, layer="feat").explain(x, target=[2, 0], baseline=b)
    with torch.no_grad():
        a_x, a_b = model.feat(model.relu(model.conv(x))), model.feat(model.relu(model.conv(b)))
    w = model.fc.weight[[2, 0]]
    scale = 1.0 if method != "captum_trapezoid" else (steps - 1) / steps  # Captum's weights sum to (n-1)/n
    torch.testing.assert_close(res.attributions, (a_x - a_b) * w * scale, rtol=1e-5, atol=1e-6)
    assert res.attributions.shape == (2, 64)
    if method != "captum_trapezoid":  # completeness in the layer's space, exact for a linear head
        torch.testing.assert_close(res.delta, torch.zeros(2), atol=1e-5, rtol=0)


def test_completeness_in_layer_space_and_delta_definition(small, small_x):
    b = torch.zeros_like(small_x)
    res = xt.IntegratedGradients(small, steps=64, layer="conv2").explain(small_x, target=[1, 2, 0], baseline=b)
    assert res.attributions.shape == (3, 8, 12, 12)
    with torch.no_grad():
        rows, cols = torch.arange(3), torch.tensor([1, 2, 0])
        gap = small(small_x)[rows, cols] - small(b)[rows, cols]
    torch.testing.assert_close(res.delta.double(), res.attributions.double().flatten(1).sum(1) - gap.double(),
                               rtol=1e-5, atol=1e-5)
    assert float(res.relative_delta.max()) < 0.02


def test_k_targets_shape_calls_and_plain_call_equal(small, small_x):
    ig = xt.IntegratedGradients(small, steps=5, layer="conv2", batch_size=7)
    res = ig.explain(small_x, target=torch.tensor([[0, 1], [2, 3], [4, 0]]))
    assert res.attributions.shape == (3, 2, 8, 12, 12) and res.delta.shape == (3, 2)
    # record x (3) and the baseline (3), 5 steps x 6 rows, clean scores (3)
    assert res.model_calls == 3 + 3 + 30 + 3
    torch.testing.assert_close(ig(small_x, target=torch.tensor([[0, 1], [2, 3], [4, 0]])), res.attributions)
    both = ig.explain(small_x, target=1, baseline=["black", "white"])  # J = 2 baselines per image
    one = [ig.explain(small_x, target=1, baseline=name) for name in ("black", "white")]
    torch.testing.assert_close(both.attributions, (one[0].attributions + one[1].attributions) / 2)
    torch.testing.assert_close(both.baseline_scores[:, 1], one[1].baseline_scores[:, 0])


def test_layer_input_and_module_spec(small, small_x):
    res = xt.IntegratedGradients(small, steps=4, layer=small.conv2, layer_input=True).explain(small_x, target=1)
    assert res.attributions.shape == (3, 6, 12, 12)
    assert xt.IntegratedGradients(small, layer=small.conv2, layer_input=True)._config()["layer"] == "conv2"


def test_inference_mode_and_no_trace(small, small_x):
    before = snapshot(small, small_x)
    with torch.inference_mode():
        out = xt.IntegratedGradients(small, steps=4, method="riemann_middle",
                                     layer="conv2")(small_x, target=1)
    assert out.shape == (3, 8, 12, 12) and torch.isfinite(out).all()
    assert_no_trace(before, snapshot(small, small_x))


def test_bad_layers(small, small_x):
    with pytest.raises(xt.XaiError, match="conv2"):
        xt.IntegratedGradients(small, layer="conv3")
    with pytest.raises(xt.XaiError, match=r"layer\[1\]='conv9'.*conv2"):
        xt.IntegratedGradients(small, layer=["conv1", "conv9"])
    with pytest.raises(xt.XaiError, match="non-empty list"):
        xt.ExpectedGradients(small, small_x, layer=[])
    with pytest.raises(xt.XaiError, match="layer_input"):
        xt.IntegratedGradients(small, layer="conv2", layer_input="yes")
    with pytest.raises(xt.XaiError, match="nn.Module"):
        xt.IntegratedGradients(lambda z: z.flatten(1), layer="conv2")

    model = SideNet(small).eval()  # the score does not depend on "unused"
    before = snapshot(model, small_x)
    with pytest.raises(xt.XaiError, match="does not depend on layer 'unused'"):
        xt.IntegratedGradients(model, steps=3, layer="unused")(small_x, target=1)
    with pytest.raises(xt.XaiError, match="more than once"):  # SmallNet's ReLU is reused
        xt.IntegratedGradients(small, steps=3, layer="relu")(small_x, target=1)
    assert_no_trace(before, snapshot(model, small_x))


@pytest.mark.parity
@pytest.mark.parametrize("layer_input", [False, True])
@pytest.mark.parametrize("ours,theirs", [("gauss_legendre", "gausslegendre"), ("riemann_left", "riemann_left"),
                                         ("riemann_right", "riemann_right"), ("riemann_middle", "riemann_middle"),
                                         ("captum_trapezoid", "riemann_trapezoid")])
def test_layer_ig_parity_with_captum(ours, theirs, layer_input):
    from captum.attr import LayerIntegratedGradients

    model = torchvision_model("resnet18")
    x = _x(2, 64, 5)
    b = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(6)).expand(2, -1, -1, -1) * 0.1
    layer = model.layer3 if layer_input else model.layer4[0].conv2
    res = xt.IntegratedGradients(model, steps=4, method=ours, layer=layer, layer_input=layer_input)(
        x, target=[3, 7], baseline=b)
    ref = LayerIntegratedGradients(model, layer).attribute(x, b, target=[3, 7], n_steps=4, method=theirs,
                                                           attribute_to_layer_input=layer_input)
    assert res.shape == ref.shape
    assert float((res - ref).abs().max() / ref.abs().max()) < 1e-4


@pytest.mark.parametrize("layer,layer_input", [("feat", False), ("fc", True)])
def test_expected_gradients_closed_form_on_a_linear_head(layer, layer_input):
    model, x, bg = Head().eval(), _x(), _x(4, seed=7)
    eg = xt.ExpectedGradients(model, bg, samples=4, seed=0, layer=layer, layer_input=layer_input, batch_size=3)
    res = eg.explain(x, target=[2, 0])  # 4 draws of 4 references: each once
    with torch.no_grad():
        a_x, a_b = model.feat(model.relu(model.conv(x))), model.feat(model.relu(model.conv(bg)))
    torch.testing.assert_close(res.attributions, (a_x - a_b.mean(0)) * model.fc.weight[[2, 0]], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.delta, torch.zeros(2), atol=1e-5, rtol=0)
    assert eg._config()["layer"] == layer


@pytest.mark.parity
def test_shap_gradient_explainer_layer_is_gradient_times_activation():
    """shap's GradientExplainer((model, layer)) multiplies the gradient by the layer's input at
    the interpolated image, A(b + t (x - b)), not by a_x - a_b: its values do not add up to
    F(x) - F(b). Shown on the linear head, replaying its draws; ours keep completeness there."""
    shap = pytest.importorskip("shap")
    np = pytest.importorskip("numpy")
    model, x, bg = Head().eval(), _x(), _x(1, seed=7)
    theirs = torch.as_tensor(shap.GradientExplainer((model, model.fc), bg).shap_values(x, nsamples=3, rseed=4))
    rng = np.random.RandomState(4)
    feats = model.fc.weight.new_zeros(2, 64)
    with torch.no_grad():
        for j in range(2):
            for _ in range(3):
                rng.choice(1)
                t = float(rng.uniform())
                feats[j] += model.feat(model.relu(model.conv(t * x[j:j + 1] + (1 - t) * bg)))[0] / 3
    expect = torch.stack([feats * w for w in model.fc.weight.detach()], -1)  # (B, 64, classes)
    torch.testing.assert_close(theirs.float(), expect, rtol=1e-4, atol=1e-6)
    ours = xt.ExpectedGradients(model, bg, samples=3, seed=0, layer="fc", layer_input=True).explain(x, target=[2, 0])
    torch.testing.assert_close(ours.delta, torch.zeros(2), atol=1e-5, rtol=0)


def test_expected_gradients_layer_delta_definition(small, small_x):
    bg = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    res = xt.ExpectedGradients(small, bg, samples=8, seed=0, layer="conv2").explain(small_x, target=1)
    assert res.attributions.shape == (3, 8, 12, 12)
    expect = res.attributions.double().flatten(1).sum(1) - (res.scores.double() - res.baseline_scores[:, 0].double())
    torch.testing.assert_close(res.delta.double(), expect, rtol=1e-5, atol=1e-7)


@pytest.mark.parity
@pytest.mark.parametrize("arch,name,ours,theirs", [
    ("resnet18", "layer4.0.conv2", "gauss_legendre", "gausslegendre"),
    ("resnet18", "layer4.0.conv2", "captum_trapezoid", "riemann_trapezoid"),
    ("densenet121", "features.denseblock3", "gauss_legendre", "gausslegendre")])
def test_neuron_ig_parity_with_captum(arch, name, ours, theirs):
    from captum.attr import NeuronIntegratedGradients

    model = torchvision_model(arch)
    x, b = _x(2, 64, 5), torch.zeros(2, 3, 64, 64)
    layer = model.get_submodule(name)
    res = xt.IntegratedGradients(model, steps=4, method=ours)(x, target=xt.NeuronTarget(layer, (5, 1, 0)),
                                                              baseline=b)
    ref = NeuronIntegratedGradients(model, layer).attribute(x, (5, 1, 0), baselines=b, n_steps=4, method=theirs)
    assert float((res - ref).abs().max() / ref.abs().max()) < 1e-4


def test_list_of_layers_gives_a_dict(small, small_x):
    b = torch.zeros_like(small_x)
    ig = xt.IntegratedGradients(small, steps=4, layer=["conv2", small.conv1])
    res = ig.explain(small_x, target=1, baseline=b)
    assert list(res.attributions) == ["conv2", "conv1"] and ig._config()["layer"] == ["conv2", "conv1"]
    for name in ("conv2", "conv1"):
        one = xt.IntegratedGradients(small, steps=4, layer=name).explain(small_x, target=1, baseline=b)
        torch.testing.assert_close(res.attributions[name], one.attributions)
        torch.testing.assert_close(res.layers[name].delta, one.delta)
    assert res.model_calls == sum(p.model_calls for p in res.layers.values())
    assert res.attributions["conv1"].shape == (3, 6, 12, 12)
    got = xt.LayerConductance(small, ["conv2", "conv1"], steps=2)(small_x, target=1)
    torch.testing.assert_close(got["conv1"], xt.LayerConductance(small, "conv1", steps=2)(small_x, target=1))


def test_neuron_target_at_the_attributed_layer(small, small_x):
    b = torch.zeros_like(small_x)
    target = xt.NeuronTarget("conv2", (3, 4, 5))
    res = xt.IntegratedGradients(small, steps=2, layer="conv2").explain(small_x, target=target, baseline=b)
    with torch.no_grad():
        a_x = small.conv2(small.relu(small.bn(small.conv1(small_x))))
        a_b = small.conv2(small.relu(small.bn(small.conv1(b))))
    expect = torch.zeros_like(a_x)
    expect[:, 3, 4, 5] = a_x[:, 3, 4, 5] - a_b[:, 3, 4, 5]
    torch.testing.assert_close(res.attributions, expect)
    torch.testing.assert_close(res.delta, torch.zeros(3), atol=1e-6, rtol=0)


def test_threads_share_the_model(small, small_x):
    import threading

    ig = xt.IntegratedGradients(small, steps=6, layer="conv2", batch_size=4)
    alone, grad_alone = ig(small_x, target=1), xt.Gradient(small)(small_x, target=2)
    got: dict = {}

    def run(name, fn):
        for i in range(5):
            got[name, i] = fn()

    threads = [threading.Thread(target=run, args=("ig", lambda: ig(small_x, target=1))),
               threading.Thread(target=run, args=("grad", lambda: xt.Gradient(small)(small_x, target=2)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(5):
        assert torch.equal(got["ig", i], alone) and torch.equal(got["grad", i], grad_alone)


@pytest.mark.parity
def test_layer_ig_and_conductance_parity_with_captum_on_densenet121():
    """DenseNet concatenates every earlier feature map and ends in a functional in-place ReLU."""
    from captum.attr import LayerConductance, LayerIntegratedGradients

    model = torchvision_model("densenet121")
    x = _x(2, 64, 5)
    b = torch.zeros_like(x)
    for layer, layer_input in ((model.features.denseblock3, False), (model.features.transition3, True)):
        ours = xt.IntegratedGradients(model, steps=4, method="gauss_legendre", layer=layer, layer_input=layer_input)(
            x, target=[3, 7], baseline=b)
        ref = LayerIntegratedGradients(model, layer).attribute(x, b, target=[3, 7], n_steps=4, method="gausslegendre",
                                                               attribute_to_layer_input=layer_input)
        assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-4
    layer = model.features.denseblock3
    ours = xt.LayerConductance(model, layer, steps=4, method="gauss_legendre")(x, target=[3, 7], baseline=b)
    ref = LayerConductance(model, layer).attribute(x, b, target=[3, 7], n_steps=4, method="gausslegendre").detach()
    assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-4
