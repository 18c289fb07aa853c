"""XRAI: the greedy ranking on hand-made regions, parity with PAIR saliency, the explainer."""
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import segmentation as seg
from xai_torch.region import xrai_rank
from xai_torch.region.xrai import XRAI, rank_fast, rank_full, rank_map

from conftest import assert_no_trace, snapshot


@pytest.fixture(params=["compiled", "torch"])
def backend(request, monkeypatch):
    """The ranking's two implementations (numba on the CPU; tensor ops on other devices or
    without numba) must agree on every hand-made case."""
    if request.param == "torch":
        monkeypatch.setattr(xrai_rank, "numba_available", lambda: False)
    return request.param


def boxes(shape, *rects):
    masks = torch.zeros((len(rects), *shape), dtype=torch.bool)
    for m, (y0, y1, x0, x1) in zip(masks, rects):
        m[y0:y1, x0:x1] = True
    return masks


def test_full_ranks_by_density_of_new_pixels(backend):
    attr = torch.zeros(20, 20, dtype=torch.float64)
    attr[:10, :10] = 3.0  # A
    attr[10:, :10] = 1.0  # B
    attr[:, 10:] = 2.0    # C
    masks = boxes((20, 20), (10, 20, 0, 10), (0, 20, 10, 20), (0, 10, 0, 10), (0, 20, 0, 20))  # B, C, A, all
    out, regions, gains = rank_full(attr, masks, min_pixel_diff=1)
    torch.testing.assert_close(out, attr)  # every region gets its own density
    assert [float(g) for g in gains] == [3.0, 2.0, 1.0]
    ranks = rank_map(regions, (20, 20))
    assert int(ranks[0, 0]) == 1 and int(ranks[0, 15]) == 2 and int(ranks[15, 0]) == 3
    assert float(out.sum()) == pytest.approx(float(attr.sum()))


def test_full_uses_only_the_new_pixels_of_overlapping_regions(backend):
    attr = torch.zeros(10, 10, dtype=torch.float64)
    attr[:, :5] = 4.0
    attr[:, 5:] = 1.0
    # region 0: the left half (density 4); region 1: everything (density 2.5, but after region 0
    # its new pixels have density 1); region 2: the right 3 columns (density 1)
    masks = boxes((10, 10), (0, 10, 0, 5), (0, 10, 0, 10), (0, 10, 7, 10))
    out, regions, gains = rank_full(attr, masks, min_pixel_diff=1)
    assert [float(g) for g in gains] == [4.0, 1.0]
    assert torch.equal(regions[1], ~masks[0])  # region 1 added its new pixels (ties: earlier first)


def test_ties_go_to_the_earlier_region_and_small_regions_are_dropped(backend):
    attr = torch.ones(10, 10, dtype=torch.float64)
    masks = boxes((10, 10), (0, 10, 5, 10), (0, 10, 0, 5), (0, 2, 0, 2))
    for rank in (lambda a, m: rank_full(a, m, min_pixel_diff=50), lambda a, m: rank_fast(a, m, min_pixel_diff=50)):
        out, regions, gains = rank(attr, masks)
        assert torch.equal(regions[0], masks[0]) and torch.equal(regions[1], masks[1])
        assert len(regions) == 2  # the 4-pixel region adds fewer than 50 new pixels: dropped
    # the uncovered rest gets its own mean and ranks last
    attr = torch.arange(100, dtype=torch.float64).view(10, 10)
    out, regions, gains = rank_full(attr, boxes((10, 10), (0, 6, 0, 10)), min_pixel_diff=50)
    assert float(out[9, 9]) == pytest.approx(float(attr[6:].mean()))
    assert torch.equal(regions[-1], ~boxes((10, 10), (0, 6, 0, 10))[0])


def test_area_threshold_stops_after_crossing(backend):
    attr = torch.arange(4, dtype=torch.float64).repeat_interleave(25).view(10, 10)  # rows of 0..3 bands
    masks = boxes((10, 10), (0, 3, 0, 10), (3, 5, 0, 10), (5, 8, 0, 10), (8, 10, 0, 10))
    _, regions, _ = rank_full(attr, masks, area_threshold=0.15, min_pixel_diff=1)
    assert len(regions) == 2  # the densest band (20 %) crosses 15 %; then the uncovered rest
    _, regions, _ = rank_full(attr, masks, area_threshold=0.25, min_pixel_diff=1)
    assert len(regions) == 3  # 20 % <= 25 %: one more band, then the rest
    _, regions, _ = rank_full(attr, masks, area_threshold=1.0, min_pixel_diff=1)
    assert len(regions) == 4


def test_compiled_and_tensor_rankings_agree(monkeypatch):
    """Random overlapping boxes and an attribution with many ties: the compiled loop and the
    tensor ops give the same regions, order, ranks and map, for both algorithms."""
    g = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 20, (40, 2), generator=g)
    sizes = torch.randint(2, 12, (40, 2), generator=g)
    masks = boxes((24, 24), *[(int(y), int(y + dy), int(x), int(x + dx)) for (y, x), (dy, dx) in zip(corners, sizes)])
    attr = torch.randint(-3, 4, (24, 24), generator=g).double()
    for algorithm, area in (("full", 1.0), ("full", 0.4), ("fast", 1.0)):
        ours = xrai_rank.rank(attr, masks, algorithm, area, min_pixel_diff=3)
        with monkeypatch.context() as m:
            m.setattr(xrai_rank, "numba_available", lambda: False)
            ref = xrai_rank.rank(attr, masks, algorithm, area, min_pixel_diff=3)
        assert ours.regions.shape[0] > 10
        assert torch.equal(ours.regions, ref.regions) and torch.equal(ours.ranks, ref.ranks)
        assert torch.equal(ours.ranks, rank_map(list(ours.regions), (24, 24)))
        torch.testing.assert_close(ours.map, ref.map, rtol=0, atol=1e-12)
        torch.testing.assert_close(ours.gains, ref.gains, rtol=0, atol=1e-12)


