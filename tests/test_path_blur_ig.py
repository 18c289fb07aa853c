"""Blur IG (xai_torch/path/blur_ig.py) and its blur: scipy's gaussian_filter, completeness,
parity with PAIR saliency."""
import numpy as np
import pytest
import torch
from test_path_guided_ig import _pair_call

import xai_torch as xt


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
