"""Partition SHAP: Owen values by enumeration (and Shapley values where they coincide), shap's
values on the same masker and budget (parity), conservation, batching, trees, maskers, bad input."""
import itertools
import math
import types

import numpy as np
import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.region.maskers import box_blur, check_masker
from xai_torch.region.partition import PartitionSHAP
from xai_torch.region.partition_tree import AxisTree, LinkageTree, check_linkage, superpixel_linkage

from conftest import Counting, assert_no_trace, snapshot


def tiny(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, classes)).eval()


class SegmentGame(nn.Module):
    """A nonlinear game on the quadrants of an 4 x 4 image: products and squares of the
    quadrant means of channel 0 (the masker fills 0, the image is 1)."""

    def forward(self, x):
        q = torch.stack([x[:, 0, :2, :2].mean((1, 2)), x[:, 0, :2, 2:].mean((1, 2)),
                         x[:, 0, 2:, :2].mean((1, 2)), x[:, 0, 2:, 2:].mean((1, 2))], 1)
        v = 1.5 * q[:, 0] * q[:, 1] + q[:, 2] - 0.7 * q[:, 1] * q[:, 2] * q[:, 3] + 0.3 * q[:, 3] ** 2 + q[:, 0]
        return torch.stack([v, -v], 1)


QUADRANTS = (torch.arange(4)[:, None] // 2 * 2 + torch.arange(4)[None] // 2)  # labels 0 1 / 2 3


def owen_by_enumeration(v, kids, m):
    """Owen values from the definition: the mean marginal contribution over the orderings of
    the leaves in which every node's leaves come together."""
    leaves = {i: {i} for i in range(m)}
    for i, (a, b) in enumerate(kids):
        leaves[m + i] = leaves[a] | leaves[b]
    groups = [leaves[m + i] for i in range(len(kids))]
    phi, count = np.zeros(m), 0
    for order in itertools.permutations(range(m)):
        if all(max(order.index(j) for j in g) - min(order.index(j) for j in g) == len(g) - 1 for g in groups):
            count += 1
            for n, j in enumerate(order):
                phi[j] += v(frozenset(order[:n + 1])) - v(frozenset(order[:n]))
    return phi / count


def shapley_by_enumeration(v, m):
    phi = np.zeros(m)
    for order in itertools.permutations(range(m)):
        for n, j in enumerate(order):
            phi[j] += v(frozenset(order[:n + 1])) - v(frozenset(order[:n]))
    return phi / math.factorial(m)


def game_of(model, x, seg):
    def v(s):
        img = torch.zeros_like(x)
        for j in s:
            img[:, seg == j] = x[:, seg == j]
        with torch.no_grad():
            return float(model(img[None])[0, 0])
    return v


@pytest.mark.parametrize("kids", [[[0, 1], [2, 3], [4, 5]], [[0, 1], [4, 2], [5, 3]], [[3, 1], [0, 4], [2, 5]]])
def test_owen_values_equal_the_enumerated_definition(kids):
    model, x = SegmentGame(), torch.ones(3, 4, 4)
    ps = PartitionSHAP(model, masker=0.0, tree=kids, max_evals=200, output="logit", seed=0)
    res = ps.explain(x[None], target=0, segments=QUADRANTS)
    expect = owen_by_enumeration(game_of(model, x, QUADRANTS), kids, 4)
    np.testing.assert_allclose(res.weights[0].double().numpy(), expect, rtol=1e-5, atol=1e-6)
    assert bool(res.exact[0])
    assert float(res.attributions.sum()) == pytest.approx(float(res.scores - res.base_values), rel=1e-5)


def test_owen_equals_shapley_with_two_players_and_on_an_additive_game():
    seg2 = (torch.arange(4)[None].expand(4, 4) >= 2).long()  # two halves: one split, Owen = Shapley
    model, x = SegmentGame(), torch.ones(3, 4, 4)
    res = PartitionSHAP(model, masker=0.0, tree="superpixels", output="logit").explain(x[None], 0, segments=seg2)
    expect = shapley_by_enumeration(game_of(model, x, seg2), 2)
    np.testing.assert_allclose(res.weights[0].double().numpy(), expect, rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).eval()  # additive: Owen = Shapley on any tree
    xr = torch.rand(3, 4, 4)
    res = PartitionSHAP(linear, masker=0.0, tree=[[0, 1], [4, 2], [5, 3]], output="logit", max_evals=100).explain(
        xr[None], 0, segments=QUADRANTS)
    expect = shapley_by_enumeration(game_of(linear, xr, QUADRANTS), 4)
    np.testing.assert_allclose(res.weights[0].double().numpy(), expect, rtol=1e-5, atol=1e-6)


def test_axis_tree_splits_as_shap_and_numbers_leaves_in_shap_order():
    tree = AxisTree(2, 3, 2)  # (C, H, W): shap's (H, W, C) = (3, 2, 2)
    assert tree.children(tree.root) == ((0, 1, 0, 2, 0, 2), (1, 3, 0, 2, 0, 2))  # H first (3 >= 2), 3 // 2 = 1 row
    assert tree.children((1, 3, 0, 2, 0, 2)) == ((1, 2, 0, 2, 0, 2), (2, 3, 0, 2, 0, 2))  # tie: H
    assert tree.children((1, 2, 0, 2, 0, 2)) == ((1, 2, 0, 1, 0, 2), (1, 2, 1, 2, 0, 2))
    assert tree.children((1, 2, 0, 1, 0, 2)) == ((1, 2, 0, 1, 0, 1), (1, 2, 0, 1, 1, 2))  # channels last
    # a linkage over the elements in shap's (H, W, C) order gives the same values as the boxes
    model, x = tiny(), torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    kids, m = [], 4 * 4 * 3
    node_of = {}

    def build(box):  # the axis tree as a linkage, leaves numbered (h W + w) C + c
        parts = AxisTree.children(box)
        if parts is None:
            return (box[0] * 4 + box[2]) * 3 + box[4]
        a, b = build(parts[0]), build(parts[1])
        kids.append([a, b])
        node_of[box] = m + len(kids) - 1
        return node_of[box]

    build((0, 4, 0, 4, 0, 3))
    by_box = PartitionSHAP(model, masker="blur(2,2)", max_evals=60, seed=0).explain(x, target=1)
    by_linkage = PartitionSHAP(model, masker="blur(2,2)", max_evals=60, seed=0, tree=kids).explain(x, target=1)
    torch.testing.assert_close(by_linkage.attributions, by_box.attributions, rtol=1e-5, atol=1e-9)


def test_values_add_up_calls_are_counted_and_images_and_targets_are_batched():
    model = Counting(tiny())
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ps = PartitionSHAP(model, masker="blur(3,3)", max_evals=24, round_size=6, seed=0, batch_size=16)
    targets = torch.tensor([[0, 1], [2, 3], [1, 0]])
    res = ps.explain(x, target=targets)
    assert res.attributions.shape == (3, 2, 3, 8, 8)
    torch.testing.assert_close(res.attributions.sum((2, 3, 4)), res.scores - res.base_values, rtol=1e-4, atol=1e-7)
    assert res.evaluations.tolist() == [24, 24, 24] and not bool(res.exact.any())
    assert sum(model.sizes) == res.model_calls == 72 and max(model.sizes) <= 16
    alone = PartitionSHAP(tiny(), masker="blur(3,3)", max_evals=24, round_size=6, seed=0).explain(
        x[2:], target=targets[2:])
    torch.testing.assert_close(alone.attributions[0], res.attributions[2], rtol=1e-4, atol=1e-8)
    default = PartitionSHAP(tiny(), masker="blur(3,3)", max_evals=24, round_size=6, seed=0)(x[:1])
    assert default.shape == (1, 3, 8, 8)


def test_superpixel_tree_merges_adjacent_regions_of_similar_colour_first():
    labels = np.repeat(np.array([[0, 1, 2, 3]]), 2, 0).repeat(2, 1)  # four stripes, left to right
    image = np.zeros((2, 8, 3))
    image[:, 2:4] = 0.05   # 1 is close to 0
    image[:, 4:6] = 1.0    # 2 is far from 1 but 3 is not adjacent to 0
    image[:, 6:8] = 0.9
    link = superpixel_linkage(labels, image)
    assert link[0, :2].tolist() == [0, 1] and link[1, :2].tolist() == [2, 3] and link[2, :2].tolist() == [4, 5]
    check_linkage(link, 4)
    model, x = tiny(), torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    cells = (torch.arange(16)[:, None] // 6 * 3 + torch.arange(16)[None] // 6)  # a 3 x 3 grid
    res = PartitionSHAP(model, masker=0.5, tree="superpixels", max_evals=2000).explain(x, target=2, segments=cells)
    s = int(res.segments.max()) + 1
    assert res.weights.shape == (1, s) and bool(res.exact[0])
    torch.testing.assert_close(res.weights.sum(), (res.scores - res.base_values)[0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(res.attributions.sum(), res.weights.sum(), rtol=1e-4, atol=1e-7)


def test_maskers_blur_as_opencv_and_inpaint_through_8_bit_pixels():
    import cv2

    x = torch.rand(1, 3, 9, 7, dtype=torch.float64)
    ref = cv2.blur(x[0].permute(1, 2, 0).numpy().copy(), (4, 3))
    np.testing.assert_allclose(box_blur(x, 4, 3)[0].permute(1, 2, 0).numpy(), ref, atol=1e-12)
    assert check_masker("blur( 8, 8 )") == "blur(8,8)"
    # inpainting in model space (normalised) equals OpenCV on the 0..255 photo, mapped back
    pixels = torch.randint(0, 256, (1, 3, 8, 8), generator=torch.Generator().manual_seed(0)).double()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    xm = (pixels / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    from xai_torch.region.maskers import bind_masker

    masking = bind_masker("inpaint_telea", xm, normalize=(mean, std))
    torch.testing.assert_close(masking.shown, xm)  # integer photos come back exactly
    keep = torch.ones(1, 3, 8, 8, dtype=torch.bool)
    keep[:, 1, 2:5, 3:6] = False  # one hidden channel hides the pixel
    got = masking(keep, 0)
    hole = np.zeros((8, 8), np.uint8)
    hole[2:5, 3:6] = 1
    ref = cv2.inpaint(pixels[0].permute(1, 2, 0).numpy().astype(np.uint8), hole, 3, cv2.INPAINT_TELEA)
    back = (torch.from_numpy(ref).permute(2, 0, 1).double() / 255 - torch.tensor(mean).view(3, 1, 1)) / \
        torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(got[0], back)
    everything = masking(torch.zeros_like(keep), 0)  # all hidden: the channel means
    torch.testing.assert_close(everything[0], xm[0].mean((1, 2), keepdim=True).expand(3, 8, 8))


@pytest.mark.parametrize("make, message", [
    (lambda m: PartitionSHAP(m, masker="inpaint"), "inpaint_telea"),
    (lambda m: PartitionSHAP(m, masker="blur(0,3)"), "blur(kx,ky)"),
    (lambda m: PartitionSHAP(m, max_evals=3), ">= 4"),
    (lambda m: PartitionSHAP(m, tree="quadtree"), "superpixels"),
    (lambda m: PartitionSHAP(m, tree=[[0, 1], [0, 2]]), "binary tree"),
    (lambda m: PartitionSHAP(m, round_size=0), "round_size"),
])
def test_bad_configuration_raises_naming_the_choices(make, message):
    with pytest.raises(xt.XaiError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(tiny())


def test_a_tree_that_does_not_cover_the_image_raises_with_nothing_changed():
    model, x = tiny(), torch.rand(2, 3, 4, 4)
    before = snapshot(model, x)
    with pytest.raises(xt.XaiError, match="does not cover the image: it joins 3 leaves but the image has 48"):
        PartitionSHAP(model, masker=0.0, tree=[[0, 1], [3, 2]])(x)
    with pytest.raises(xt.XaiError, match="does not cover"):  # 3 leaves, 4 superpixels
        PartitionSHAP(model, masker=0.0, tree=[[0, 1], [3, 2]])(x, segments=QUADRANTS)
    with pytest.raises(xt.XaiError, match="segments"):
        PartitionSHAP(model, masker=0.0)(x, segments=QUADRANTS)
    assert_no_trace(before, snapshot(model, x))


# --- parity with shap ------------------------------------------------------------------------
@pytest.fixture
def plain_shap(monkeypatch):
    """shap, with its numba-compiled helpers run as the Python they are written in (``py_func``:
    the same code, without ~20 s of JIT compilation on a busy 2-core machine)."""
    shap = pytest.importorskip("shap")
    import shap.explainers._partition as part
    import shap.maskers._image as image
    import shap.utils._masked_model as mm

    for module, names in ((image, ["_jit_build_partition_tree"]), (part, ["lower_credit"]),
                          (mm, ["_init_masks", "_rec_fill_masks", "_build_fixed_single_output",
                                "_build_fixed_multi_output"])):
        for name in names:
            monkeypatch.setattr(module, name, getattr(module, name).py_func)
    monkeypatch.setattr(image, "numba", types.SimpleNamespace(typed=types.SimpleNamespace(List=list)))
    return shap


@pytest.mark.parity
@pytest.mark.parametrize("masker", ["blur(3,3)", "inpaint_telea"])
def test_values_equal_shaps_partition_explainer(plain_shap, masker):
    """Same masker, max_evals and batch_size (our round_size): the values of the top-2 classes
    equal shap's; shap gets the 0..255 photo, we the model-space image and its range."""
    shap, model, h = plain_shap, tiny(), 8
    x = torch.randint(0, 256, (2, 3, h, h), generator=torch.Generator().manual_seed(4)).float() / 255

    def f(z):
        t = torch.from_numpy(np.asarray(z, dtype=np.float32)).permute(0, 3, 1, 2) / 255
        with torch.no_grad():
            return torch.softmax(model(t), 1).double().numpy()

    photo = (x * 255).permute(0, 2, 3, 1).numpy().astype(np.float64)
    explainer = shap.Explainer(f, shap.maskers.Image(masker, (h, h, 3)), algorithm="partition")
    sv = explainer(photo, max_evals=40, batch_size=6, outputs=shap.Explanation.argsort.flip[:2], silent=True)
    top2 = torch.from_numpy(np.argsort(-f(photo), 1)[:, :2].copy())
    ours = PartitionSHAP(model, masker=masker, max_evals=40, round_size=6, input_range=(0, 1), seed=0)
    res = ours.explain(x, target=top2)
    expect = torch.from_numpy(sv.values).permute(0, 4, 3, 1, 2).float()  # (B, H, W, C, K) -> (B, K, C, H, W)
    torch.testing.assert_close(res.attributions, expect, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(res.base_values.double(), torch.from_numpy(np.asarray(sv.base_values)), rtol=1e-5,
                               atol=1e-8)


def test_linkage_tree_masks_and_spreads_over_superpixels():
    kids = check_linkage([[0, 1], [2, 3]], 3)
    labels = np.array([[0, 0, 1], [2, 2, 1]])
    tree = LinkageTree(kids, (1, 2, 3), labels)
    keep = tree.keep([(3,), (2,), (3, 2)], torch.device("cpu"))[:, 0]
    assert keep[0].tolist() == [[True, True, True], [False, False, True]]
    assert keep[1].tolist() == [[False, False, False], [True, True, False]] and bool(keep[2].all())
    spread = tree.spread({4: np.array([6.0]), 1: np.array([3.0])}, 1)[0, 0]  # root: 6 over 3 leaves; leaf 1: 3 more
    np.testing.assert_allclose(tree.leaf_values({4: np.array([6.0]), 1: np.array([3.0])}, 1), [[2, 5, 2]])
    np.testing.assert_allclose(spread, [[1, 1, 2.5], [1, 1, 2.5]])