@pytest.mark.parity
def test_parity_with_pair_on_packaged_photos():
    """Two packaged photos at reduced size (one non-square: PAIR resizes to 224 px to segment and
    back): our default segments are PAIR's masks in PAIR's order, and both algorithms give PAIR's
    map and ranks from the same base attribution."""
    import saliency.core as sc
    import saliency.core.xrai as pair_xrai

    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # scores only
    for name, size in (("chelsea", (64, 64)), ("coffee", (56, 72))):
        x = torch.nn.functional.interpolate(xt.zoo.preprocess(xt.zoo.image(name)), size=size, mode="area")
        base = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * x.abs()
        img, attr = x[0].permute(1, 2, 0).numpy(), base[0].permute(1, 2, 0).numpy()
        pair_masks = pair_xrai._get_segments_felzenszwalb(img)
        for algorithm in ("full", "fast"):
            res = XRAI(model, algorithm=algorithm, min_pixel_diff=20).explain(x, base_attribution=base)
            if algorithm == "full":
                assert np.array_equal(res.segments[0].numpy(), np.stack(pair_masks))
            params = sc.XRAIParameters(algorithm=algorithm, return_xrai_segments=True)
            params.experimental_params["min_pixel_diff"] = 20
            ref = sc.XRAI().GetMaskWithDetails(img, None, base_attribution=attr, segments=pair_masks,
                                               extra_parameters=params)
            np.testing.assert_allclose(res.attributions[0, 0].numpy(), ref.attribution_mask, rtol=1e-6, atol=1e-9)
            assert np.array_equal(res.ranks[0, 0].numpy(), ref.segments)
            assert len(res.regions[0]) > 5


def test_explainer_with_ig_and_given_segments(small, small_x):
    labels = (torch.arange(12)[:, None] // 3).expand(12, 12)  # 4 horizontal bands
    xrai = XRAI(small, steps=8, min_pixel_diff=1)
    res = xrai.explain(small_x, target=[0, 1, 2], segments=labels)
    assert res.attributions.shape == (3, 1, 12, 12) and res.ranks.shape == (3, 1, 12, 12)
    assert [len(r) for r in res.regions] == [4, 4, 4]
    # the base attribution is IG with each image's min and max as baselines, channel-max reduced
    lo = small_x.amin(dim=(1, 2, 3), keepdim=True).expand_as(small_x)
    hi = small_x.amax(dim=(1, 2, 3), keepdim=True).expand_as(small_x)
    ig = xt.IntegratedGradients(small, steps=8)(small_x, target=[0, 1, 2], baseline=[lo, hi])
    torch.testing.assert_close(res.base_attribution, ig)
    attr = ig.max(1).values
    for i in range(3):
        for band in range(4):
            expect = attr[i, band * 3:(band + 1) * 3].double().mean()
            assert float(res.attributions[i, 0, band * 3, 0]) == pytest.approx(float(expect), rel=1e-5)
    # the same segments as masks, and a re-ranking without model calls
    masks = [seg.labels_to_masks(labels)] * 3
    sizes = []
    hook = small.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    again = xrai(small_x, target=[0, 1, 2], segments=masks, base_attribution=res.base_attribution)
    hook.remove()
    assert sizes == []
    torch.testing.assert_close(again, res.attributions)


def test_default_segmentation_and_fast(small_x, small):
    res = XRAI(small, steps=4, algorithm="fast", min_pixel_diff=5).explain(small_x[:1])
    assert res.segments[0].dtype == torch.bool and res.segments[0].shape[1:] == (12, 12)
    assert float(res.attributions.double().sum()) == pytest.approx(float(res.base_attribution.max(1).values.sum()),
                                                                   rel=1e-4, abs=1e-6)


def test_bad_inputs(small, small_x):
    xrai = XRAI(small, steps=4)
    sizes = []
    small.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    with pytest.raises(xt.XaiError, match="shape of x"):
        xrai(small_x, base_attribution=torch.zeros(3, 3, 12, 11))
    with pytest.raises(xt.XaiError, match="segments must be"):
        xrai(small_x, segments=torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(xt.XaiError, match="mask sets"):
        xrai(small_x, segments=[torch.zeros(2, 12, 12, dtype=torch.bool)])
    assert sizes == []
    with pytest.raises(xt.XaiError, match="algorithm"):
        XRAI(small, algorithm="greedy")
    with pytest.raises(xt.XaiError, match="area_threshold"):
        XRAI(small, area_threshold=0)


def test_no_trace(small, small_x):
    small_x.requires_grad_(True)
    before = snapshot(small, small_x)
    XRAI(small, steps=4, min_pixel_diff=5)(small_x[:1])
    assert_no_trace(before, snapshot(small, small_x))


def test_two_targets_per_image_share_the_segments(small, small_x):
    labels = (torch.arange(12)[:, None] // 3).expand(12, 12)
    xrai = XRAI(small, steps=4, min_pixel_diff=1)
    tk = torch.tensor([[0, 1], [2, 3], [4, 0]])
    res = xrai.explain(small_x, target=tk, segments=labels)
    assert res.attributions.shape == (3, 2, 1, 12, 12) and res.ranks.shape == (3, 2, 1, 12, 12)
    assert res.base_attribution.shape == (3, 2, 3, 12, 12) and len(res.regions) == 6
    col = xrai(small_x, target=tk[:, 1], segments=labels)
    torch.testing.assert_close(res.attributions[:, 1], col, rtol=1e-5, atol=1e-7)


