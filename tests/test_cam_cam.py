"""CAM with the classifier's weights (xai_torch/cam/cam.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import xai_torch as xt

from cam_helpers import CallCounter


def test_fc_option_and_errors(gapnet, gap_x):
    named = xt.CAM(gapnet, layer="features", fc="fc")(gap_x, target=1)
    torch.testing.assert_close(named, xt.CAM(gapnet, layer="features", fc=gapnet.fc)(gap_x, target=1))
    with pytest.raises(xt.XaiError, match="'features.0' is a Conv2d, not an nn.Linear"):
        xt.CAM(gapnet, layer="features", fc="features.0")
    with pytest.raises(xt.XaiError, match="no nn.Linear"):
        xt.CAM(nn.Sequential(nn.Conv2d(3, 2, 1)), layer="0")
    with pytest.raises(xt.XaiError, match="give one layer"):
        xt.CAM(gapnet, layer=["features.0", "features.2"])


def test_one_forward_no_backward(gapnet, gap_x):
    with CallCounter(gapnet) as calls:
        xt.CAM(gapnet, layer="features", batch_size=2)(gap_x, target=[[0, 1]] * 3)
    assert calls.sizes == [2, 2, 2]  # 3 images x 2 targets in chunks of 2


def test_attached_mode_works_without_gradients(gapnet, gap_x):
    """CAM reads the classifier's weights: the user's forward may run under no_grad."""
    expect = xt.CAM(gapnet, layer="features").explain(gap_x, target=[0, 3, 1])
    with xt.CAM(gapnet, layer="features") as cam, CallCounter(gapnet) as calls:
        with torch.no_grad():
            out = gapnet(gap_x)
        got = cam.from_output(out, target=[0, 3, 1])
    assert calls.sizes == [3]
    torch.testing.assert_close(got.attributions, expect.attributions, rtol=0, atol=0)
    torch.testing.assert_close(got.weights[0], expect.weights[0], rtol=0, atol=0)
