"""Occlusion over tuple inputs (issue 18.4): ``x = (image, metadata)``, a window and stride per
member or one for all, a baseline per member, the windows of all members enumerated jointly as
Captum does; parity with Captum's Occlusion, ``(B, K)`` targets, ``additional_forward_args``,
model-call counts, bad input naming the member, no trace."""
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import assert_no_trace, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


class ImageAndMeta(nn.Module):
    """``model(image, meta[, shift])``: a conv branch on the image, a linear one on the metadata,
    mixed non-linearly (so occluding one member changes the other's effect); ``shift`` (B, 5)
    is added to the logits. Counts the rows it sees."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.meta = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 4)
        self.head = nn.Linear(4, 5)
        self.rows = []

    def forward(self, image, meta, shift=None):
        self.rows.append(image.shape[0])
        feats = torch.relu(self.conv(image)).mean((2, 3))
        out = self.head(feats * torch.sigmoid(self.meta(meta)) + feats)
        return out if shift is None else out + shift


def data(b=3):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, 3, 6, 6, generator=g), torch.randn(b, 4, generator=g)


def close(ours, theirs):
    assert isinstance(ours, tuple) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parity
def test_tuple_occlusion_parity_with_captum():
    from captum.attr import Occlusion as CaptumOcclusion

    model = ImageAndMeta().eval()
    img, meta = data()
    captum = CaptumOcclusion(model)
    # a window and stride per member, overlapping and cropped at the edge; a per-example baseline
    base = (0.3, torch.randn(3, 4, generator=torch.Generator().manual_seed(2)))
    ours = xt.Occlusion(model, window=((3, 3, 3), (2,)), stride=((3, 2, 2), (1,)))(
        (img, meta), target=[1, 0, 3], baseline=base)
    theirs = captum.attribute((img, meta), sliding_window_shapes=((3, 3, 3), (2,)), strides=((3, 2, 2), 1),
                              baselines=base, target=[1, 0, 3])
    close(ours, theirs)
    assert all(float(a.abs().max()) > 0 for a in ours)
    # one window for every member: an int covers every dim (the full channel depth of the image)
    ours = xt.Occlusion(model, window=2)((img, meta), target=4)
    theirs = captum.attribute((img, meta), sliding_window_shapes=((3, 2, 2), (2,)), strides=((3, 2, 2), 2), target=4)
    close(ours, theirs)
    # additional_forward_args, per example, reach every occluded input with its image's row
    shift = torch.randn(3, 5, generator=torch.Generator().manual_seed(3)) * 10
    ours = xt.Occlusion(model, window=((1, 2, 3), (1,)), stride=((1, 2, 3), (1,)))(
        (img, meta), target=2, additional_forward_args=shift)
    theirs = captum.attribute((img, meta), sliding_window_shapes=((1, 2, 3), (1,)), strides=((1, 2, 3), 1),
                              target=2, additional_forward_args=(shift,))
    close(ours, theirs)


def test_tuple_occlusion_k_targets_calls_drops_and_value():
    model = ImageAndMeta().eval()
    img, meta = data()
    occ = xt.Occlusion(model, window=((3, 3, 3), 2))
    model.rows.clear()
    res = occ.explain((img, meta), target=[[1, 2], [0, 0], [3, 4]])
    # 4 image windows + 2 metadata windows per example, one forward each for both targets, plus the clean one
    assert res.model_calls == 3 * (4 + 2 + 1) == sum(model.rows)
    assert res.windows == ((1, 2, 2), (2,))
    assert res.drops[0].shape == (3, 2, 1, 2, 2) and res.drops[1].shape == (3, 2, 2)
    a_img, a_meta = res.attributions
    assert a_img.shape == (3, 2, 3, 6, 6) and a_meta.shape == (3, 2, 4)
    for j in range(2):
        single = occ((img, meta), target=res.targets[:, j].tolist())
        torch.testing.assert_close(a_img[:, j], single[0])
        torch.testing.assert_close(a_meta[:, j], single[1])
    # non-overlapping windows: an element's attribution is its window's drop, the drop is F(x) - F(occluded)
    with torch.no_grad():
        gone = meta.clone()
        gone[:, 2:] = 0.0
        drop = (model(img, meta) - model(img, gone))[torch.arange(3), res.targets[:, 0]]
    torch.testing.assert_close(a_meta[:, 0, 2:], drop[:, None].expand(3, 2))
    torch.testing.assert_close(res.drops[1][0, 0, 1], drop[0])
    # value= is the default fill of every member (the base's tuple default would be 0.0)
    with_value = xt.Occlusion(model, window=((3, 3, 3), 2), value=0.5)((img, meta), target=1)
    torch.testing.assert_close(with_value[1], occ((img, meta), target=1, baseline=0.5)[1])
    assert not torch.allclose(with_value[1], occ((img, meta), target=1)[1])


def test_tuple_occlusion_bad_input_names_the_member():
    model = ImageAndMeta().eval()
    img, meta = data()
    before = snapshot(model, img, meta)
    model.rows.clear()
    cases = [
        (xt.Occlusion(model, window=((3, 2, 2), (5,))), {}, "member 1"),  # larger than the metadata
        (xt.Occlusion(model, window=((3, 2, 2), (1,), (1,))), {}, "3 entries but x has 2"),
        (xt.Occlusion(model, window=((3, 2, 2), (1, 1))), {}, "member 1"),  # wrong number of dims
        (xt.Occlusion(model, window=((3, 2, 2), (2,)), stride=((3, 2, 2), (3,))), {}, "member 1"),
        (xt.Occlusion(model, window=7), {}, "member 0"),
        (xt.Occlusion(model, window=2), {"baseline": (0.0, torch.zeros(5))}, "member 1"),
        (xt.Occlusion(model, window=2), {"baseline": (0.0, 0.0, 0.0)}, "3 members but x has 2"),
        (xt.Occlusion(model, window=2), {"baseline": torch.zeros(3, 4)}, "one number or tensor per member"),
        (xt.Occlusion(model, window=2, value=torch.zeros(3, 1, 1)), {}, "value"),
        (xt.Occlusion(model, window=2), {"baseline": (0.0, float("nan"))}, "finite"),
    ]
    for occ, kwargs, match in cases:
        with pytest.raises(xt.XaiError, match=match):
            occ((img, meta), target=1, **kwargs)
    with pytest.raises(xt.XaiError, match="one shape per member"):
        xt.Occlusion(model, window=((3, 2, 2), (2,)))(img)  # per-member windows need a tuple x
    with pytest.raises(xt.XaiError, match="member 1"):
        xt.Occlusion(model, window=((3, 2, 2), (0,)))
    assert model.rows == []
    xt.Occlusion(model, window=2)((img, meta), target=1)
    assert_no_trace(before, snapshot(model, img, meta))
    assert not model._forward_pre_hooks
