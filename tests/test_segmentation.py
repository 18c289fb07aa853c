"""Segmentation (xai_torch/segmentation.py): scikit-image segmenters relabelled from 0, label <->
mask conversions, dilation, XRAI's multiscale masks (parity with PAIR)."""
import numpy as np
import pytest
import torch

import xai_torch as xt
from xai_torch import felzenszwalb as fz
from xai_torch import segmentation as seg


def test_segmentation_labels_are_contiguous_and_greyscale_works(chelsea):
    for name in ("felzenszwalb", "quickshift", "slic"):
        labels = seg.SEGMENTERS[name](chelsea)
        assert labels.shape == (1, 224, 224) and labels.dtype == torch.long
        assert torch.equal(labels.unique(), torch.arange(int(labels.max()) + 1))
        grey = seg.SEGMENTERS[name](chelsea.mean(1, keepdim=True))
        assert int(grey.max()) >= 1 and int(grey.min()) == 0
    pixels = xt.zoo.center_crop(xt.zoo.image("chelsea"))
    assert seg.slic(chelsea, image=pixels[None]).shape == (1, 224, 224)
    masks = seg.labels_to_masks(labels[0])
    assert torch.equal(seg.masks_to_labels(masks), labels[0])
    with pytest.raises(xt.XaiError, match="unknown segmenter"):
        seg.get_segmenter("watershed")
    with pytest.raises(xt.XaiError, match="at least 2"):
        seg.check_segments(torch.zeros(224, 224, dtype=torch.long), chelsea)


def test_dilation_equals_scikit_image(chelsea):
    from skimage.morphology import dilation, disk

    labels = seg.felzenszwalb(chelsea, scale=200)[0]
    masks = seg.labels_to_masks(labels)
    scattered = seg.dilated_label_masks(labels, 0, int(labels.max()), 5)
    convolved = seg.dilate(masks, 5)
    assert torch.equal(scattered, convolved)
    assert np.array_equal(fz.dilated_masks(labels[None].numpy(), 5), scattered.numpy())  # the compiled kernel
    for m in (0, int(labels.max())):
        ref = dilation(masks[m].numpy(), footprint=disk(5))
        assert np.array_equal(convolved[m].numpy(), ref)


def photo(name, h, w):
    """A packaged photo at reduced size, rescaled to [-1, 1] as XRAI segments it."""
    img = torch.from_numpy(xt.zoo.image(name)).permute(2, 0, 1)[None].double()
    img = torch.nn.functional.interpolate(img, size=(h, w), mode="area")[0].permute(1, 2, 0).numpy()
    return (img - img.min()) / (img.max() - img.min()) * 2 - 1


def test_one_sort_for_every_scale_equals_scikit_image():
    """XRAI's six scales from one sorted graph: the labels of scikit-image's felzenszwalb, on two
    packaged photos (one non-square), a greyscale image and a flat, quantised image whose many
    equal edge costs make the (unstable) sort order matter."""
    from skimage.segmentation import felzenszwalb

    flat = np.repeat(np.repeat(np.random.default_rng(0).integers(0, 3, (12, 16, 3)), 6, 0), 6, 1) / 2.0
    cases = [(photo("coffee", 96, 128), seg.XRAI_MIN_SIZE), (photo("astronaut", 64, 64), seg.XRAI_MIN_SIZE),
             (photo("camera", 48, 40)[..., 0], 20), (flat, 20)]
    for image, min_size in cases:
        ours = fz.felzenszwalb_scales(image, seg.XRAI_SCALES, sigma=seg.XRAI_SIGMA, min_size=min_size)
        for labels, scale in zip(ours, seg.XRAI_SCALES):
            ref = felzenszwalb(image, scale=scale, sigma=seg.XRAI_SIGMA, min_size=min_size,
                               channel_axis=-1 if image.ndim == 3 else None)
            assert np.array_equal(labels, ref), (image.shape, scale)
    assert int(ours[0].max()) > 5  # the flat image does split


def test_multiscale_without_numba_is_the_same(monkeypatch):
    """Without numba the merge is scikit-image's per scale and the dilation torch's scatter: the
    same masks (on a non-224 image, so the resizes run too)."""
    x = torch.from_numpy(photo("chelsea", 40, 56)).permute(2, 0, 1)[None].float()
    fast = seg.multiscale(x)[0]
    monkeypatch.setattr(fz, "numba", None)
    slow = seg.multiscale(x)[0]
    assert fast.shape[1:] == (40, 56) and torch.equal(fast, slow)
