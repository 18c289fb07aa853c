"""Input space and baselines (xai_torch/space.py): black and white in pixel space, named,
stochastic, tensor and callable baselines."""
import pytest
import torch
from torch import nn

import xai_torch as xt


def test_baselines_in_pixel_space(small_x):
    ig = xt.IntegratedGradients(nn.Identity(), normalize=((0.5, 0.4, 0.3), (0.2, 0.25, 0.5)))
    black, white, md = ig.baselines(small_x, ["black", "white", "max_distance"])
    lo = torch.tensor([-2.5, -1.6, -0.6]).view(1, 3, 1, 1)
    hi = torch.tensor([2.5, 2.4, 1.4]).view(1, 3, 1, 1)
    torch.testing.assert_close(black, lo.expand_as(small_x))
    torch.testing.assert_close(white, hi.expand_as(small_x))
    torch.testing.assert_close(md, torch.where(small_x < (lo + hi) / 2, hi, lo))
    # without the normalisation: each image's own min and max
    (black,) = xt.IntegratedGradients(nn.Identity()).baselines(small_x, "black")
    torch.testing.assert_close(black[:, 0, 0, 0], small_x.flatten(1).min(1).values)
    assert bool((black == black[:, :1, :1, :1]).all())
    ig = xt.IntegratedGradients(nn.Identity(), input_range=(-1, 1))
    u, g = ig.baselines(small_x, ["uniform", xt.Baseline("gaussian", sigma=0.1)], torch.Generator().manual_seed(0))
    assert bool((u >= -1).all() and (u <= 1).all() and (g >= -1).all() and (g <= 1).all())
    (blurred,) = ig.baselines(small_x, xt.Baseline("blur", sigma=2))
    torch.testing.assert_close(blurred, xt.path.gaussian_blur(small_x, 2.0))
    (t,) = ig.baselines(small_x, torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1))
    assert t.shape == small_x.shape and float(t[2, 1, 5, 5]) == pytest.approx(0.2)
    (c,) = ig.baselines(small_x, lambda x: x * 0.5)
    torch.testing.assert_close(c, small_x * 0.5)
