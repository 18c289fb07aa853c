"""RISE: the masks against eclique-RISE's resize, the estimator, seeds, batching plan, bad
input, no trace."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import xai_torch as xt
import xai_torch.perturbation.rise as pert
from xai_torch.perturbation import RISE
from xai_torch.seeding import make_generator

from conftest import Counting, assert_no_trace, snapshot


# --- RISE: the masks ----------------------------------------------------------------------------------
@pytest.mark.parity
@pytest.mark.parametrize("size,cell", [((12, 12), 7), ((30, 17), 5), ((64, 64), 8), ((8, 8), 8)])
def test_rise_masks_equal_the_reference_resize(size, cell):
    """eclique/RISE: resize(grid, up_size, order=1, mode='reflect', anti_aliasing=False)[x:x+H, y:y+W]."""
    from skimage.transform import resize

    h, w = size
    grids, shifts = pert.draw_rise_grids(12, size, cell, 0.5, torch.Generator().manual_seed(0))
    masks = pert.render_rise_masks(grids, shifts, size, torch.float64)
    up = ((cell + 1) * math.ceil(h / cell), (cell + 1) * math.ceil(w / cell))
    for i in range(12):
        ref = resize(grids[i].numpy().astype("float32"), up, order=1, mode="reflect", anti_aliasing=False)
        dy, dx = shifts[i].tolist()
        assert 0 <= dy < math.ceil(h / cell) and 0 <= dx < math.ceil(w / cell)
        np.testing.assert_allclose(masks[i, 0].numpy(), ref[dy:dy + h, dx:dx + w], rtol=0, atol=1e-7)


def test_rise_masks_properties():
    m = pert.rise_masks(500, (20, 24), cell=5, p=0.3, generator=torch.Generator().manual_seed(1))
    assert m.shape == (500, 1, 20, 24) and m.dtype == torch.float32
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert abs(float(m.mean()) - 0.3) < 0.02  # E[M] = p: linear resize of Bernoulli(p) cells
    again = pert.rise_masks(500, (20, 24), cell=5, p=0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m, again)
    assert bool((pert.rise_masks(10, (9, 9), cell=3, p=1.0) == 1).all())


# --- RISE: the estimator -------------------------------------------------------------------------------
def test_rise_equals_the_sum_over_the_same_masks(small, small_x):
    n, cell, p = 200, 4, 0.4
    rise = RISE(small, masks=n, cell=cell, p=p, seed=7, batch_size=64)
    res = rise.explain(small_x)
    masks = pert.rise_masks(n, (12, 12), cell, p, make_generator(7, torch.device("cpu")))
    with torch.no_grad():
        classes = small(small_x).argmax(1)
        logits = torch.stack([small(xi * masks) for xi in small_x])  # (B, N, classes), direct
        probs = logits.softmax(2)[torch.arange(3), :, classes]  # (B, N)
        logits = logits[torch.arange(3), :, classes]
    expect = torch.einsum("bn,nchw->bchw", probs.double(), masks.double()) / (n * p)
    assert res.attributions.shape == (3, 1, 12, 12) and res.attributions.dtype == torch.float32
    torch.testing.assert_close(res.attributions.double(), expect, rtol=1e-5, atol=1e-7)
    assert torch.equal(res.targets, classes)
    torch.testing.assert_close(res.scores, small(small_x).detach().softmax(1)[torch.arange(3), classes])
    logit = RISE(small, masks=n, cell=cell, p=p, seed=7, score="logit")(small_x, target=classes)
    expect = torch.einsum("bn,nchw->bchw", logits.double(), masks.double()) / (n * p)
    torch.testing.assert_close(logit.double(), expect, rtol=1e-5, atol=1e-6)
    multi = rise(small_x, target=torch.stack([classes, torch.tensor([4, 0, 2])], 1))  # (B, K): shared masks
    assert multi.shape == (3, 2, 1, 12, 12)
    torch.testing.assert_close(multi[:, 0], res.attributions, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(multi[:, 1], rise(small_x, target=[4, 0, 2]), rtol=1e-6, atol=1e-8)
    explicit = rise(small_x, target=xt.ClassTarget(classes.tolist(), score="logit"))  # keeps its own scoring
    torch.testing.assert_close(explicit, logit, rtol=1e-6, atol=1e-7)


def test_rise_converges_to_its_closed_form_on_a_linear_model():
    """For F(z) = sum(a * z) (a = w * x summed over channels) the expected map is exact:
    M_u = sum_i c_i(u) g_i with linear-resize weights c(u) summing to 1 and iid Bernoulli(p)
    cells g_i, so E[M_u M_v | shift] = p^2 + p(1 - p) <c(u), c(v)>, and
    E[S(u)] = 1/p sum_v a_v E[M_u M_v] = p sum(a) + (1 - p) (K_h A K_w)(u), with
    K(i, i') = mean over shifts d of <R[d + i], R[d + i']> (R: the 1-D resize matrix, built here
    from scikit-image, the reference's resize). The Monte-Carlo error shrinks like 1/sqrt(N)."""
    from skimage.transform import resize

    h = w = 16
    cell, p = 4, 0.5
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * h * w, 1, bias=False)).double()
    x = torch.zeros(1, 3, h, w, dtype=torch.float64)
    x[..., 2:7, 3:9], x[..., 10:14, 8:15] = 1.0, -0.7  # two blobs larger than a grid cell
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    a = (model[1].weight.detach().view(3, h, w) * x[0]).sum(0)
    c = math.ceil(h / cell)
    up = (cell + 1) * c
    r = torch.tensor(np.stack([resize(np.outer(np.eye(cell)[i], np.ones(cell)), (up, up), order=1, mode="reflect",
                                      anti_aliasing=False)[:, 0] for i in range(cell)], 1))
    k = sum(r[d:d + h] @ r[d:d + h].T for d in range(c)) / c
    expect = p * a.sum() + (1 - p) * k @ a @ k
    errors = []
    for n in (250, 4000):
        s = RISE(model, masks=n, cell=cell, p=p, score="logit", seed=0, batch_size=500)(x, target=0)[0, 0]
        errors.append(float((s - expect).norm() / (expect - expect.mean()).norm()))
        corr = float(torch.corrcoef(torch.stack([s.flatten(), expect.flatten()]))[0, 1])
    assert errors[1] < 0.15 and corr > 0.99  # (0.10 and 0.9988 with these seeds)
    assert errors[1] < 0.6 * errors[0]  # (0.30 with 250 masks: 1/sqrt(16) would give 0.25x)


