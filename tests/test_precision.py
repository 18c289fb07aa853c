"""precision= (mixed precision through torch.autocast) on the model-bound explainers."""
import inspect

import pytest
import torch

import xai_torch as xt
from xai_torch.precision import autocast

from conftest import SmallNet, assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _net() -> torch.nn.Module:
    """SmallNet with weights large enough that the class scores spread (so a relative IG
    completeness error is meaningful), in eval mode, one parameter with a user's .grad."""
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    net.fc.weight.grad = torch.full_like(net.fc.weight, 0.5)
    return net


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]).double())[0, 1])


def test_bfloat16_gradient_and_ig_follow_float32_and_leave_the_model_as_it_was():
    net, x = _net(), torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    before = snapshot(net, x)
    dtypes = {n: p.dtype for n, p in net.named_parameters()}
    g32 = xt.Gradient(net).explain(x, target=1)
    g16 = xt.Gradient(net, precision="bfloat16").explain(x, target=1)
    ig32 = xt.IntegratedGradients(net, steps=16).explain(x, target=1)
    ig16 = xt.IntegratedGradients(net, steps=16, precision="bfloat16").explain(x, target=1)
    assert_no_trace(before, snapshot(net, x))
    assert {n: p.dtype for n, p in net.named_parameters()} == dtypes  # nothing converted
    for res in (g16, ig16):  # accumulated and returned as for float32
        assert res.attributions.dtype == torch.float32 and res.scores.dtype == torch.float32
        assert bool(torch.isfinite(res.attributions).all())
    assert _corr(g32.attributions, g16.attributions) > 0.98
    assert _corr(ig32.attributions, ig16.attributions) > 0.99
    # bf16 keeps ~3 significant digits: the clean scores agree to that, and the completeness
    # error grows from float32's quadrature error but stays small
    torch.testing.assert_close(g16.scores, g32.scores, rtol=2e-2, atol=2e-2)
    assert float(ig32.relative_delta.max()) < 0.02
    assert float(ig16.relative_delta.max()) < 0.15
    # not the same computation: autocast really ran (bf16 rounding shows in the maps)
    assert not torch.equal(g32.attributions, g16.attributions)
    # float16 runs on this torch's CPU autocast too
    g_half = xt.Gradient(net, precision="float16")(x, target=1)
    assert _corr(g32.attributions, g_half) > 0.99


def test_precision_is_a_keyword_of_every_explainer_checked_at_construction():
    net = _net()
    for cls in (xt.Gradient, xt.IntegratedGradients, xt.GradCAM, xt.RISE, xt.region.LIME):
        assert inspect.signature(cls.__init__).parameters["precision"].default == "float32"
    assert "precision='bfloat16'" in repr(xt.Gradient(net, precision="bfloat16"))
    assert "precision" not in repr(xt.Gradient(net))
    for bad in ("fp16", "half", torch.float16, None):
        with pytest.raises(xt.XaiError, match="precision must be one of"):
            xt.Gradient(net, precision=bad)
    with pytest.raises(xt.XaiError, match="precision must be one of"):
        xt.GradCAM(net, layer="conv2", precision="float64")
    # a device without autocast in that dtype: a clear error before any model call
    with pytest.raises(xt.XaiError, match="does not support"):
        autocast("bfloat16", torch.device("meta"), "Gradient")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bfloat16_on_cuda_follows_float32():
    net, x = _net().cuda(), torch.rand(4, 3, 16, 16, device="cuda")
    a = xt.IntegratedGradients(net, steps=32).explain(x, target=2)
    b = xt.IntegratedGradients(net, steps=32, precision="bfloat16").explain(x, target=2)
    assert b.attributions.dtype == torch.float32 and b.attributions.device.type == "cuda"
    assert _corr(a.attributions, b.attributions) > 0.99
    assert float(b.relative_delta.max()) < 0.15
    c = xt.Gradient(net, precision="float16")(x, target=2)
    assert _corr(xt.Gradient(net)(x, target=2), c) > 0.99


def test_smoothgrad_runs_at_the_wrapped_explainers_precision_and_refuses_another():
    net, x = _net(), torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    inner = xt.Gradient(net, precision="bfloat16")
    sg = xt.SmoothGrad(inner, samples=2, seed=0)
    assert sg.precision == "bfloat16" and "precision='bfloat16'" in repr(xt.BlurIG(net, precision="bfloat16"))
    with xt.SmoothGrad(xt.Gradient(net), samples=2, seed=0, noise=0.0) as plain:
        assert _corr(xt.SmoothGrad(inner, samples=2, seed=0, noise=0.0)(x, target=1),
                     plain(x, target=1)) > 0.9
    with pytest.raises(xt.XaiError, match="give precision= to it"):
        xt.SmoothGrad(xt.Gradient(net), precision="bfloat16")
