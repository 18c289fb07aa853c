"""Segmentation (xai_torch/segmentation.py): scikit-image segmenters relabelled from 0, label <->
mask conversions, dilation, XRAI's multiscale masks (parity with PAIR)."""
import numpy as np
import pytest
import torch

import xai_torch as xt
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
    for m in (0, int(labels.max())):
        ref = dilation(masks[m].numpy(), footprint=disk(5))
        assert np.array_equal(convolved[m].numpy(), ref)


@pytest.mark.parity
def test_multiscale_matches_pair_on_a_non_224_image(chelsea):
    import saliency.core.xrai as pair_xrai

    x = torch.nn.functional.interpolate(chelsea, size=(120, 150), mode="bilinear", align_corners=False)
    ours = seg.multiscale(x)[0]
    ref = np.stack(pair_xrai._get_segments_felzenszwalb(x[0].permute(1, 2, 0).numpy()))
    assert np.array_equal(ours.numpy(), ref)
