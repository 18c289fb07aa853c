"""Occlusion: closed form, parity with Captum, batching plan, bad input, no trace."""
import itertools
import math

import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.perturbation import Occlusion

from conftest import Counting, assert_no_trace, snapshot, torchvision_model


def linear_model(shape, outputs=1, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), outputs)).double().eval()


# --- Occlusion: closed form, geometry -----------------------------------------------------------
def reference_occlusion(w, x, v, window, stride):
    """Occlusion of the linear score ``sum(w * z)`` by brute force: occluding a box with ``v``
    changes the score by ``sum over the box of w * (x - v)``; each element gets the mean of
    that over the boxes covering it (loops over every window position)."""
    dims = x.shape
    total, count = torch.zeros(dims, dtype=torch.float64), torch.zeros(dims, dtype=torch.float64)
    starts = [range(0, (math.ceil((d - a) / s)) * s + 1, s) for d, a, s in zip(dims, window, stride)]
    for c0, h0, w0 in itertools.product(*starts):
        box = (slice(c0, c0 + window[0]), slice(h0, h0 + window[1]), slice(w0, w0 + window[2]))
        drop = (w * (x - v))[box].sum()
        total[box] += drop
        count[box] += 1
    assert bool((count > 0).all())
    return total / count


@pytest.mark.parametrize("window,stride", [((3, 4, 4), (3, 3, 3)), ((2, 3, 5), (1, 2, 4)), ((1, 7, 9), (1, 7, 9)),
                                           (3, None), ((4, 2), 1)])
def test_occlusion_closed_form_on_a_linear_model(window, stride):
    shape = (3, 7, 9)
    model = linear_model(shape, outputs=2)
    x = torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = torch.randn(3, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    occ = Occlusion(model, window, stride, value=v)
    win, st, counts = occ.geometry(shape)
    res = occ.explain(x, target=[1, 0])
    assert res.attributions.dtype == torch.float64 and res.attributions.shape == x.shape
    for i, c in enumerate([1, 0]):
        w = model[1].weight.detach()[c].view(shape)
        torch.testing.assert_close(res.attributions[i], reference_occlusion(w, x[i], v, win, st), rtol=1e-10,
                                   atol=1e-12)
    assert res.windows == counts and res.drops.shape == (2, *counts)
    assert res.model_calls == 2 * (math.prod(counts) + 1)
    torch.testing.assert_close(res.scores, model(x).detach()[[0, 1], [1, 0]])
    assert res.targets.tolist() == [1, 0]


def test_occlusion_geometry():
    occ = Occlusion(nn.Identity(), window=15, stride=8)
    assert occ.geometry((3, 224, 224)) == ((3, 15, 15), (3, 8, 8), (1, 28, 28))  # 785 forwards (ALGORITHMS 6.3)
    assert Occlusion(nn.Identity(), (5, 6)).geometry((3, 12, 12)) == ((3, 5, 6), (3, 5, 6), (1, 3, 2))
    assert Occlusion(nn.Identity(), (1, 4, 4), (1, 3, 3)).geometry((3, 12, 12))[2] == (3, 4, 4)  # last one cropped
    assert Occlusion(nn.Identity(), (3, 12, 5), (9, 40, 2)).geometry((3, 12, 12))[2] == (1, 1, 5)  # full dims
    assert "window=(3, 4, 4)" in repr(Occlusion(nn.Identity(), (3, 4, 4)))


# --- Occlusion: parity with Captum ----------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("window,stride,value", [((3, 4, 4), (3, 3, 3), 0.0), ((2, 5, 5), (1, 3, 3), 0.5),
                                                 ((1, 12, 5), (1, 12, 2), "tensor")])
def test_occlusion_parity_with_captum_small(small, small_x, window, stride, value):
    from captum.attr import Occlusion as CaptumOcclusion

    if value == "tensor":  # a per-channel colour
        value = torch.tensor([0.3, -0.2, 0.1]).view(3, 1, 1)
    ours = Occlusion(small, window, stride, value=value, batch_size=17)(small_x, target=[0, 3, 4])
    base = value[None].expand_as(small_x[:1]) if isinstance(value, torch.Tensor) else value
    theirs = CaptumOcclusion(small).attribute(small_x, sliding_window_shapes=window, strides=stride, baselines=base,
                                              target=[0, 3, 4], perturbations_per_eval=5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.abs().max()))


@pytest.mark.parity
@pytest.mark.parametrize("window,stride", [((3, 24, 24), (3, 18, 18)), ((2, 28, 28), (1, 20, 20))])  # last cropped
def test_occlusion_parity_with_captum_resnet18(window, stride):
    from captum.attr import Occlusion as CaptumOcclusion

    model = torchvision_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    ours = Occlusion(model, window, stride, batch_size=32)(x, target=[3, 7])
    theirs = CaptumOcclusion(model).attribute(x, sliding_window_shapes=window, strides=stride, target=[3, 7],
                                              perturbations_per_eval=16)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


