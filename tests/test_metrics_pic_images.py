"""PIC's pixel side: the bokeh image, WebP entropy and random masks, closed forms and parity
with PAIR's ``create_blurred_image`` / ``estimate_image_entropy``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import griddata

from xai_torch.errors import XaiError
from xai_torch.metrics.pic_images import bokeh_image, generate_random_mask, one_blas_thread, webp_entropy


def test_bokeh_image_closed_form_and_griddata():
    # PAIR's examples: only the corners and (1, 0) are known
    img = np.asarray([[0.0, 0.0, 0.0], [1.0, 8.0, 1.0], [0.0, 0.0, 0.0]])
    mask = np.zeros((3, 3), bool)
    mask[1, 0] = True
    assert np.array_equal(bokeh_image(img, mask), [[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    assert np.array_equal(bokeh_image(img, np.ones((3, 3), bool)), img)
    # uint8 RGB: linear griddata per channel, rounded half to even
    g = np.random.default_rng(3)
    photo = g.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    known = g.random((7, 9)) < 0.3
    out = bokeh_image(photo, known)
    k = known.copy()
    k[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    ref = photo.astype(np.float32)
    for ch in range(3):
        ref[..., ch][~k] = griddata(np.argwhere(k), photo[..., ch][k], np.argwhere(~k), method="linear")
    assert out.dtype == np.uint8 and np.array_equal(out, np.round(ref).astype(np.uint8))
    assert np.array_equal(out[k], photo[k])
    # tensors in, tensors out; greyscale works
    t = bokeh_image(torch.from_numpy(photo), torch.from_numpy(known))
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(out))
    assert np.array_equal(bokeh_image(photo[..., 1], known), out[..., 1])
    with pytest.raises(XaiError, match="mask"):
        bokeh_image(photo, known[:, :5])


def test_webp_entropy_and_random_mask():
    g = np.random.default_rng(0)
    noise = g.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert webp_entropy(flat) < webp_entropy(noise)
    assert webp_entropy(noise[..., :1]) == webp_entropy(noise[..., 0])
    with pytest.raises(XaiError, match="uint8"):
        webp_entropy(noise.astype(np.float32))

    m = generate_random_mask(20, 30, 0.1, batch=4, seed=5)
    assert m.shape == (4, 20, 30) and m.dtype == torch.bool
    assert m.flatten(1).sum(1).tolist() == [60] * 4  # int(H * W * fraction), as PAIR
    assert not torch.equal(m[0], m[1])
    assert torch.equal(m, generate_random_mask(20, 30, 0.1, batch=4, seed=5))
    assert generate_random_mask(10, 10, 0.0).sum() == 0 and generate_random_mask(10, 10, 0.0).shape == (10, 10)
    with pytest.raises(XaiError, match="fraction"):
        generate_random_mask(10, 10, 1.5)


@pytest.mark.parity
def test_parity_pair_bokeh_and_entropy():
    from saliency.metrics import pic as P

    g = np.random.default_rng(4)
    photo = g.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    for frac in (0.0, 0.05, 0.4):
        mask = g.random((24, 20)) < frac
        with one_blas_thread():  # PAIR's tiny LAPACK calls stall a loaded machine otherwise
            ref = P.create_blurred_image(photo, mask)
        assert np.array_equal(bokeh_image(photo, mask), ref)
        assert webp_entropy(ref) == P.estimate_image_entropy(ref)