# --- RISE: seeds, batching plan, streaming --------------------------------------------------------
def test_rise_seeded_runs_repeat_bit_for_bit(small, small_x):
    a = RISE(small, masks=100, cell=3, seed=3, batch_size=32)(small_x)
    assert torch.equal(a, RISE(small, masks=100, cell=3, seed=3, batch_size=32)(small_x))
    other_chunks = RISE(small, masks=100, cell=3, seed=3, batch_size=50)(small_x)  # same masks, other sums
    torch.testing.assert_close(other_chunks, a, rtol=1e-5, atol=1e-7)
    assert not torch.equal(RISE(small, masks=100, cell=3, seed=4)(small_x), a)


def test_rise_model_calls_follow_the_batching_plan(small, small_x):
    model = Counting(small)
    res = RISE(model, masks=50, cell=4, seed=0, batch_size=16).explain(small_x[:2])
    assert model.sizes == [2] + [16] * 6 + [4]  # clean images, then 50 masks x 2 images
    assert res.model_calls == sum(model.sizes)
    model.sizes.clear()
    RISE(model, masks=50, cell=4, seed=0, batch_size=16)(small_x[:2], target=[[1, 2], [3, 4]])
    assert model.sizes == [16] * 6 + [4]  # explicit targets: no clean forward; K targets share forwards


def test_rise_streams_the_masks(small, small_x, monkeypatch):
    rendered = []
    render = pert.render_rise_masks

    def spy(grids, shifts, size, dtype=torch.float32):
        rendered.append(grids.shape[0])
        return render(grids, shifts, size, dtype)

    monkeypatch.setattr(pert, "render_rise_masks", spy)
    RISE(small, masks=200, cell=4, seed=0, batch_size=32)(small_x, target=0)
    # 600 samples in 19 chunks of <= 32; a chunk spans at most ceil(32 / 3) + 1 masks
    assert len(rendered) == 19 and max(rendered) <= 12 and sum(rendered) >= 200


def test_rise_non_square_input(small):
    x = torch.randn(2, 3, 10, 15, generator=torch.Generator().manual_seed(0))
    out = RISE(small, masks=40, cell=3, seed=0)(x.double().float())
    assert out.shape == (2, 1, 10, 15) and bool(torch.isfinite(out).all()) and float(out.min()) >= 0


# --- RISE: bad input, no trace -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"masks": 0}, "masks"), ({"masks": 2.5}, "masks"), ({"p": 0}, "p "), ({"p": 1.5}, "p "), ({"p": "0.5"}, "p "),
    ({"cell": 0}, "cell"), ({"score": "prob"}, "score"), ({"seed": 1.5}, "seed"),
])
def test_rise_rejects_bad_config(small, kwargs, match):
    with pytest.raises(xt.XaiError, match=match):
        RISE(small, **kwargs)


def test_rise_bad_input_raises_before_any_model_call(small, small_x):
    model = Counting(small)
    with pytest.raises(xt.XaiError, match="cell=13"):
        RISE(model, masks=10, cell=13)(small_x)
    with pytest.raises(xt.XaiError, match="target"):
        RISE(model, masks=10, cell=3)(small_x, target=[0, 1])
    with pytest.raises(xt.XaiError, match="target"):
        RISE(model, masks=10, cell=3)(small_x, target=1.5)
    assert model.sizes == []


def test_rise_leaves_no_trace(small, small_x):
    x = small_x.clone().requires_grad_(True)
    before = snapshot(small, x)
    RISE(small, masks=40, cell=4, seed=0, batch_size=16).explain(x, target=[[0, 1]] * 3)
    small.fail_with = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        RISE(small, masks=40, cell=4, seed=0)(x)
    small.fail_with = None
    assert_no_trace(before, snapshot(small, x))
    assert "RISE(model=SmallNet, masks=4000, cell=7, p=0.5, score='softmax'" in repr(RISE(small))


def test_masked_images_compose_any_chunk_of_the_mask_major_product():
    """The fused composition equals gathering the images and masks, for chunks that start and
    end inside a mask, span whole masks, or sit inside one mask."""
    from xai_torch.perturbation.rise import masked_images

    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    m = torch.rand(10, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    for start, stop in [(0, 30), (1, 2), (2, 11), (4, 29), (3, 6), (5, 7), (0, 1)]:
        n = torch.arange(start, stop)
        assert torch.equal(masked_images(x, m[start // 3:], start, stop), x[n % 3] * m[n // 3]), (start, stop)