# --- Occlusion: targets, batching plan ------------------------------------------------------------
def test_occlusion_targets_and_shapes(small, small_x):
    occ = Occlusion(small, (3, 4, 4), 4, batch_size=10)
    res = occ.explain(small_x)
    argmax = small(small_x).argmax(1)
    assert torch.equal(res.targets, argmax)
    torch.testing.assert_close(res.attributions, occ(small_x, target=argmax.tolist()))
    multi = occ.explain(small_x, target=[[0, 2], [1, 1], [4, 3]])
    assert multi.attributions.shape == (3, 2, 3, 12, 12) and multi.drops.shape == (3, 2, 1, 3, 3)
    for col in range(2):
        single = occ(small_x, target=multi.targets[:, col])
        torch.testing.assert_close(multi.attributions[:, col], single, rtol=1e-6, atol=1e-7)
    assert occ(small_x[0]).shape == (1, 3, 12, 12)  # (C, H, W) input keeps a batch dim
    score = occ(small_x, target=lambda out: out[:, 2] - out[:, 0])
    torch.testing.assert_close(score, occ(small_x, target=2) - occ(small_x, target=0), rtol=1e-5, atol=1e-6)


def test_occlusion_model_calls_follow_the_batching_plan(small, small_x):
    model = Counting(small)
    occ = Occlusion(model, (3, 4, 4), (3, 3, 3), batch_size=7)  # 4 x 4 = 16 windows per image
    res = occ.explain(small_x[:2])
    assert model.sizes == [2] + [7] * 4 + [4]  # clean images, then 2 x 16 occluded ones
    assert res.model_calls == sum(model.sizes) == 2 * (16 + 1)
    model.sizes.clear()
    occ(small_x[:2], target=[[0, 1, 2], [3, 4, 0]])  # K targets share the forwards
    assert model.sizes == [2] + [7] * 4 + [4]
    model.sizes.clear()
    Occlusion(model, (1, 4, 4), (1, 2, 2))(small_x, target=0)  # automatic batch size: one call here
    assert model.sizes == [3, 3 * 3 * 5 * 5]


# --- Occlusion: bad input, no trace ---------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"window": 0}, "window"), ({"window": (3, 0, 2)}, "window"), ({"window": (1, 2, 3, 4)}, "window"),
    ({"window": (2,)}, "window"), ({"window": 2.5}, "window"), ({"window": True}, "window"),
    ({"window": 3, "stride": -1}, "stride"), ({"window": 3, "stride": (1, 1, 1, 1)}, "stride"),
    ({"window": 3, "value": "black"}, "value"), ({"window": 3, "value": float("nan")}, "value"),
    ({"window": 3, "value": torch.zeros(1, 1, 3, 2, 2)}, "value"), ({"window": 3, "value": torch.ones(2) / 0}, "value"),
])
def test_occlusion_rejects_bad_config(small, kwargs, match):
    with pytest.raises(xt.XaiError, match=match):
        Occlusion(small, **kwargs)


def test_occlusion_bad_input_raises_before_any_model_call(small, small_x):
    model = Counting(small)
    cases = [
        (Occlusion(model, 13), "does not fit"),
        (Occlusion(model, (4, 2, 2)), "does not fit"),
        (Occlusion(model, (3, 4, 4), (3, 5, 4)), "stride"),
        (Occlusion(model, (1, 4, 4), 2), None),  # fine: the channel step is the channel window
        (Occlusion(model, (1, 4, 4), (2, 2, 2)), "stride"),
        (Occlusion(model, 4, value=torch.zeros(2, 12, 12)), "broadcast"),
        (Occlusion(model, 4, value=torch.zeros(2, 3, 12, 12)), "broadcast"),
    ]
    for occ, match in cases:
        if match is None:
            continue
        with pytest.raises(xt.XaiError, match=match):
            occ(small_x)
    with pytest.raises(xt.XaiError, match="target"):
        Occlusion(model, 4)(small_x, target=[0, 1])
    with pytest.raises(xt.XaiError, match="accepts"):
        Occlusion(model, 4)(small_x, baselines=0.0)  # Captum's name: ours is baseline=
    assert model.sizes == []
    with pytest.raises(xt.XaiError, match="out of range"):
        Occlusion(model, 4)(small_x, target=9)


def test_occlusion_leaves_no_trace(small, small_x):
    x = small_x.clone().requires_grad_(True)
    before = snapshot(small, x)
    Occlusion(small, (3, 4, 4), 2, value=torch.ones(3, 1, 1), batch_size=8).explain(x, target=[[0, 1]] * 3)
    small.fail_with = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        Occlusion(small, 4)(x)
    small.fail_with = None
    assert_no_trace(before, snapshot(small, x))
    assert x.grad is None
