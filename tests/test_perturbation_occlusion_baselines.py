"""Occlusion's per-call ``baseline=`` (issue 18.6): one fill per image ``(B, C, H, W)``, parity
with Captum's per-example ``baselines``, bad shapes."""
import pytest
import torch

import xai_torch as xt


def per_image(x, seed=3):
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def test_each_image_is_occluded_with_its_own_baseline(small, small_x):
    base = per_image(small_x)
    occ = xt.Occlusion(small, (3, 4, 4), 3, batch_size=7)
    targets = [[0, 1], [3, 2], [4, 4]]
    res = occ.explain(small_x, target=targets, baseline=base)
    for i in range(3):  # the same as the image alone, its baseline as the constructor's value
        alone = xt.Occlusion(small, (3, 4, 4), 3, value=base[i]).explain(small_x[i:i + 1], target=[targets[i]])
        torch.testing.assert_close(res.attributions[i], alone.attributions[0])
        torch.testing.assert_close(res.drops[i], alone.drops[0])
    colour = torch.rand(3, 3, 1, 1, generator=torch.Generator().manual_seed(4))  # one colour per image
    got = occ(small_x, target=1, baseline=colour)
    torch.testing.assert_close(got, occ(small_x, target=1, baseline=colour.expand_as(small_x)))
    torch.testing.assert_close(occ(small_x, target=1, baseline=0.5), xt.Occlusion(small, (3, 4, 4), 3,
                                                                                  value=0.5)(small_x, target=1))


def test_bad_baselines_raise_before_any_model_call(small, small_x):
    occ = xt.Occlusion(small, 4)
    for bad in (torch.zeros(2, 3, 12, 12), torch.zeros(3, 3, 11, 12), torch.zeros(3, 2, 12, 12), "black"):
        with pytest.raises(xt.XaiError):
            occ(small_x, baseline=bad)


@pytest.mark.parity
def test_per_example_baselines_parity_with_captum(small, small_x):
    from captum.attr import Occlusion as CaptumOcclusion

    base = per_image(small_x)
    ours = xt.Occlusion(small, (2, 5, 5), (1, 3, 3), batch_size=17)(small_x, target=[0, 3, 4], baseline=base)
    theirs = CaptumOcclusion(small).attribute(small_x, sliding_window_shapes=(2, 5, 5), strides=(1, 3, 3),
                                              baselines=base, target=[0, 3, 4], perturbations_per_eval=5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.abs().max()))
