"""Layer conductance (xai_torch/path/conductance.py): closed form on a linear head, completeness
with both path ends, model-call counts across chunks, bad input, no trace, Captum parity."""
import pytest
import torch
from test_path_layer import Head, _x

import xai_torch as xt

from conftest import SideNet, assert_no_trace, snapshot, torchvision_model


@pytest.mark.parametrize("method", ["riemann_trapezoid", "captum_trapezoid", "gauss_legendre"])
def test_closed_form_on_a_linear_head(method):
    model, x = Head().eval(), _x()
    b = torch.full_like(x, 0.3)
    res = xt.LayerConductance(model, "feat", steps=3, method=method, batch_size=5).explain(x, target=[2, 0],
                                                                                        baseline=b)
    alphas, _ = xt.path.get_rule(method, 4)
    ends = [b + float(a) * (x - b) for a in (alphas[0], alphas[-1])]
    with torch.no_grad():
        y0, y1 = (model.feat(model.relu(model.conv(z))) for z in ends)
    # the head is linear: the differences telescope to w * (y(a_last) - y(a_first))
    torch.testing.assert_close(res.attributions, (y1 - y0) * model.fc.weight[[2, 0]], rtol=1e-5, atol=1e-6)
    if "trapezoid" in method:
        torch.testing.assert_close(res.delta, torch.zeros(2), atol=1e-5, rtol=0)
    assert res.model_calls == 2 * 4 + 2 + 2  # 4 nodes per path, F(b), F(x)


def test_completeness_with_both_ends(small, small_x):
    res = xt.LayerConductance(small, "conv2", steps=128, method="riemann_trapezoid").explain(small_x, target=[1, 2, 0])
    assert res.attributions.shape == (3, 8, 12, 12) and res.path_scores.shape == (3, 1, 129)
    assert float(res.relative_delta.max()) < 0.02


def test_k_targets_and_several_baselines(small, small_x):
    cond = xt.LayerConductance(small, small.conv2, steps=3, layer_input=True, batch_size=5)
    t = torch.tensor([[0, 1], [2, 3], [4, 0]])
    got = cond(small_x, target=t, baseline=["black", "white"])
    assert got.shape == (3, 2, 6, 12, 12)
    one = [cond(small_x, target=t, baseline=name) for name in ("black", "white")]
    torch.testing.assert_close(got, (one[0] + one[1]) / 2, rtol=1e-5, atol=1e-6)


def test_bad_input_and_no_trace(small, small_x):
    with pytest.raises(xt.XaiError, match="conv2"):
        xt.LayerConductance(small, "conv3")
    with pytest.raises(xt.XaiError, match="needs a layer"):
        xt.LayerConductance(small, None)
    with pytest.raises(xt.XaiError, match="method"):
        xt.LayerConductance(small, "conv2", method="adaptive")

    model = SideNet(small).eval()  # the score does not depend on "unused"
    before = snapshot(model, small_x)
    with pytest.raises(xt.XaiError, match="does not depend on 'unused'"):
        xt.LayerConductance(model, "unused", steps=2)(small_x, target=1)
    xt.LayerConductance(model, "net.conv2", steps=2)(small_x, target=1)
    assert_no_trace(before, snapshot(model, small_x))


@pytest.mark.parity
@pytest.mark.parametrize("layer_input", [False, True])
@pytest.mark.parametrize("ours,theirs", [("gauss_legendre", "gausslegendre"),
                                         ("riemann_trapezoid", "riemann_trapezoid")])
def test_conductance_parity_with_captum(ours, theirs, layer_input):
    from captum.attr import LayerConductance

    model = torchvision_model("resnet18")
    x, b = _x(2, 64, 5), torch.zeros(2, 3, 64, 64)
    layer = model.layer4[0].conv2
    res = xt.LayerConductance(model, layer, steps=4, method=ours, layer_input=layer_input, batch_size=3)(
        x, target=[3, 7], baseline=b)
    ref = LayerConductance(model, layer).attribute(x, b, target=[3, 7], n_steps=4, method=theirs,
                                                   attribute_to_layer_input=layer_input)
    ref = ref.detach()
    assert float((res - ref).abs().max() / ref.abs().max()) < 1e-4
