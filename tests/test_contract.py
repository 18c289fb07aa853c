"""Cross-method contract checks (found by review): inputs never written, inference mode,
training-mode buffers, wrapped explainers keep their scoring, per-image arguments."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import SmallNet


@pytest.fixture
def inplace_first():
    """A model whose first op writes into its input."""
    torch.manual_seed(0)
    return nn.Sequential(nn.ReLU(inplace=True), SmallNet()).eval()


def grid_labels(size=16, cells=2):
    idx = torch.arange(size) * cells // size
    return (idx[:, None] * cells + idx[None, :]).expand(2, size, size)


def test_forward_only_methods_never_hand_the_users_input_to_the_model(inplace_first):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    seg = grid_labels()
    for explainer, kwargs in ((xt.Occlusion(inplace_first, window=4), {}),
                              (xt.RISE(inplace_first, masks=8, cell=4, seed=0), {}),
                              (xt.LIME(inplace_first, samples=8, seed=0), {"segments": seg}),
                              (xt.KernelSHAP(inplace_first, samples=8, seed=0), {"segments": seg})):
        explainer(x, target=1, **kwargs)
        assert torch.equal(x, x0), type(explainer).__name__


def test_path_methods_work_under_inference_mode(small, small_x):
    expect = xt.IntegratedGradients(small, steps=4)(small_x, target=1)
    with torch.inference_mode():
        got = xt.IntegratedGradients(small, steps=4)(small_x, target=1)
    torch.testing.assert_close(got, expect)


def test_smoothgrad_restores_buffers_of_a_model_in_training_mode(small, small_x):
    small.train()
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.warns(xt.XaiWarning):
        xt.SmoothGrad(xt.Gradient(small), samples=2).explain(small_x)
    for k, v in small.state_dict().items():
        assert torch.equal(v, before[k]), k
    small.eval()


def test_smoothgrad_keeps_the_wrapped_explainers_scoring(small, small_x):
    rise = xt.RISE(small, masks=16, cell=4, seed=0)
    smooth = xt.SmoothGrad(rise, samples=1, noise=0.0)(small_x, target=1)
    torch.testing.assert_close(smooth, rise(small_x, target=1))  # softmax, as RISE scores
    seg = grid_labels(12, 3)[:1].expand(3, 12, 12)
    lime = xt.LIME(small, samples=12, seed=0)
    smooth = xt.SmoothGrad(lime, samples=1, noise=0.0)(small_x, target=1, segments=seg)
    torch.testing.assert_close(smooth, lime(small_x, target=1, segments=seg))
    one = xt.SmoothGrad(lime, samples=2, noise=0.0)(small_x[:1], target=1, segments=seg[:1])
    assert one.shape == (1, 1, 12, 12)


def test_xrai_fast_without_a_pixel_floor_has_no_nan(small, small_x):
    masks = torch.zeros(4, 12, 12, dtype=torch.bool)
    masks[0, :6], masks[1, :6], masks[2, 6:], masks[3] = True, True, True, True
    res = xt.XRAI(small, algorithm="fast", min_pixel_diff=0).explain(small_x[:1], segments=[masks],
                                                                     base_attribution=torch.randn(1, 3, 12, 12))
    assert all(bool(torch.isfinite(g).all()) for g in res.gains)
    assert xt.XRAI(small, steps=2)(small_x[0], segments=[masks], base_attribution=torch.randn(3, 12, 12)).shape \
        == (1, 1, 12, 12)


def test_relative_delta_of_a_path_of_length_zero(small):
    res = xt.IntegratedGradients(small, steps=4).explain(torch.full((1, 3, 12, 12), 0.5))
    assert float(res.relative_delta) == 0.0 and float(res.delta) == 0.0
