"""Blur IG (xai_torch/path/blur_ig.py) and its blur: scipy's gaussian_filter, completeness,
parity with PAIR saliency."""
import numpy as np
import pytest
import torch
from test_path_guided_ig import _pair_call

import xai_torch as xt


def test_gaussian_blur_equals_scipy():
    from scipy import ndimage

    x = torch.randn(3, 2, 20, 15, dtype=torch.float64)
    sigmas = torch.tensor([0.0, 0.1, 1.7])
    ours = xt.path.gaussian_blur(x, sigmas)
    for i, s in enumerate(sigmas.tolist()):
        ref = x[i].numpy() if s == 0 else ndimage.gaussian_filter(x[i].numpy(), [0, s, s], mode="constant")
        np.testing.assert_allclose(ours[i].numpy(), ref, rtol=0, atol=1e-12)
    big = xt.path.gaussian_blur(x[:1], 50.0)  # a radius (200 px) far beyond the image
    ref = ndimage.gaussian_filter(x[0].numpy(), [0, 50, 50], mode="constant")
    np.testing.assert_allclose(big[0].numpy(), ref, rtol=0, atol=1e-12)


def test_blur_ig_completeness_improves_with_steps(small, small_x):
    x = small_x.double()
    model = small.double()
    coarse = xt.BlurIG(model, steps=10, max_sigma=4).explain(x)
    fine = xt.BlurIG(model, steps=200, max_sigma=4).explain(x)
    assert float(fine.relative_delta.max()) < float(coarse.relative_delta.max())
    assert float(fine.relative_delta.max()) < 0.02
    s = xt.path.blur_sigmas(4, 16.0, sqrt=True)
    torch.testing.assert_close(s, torch.tensor([0, 8, 8 * 2**0.5, 8 * 3**0.5, 16], dtype=torch.float64))
    assert float(xt.path.blur_sigmas(4, 16.0, sqrt="pair")[-1]) == 4.0


@pytest.mark.parity
def test_blur_ig_parity_with_pair(small):
    import saliency.core as sc

    model = small.double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ours = xt.BlurIG(model, steps=25, max_sigma=6, batch_size=7)(x, target=2)
    for i in range(2):
        img = x[i].permute(1, 2, 0).numpy()
        ref = sc.BlurIG().GetMask(img, _pair_call(model), call_model_args=2, steps=25, max_sigma=6)
        np.testing.assert_allclose(ours[i].permute(1, 2, 0).numpy(), ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
