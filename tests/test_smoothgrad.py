"""SmoothGrad / SG-SQ / VarGrad around the package's explainers."""
import numpy as np
import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import assert_no_trace, snapshot


def noise_seed(seed, image):
    """SmoothGrad's documented seed of image ``image``'s noise generator, restated with numpy."""
    return int(np.random.SeedSequence(seed, spawn_key=(1, image)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class Quadratic(nn.Module):
    """F_j(x) = sum_i c_ji x_i^2, so dF_j/dx = 2 c_j x: the smoothed gradient has a closed form."""

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.randn(3, 2 * 4 * 4, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return (x.flatten(1) ** 2) @ self.c.t()


@pytest.mark.parametrize("variant", ["mean", "square", "var"])
def test_closed_form_with_the_same_noise(variant):
    model = Quadratic()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    sg = xt.SmoothGrad(xt.Gradient(model), samples=6, noise=0.2, variant=variant, seed=7)
    res = sg.explain(x, target=[0, 2])
    std = 0.2 * (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
    # the noise convention (module doc): image i's generator is seeded from (seed, NOISE = 1, i)
    # and its copies draw in turn, one randn((C, H, W)) each
    eps = torch.cat([torch.stack([torch.randn((2, 4, 4), generator=g) for _ in range(6)])
                     for g in (torch.Generator().manual_seed(noise_seed(7, i)) for i in range(2))])
    noisy = x.repeat_interleave(6, 0) + eps * std.repeat_interleave(6).view(-1, 1, 1, 1)
    c = model.c.detach()[[0, 2]].repeat_interleave(6, 0).view(12, 2, 4, 4)
    grads = (2 * c * noisy).view(2, 6, 2, 4, 4).double()
    expect = {"mean": grads.mean(1), "square": (grads**2).mean(1), "var": grads.var(1, unbiased=False)}[variant]
    torch.testing.assert_close(res.attributions, expect.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.noise_std, std)
    torch.testing.assert_close(res.targets, torch.tensor([0, 2]))


def test_zero_noise_gives_the_wrapped_explainer(small, small_x):
    for inner in (xt.Gradient(small), xt.GuidedBackprop(small), xt.IntegratedGradients(small, steps=6)):
        smooth = xt.SmoothGrad(inner, samples=3, noise=0.0)(small_x, target=1)
        torch.testing.assert_close(smooth, inner(small_x, target=1))
    var = xt.SmoothGrad(xt.Gradient(small), samples=3, noise=0.0, variant="var")(small_x)
    assert float(var.abs().max()) == 0.0


def test_targets_resolved_on_the_clean_image(small, small_x):
    with torch.no_grad():
        classes = small(small_x).argmax(1)
    sg = xt.SmoothGrad(xt.Gradient(small), samples=4, noise=0.5, seed=0)
    res = sg.explain(small_x)
    torch.testing.assert_close(res.targets, classes)
    torch.testing.assert_close(res.attributions, sg(small_x, target=classes))


def test_wraps_cams_ig_and_multi_targets(small, small_x):
    with xt.SmoothGrad(xt.GradCAM(small, layer="conv2"), samples=4, seed=0) as sg:
        maps = sg(small_x, target=[1, 2, 3])
        assert maps.shape == (3, 1, 12, 12)
    assert not small.conv2._forward_hooks
    tk = torch.tensor([[0, 1], [1, 2], [2, 3]])
    res = xt.SmoothGrad(xt.IntegratedGradients(small, steps=4), samples=3, seed=0).explain(small_x, target=tk)
    assert res.attributions.shape == (3, 2, 3, 12, 12) and res.draw_delta.shape == (3, 2, 3)
    # each column equals the single-target call with the same noise
    col = xt.SmoothGrad(xt.IntegratedGradients(small, steps=4), samples=3, seed=0)(small_x, target=tk[:, 1])
    torch.testing.assert_close(res.attributions[:, 1], col, rtol=1e-5, atol=1e-6)


def test_per_image_call_arguments_follow_their_image(small, small_x):
    base = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    ig = xt.IntegratedGradients(small, steps=5)
    ours = xt.SmoothGrad(ig, samples=2, noise=0.0)(small_x, target=1, baseline=base)
    torch.testing.assert_close(ours, ig(small_x, target=1, baseline=base))
    ours = xt.SmoothGrad(ig, samples=2, noise=0.0)(small_x, target=1, baseline=[base, "black"])
    torch.testing.assert_close(ours, ig(small_x, target=1, baseline=[base, "black"]))


def test_model_calls_and_batching(small, small_x):
    sizes = []
    small.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    xt.SmoothGrad(xt.Gradient(small, batch_size=4), samples=5, seed=0)(small_x)
    assert sizes == [3, 4, 4, 4, 3]  # clean targets, then 15 noisy copies in chunks of 4


def test_seeded_noise_repeats(small, small_x):
    sg = xt.SmoothGrad(xt.Gradient(small), samples=4, seed=11)
    assert torch.equal(sg(small_x), sg(small_x))
    assert not torch.equal(sg(small_x), xt.SmoothGrad(xt.Gradient(small), samples=4, seed=12)(small_x))


def test_bad_inputs(small, small_x):
    with pytest.raises(xt.XaiError, match="wraps an xai_torch explainer"):
        xt.SmoothGrad(small)
    with pytest.raises(xt.XaiError, match="samples"):
        xt.SmoothGrad(xt.Gradient(small), samples=0)
    with pytest.raises(xt.XaiError, match="noise"):
        xt.SmoothGrad(xt.Gradient(small), noise=-0.1)
    with pytest.raises(xt.XaiError, match="variant"):
        xt.SmoothGrad(xt.Gradient(small), variant="sq")
    with pytest.raises(xt.XaiError, match="unexpected call argument"):
        xt.SmoothGrad(xt.Gradient(small))(small_x, baseline="black")
    with pytest.raises(xt.XaiError, match="images but x has"):
        xt.SmoothGrad(xt.IntegratedGradients(small, steps=2))(small_x, baseline=torch.zeros(2, 3, 12, 12))


def test_no_trace(small, small_x):
    small_x.requires_grad_(True)
    before = snapshot(small, small_x)
    for inner in (xt.Gradient(small), xt.GuidedBackprop(small), xt.GradCAM(small, layer="conv2")):
        xt.SmoothGrad(inner, samples=3)(small_x)
        assert_no_trace(before, snapshot(small, small_x))
    assert "SmoothGrad(explainer=GradCAM(" in repr(xt.SmoothGrad(xt.GradCAM(small, layer="conv2")))


def test_many_samples_are_reduced_in_parts(small, small_x):
    sizes = []
    small.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    res = xt.SmoothGrad(xt.Gradient(small), samples=300, noise=0.0, variant="var").explain(small_x[:1], target=2)
    assert sizes == [1, 256, 44]  # the clean target, then at most 256 noisy copies per wrapped call
    assert float(res.attributions.abs().max()) < 1e-6  # noise 0: every copy equal, variance 0
    mean = xt.SmoothGrad(xt.Gradient(small), samples=300, noise=0.0)(small_x[:1], target=2)
    torch.testing.assert_close(mean, xt.Gradient(small)(small_x[:1], target=2))


class Draw(xt.Explainer):
    """A stochastic explainer that returns its own random draw (one uniform map per image, from
    its generator, image after image) and records every image's draw."""

    def __init__(self, model, seed=None):
        super().__init__(model)
        self.seed, self.draws = seed, []

    def _explain(self, x, target, session, *, details=True, **kwargs):
        g = None if self.seed is None else torch.Generator().manual_seed(self.seed)
        a = torch.rand(x.shape, generator=g)
        self.draws.extend(a.unbind(0))
        return xt.Explanation(attributions=a, targets=None, scores=None)


class RecordingRISE(xt.RISE):
    """RISE that records the result of every call (its copies share the record)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draws = []

    def _run(self, *args, **kwargs):
        res = super()._run(*args, **kwargs)
        self.draws.append(res)
        return res


def test_a_stochastic_explainer_draws_afresh_for_every_copy(small, small_x, monkeypatch):
    """Issue 18 item 2: the chunked reduction restarted a seeded wrapped explainer's generator
    per part (draws 256-511 repeated 0-255), and RISE's masks were shared by the copies of a
    call; with noise 0 every copy must still be its own draw, whatever the chunking."""
    inner = Draw(small, seed=3)
    sg = xt.SmoothGrad(inner, samples=512, noise=0.0, seed=0)
    full = sg(small_x[:1], target=1)
    assert len(inner.draws) == 512
    assert len({tuple(d.flatten().tolist()) for d in inner.draws}) == 512
    half = xt.SmoothGrad(Draw(small, seed=3), samples=256, noise=0.0)(small_x[:1], target=1)
    assert not torch.equal(full, half)  # a repeat of the first 256 draws gives their mean exactly
    assert inner.seed == 3  # the user's explainer keeps its seed

    # RISE (few masks, tiny model), copies recorded from the wrapped calls; a small part size
    # makes the old reduction split the copies into several calls
    monkeypatch.setattr(xt.smoothgrad, "SAMPLES_PER_CALL", 4)
    rise = RecordingRISE(small, masks=8, cell=3, seed=0)
    draws = rise.draws
    sg = xt.SmoothGrad(rise, samples=6, noise=0.0, seed=0)
    res = sg(small_x[:2], target=1)
    maps = torch.cat([d.attributions.view(-1, 12 * 12) for d in draws]).view(6, 2, -1)
    for i in range(2):
        assert len({tuple(m.tolist()) for m in maps[:, i]}) == 6, "a copy repeated another copy's masks"
    torch.testing.assert_close(res, maps.double().mean(0).view(2, 1, 12, 12).float())
    # the result does not depend on the chunking, nor on the other images
    monkeypatch.setattr(xt.smoothgrad, "SAMPLES_PER_CALL", 256)
    torch.testing.assert_close(xt.SmoothGrad(rise, samples=6, noise=0.0, seed=0)(small_x[:2], target=1), res)
    small_rise = xt.RISE(small, masks=8, cell=3, seed=0, batch_size=3)
    torch.testing.assert_close(xt.SmoothGrad(small_rise, samples=6, noise=0.0, seed=0)(small_x[:2], target=1), res)
    torch.testing.assert_close(xt.SmoothGrad(rise, samples=6, noise=0.0, seed=0)(small_x[:1], target=1), res[:1])


def test_an_images_noise_depends_only_on_the_seed_its_index_and_itself(small, small_x):
    """Issue 19 item 3: one generator drew the noise of a whole chunk, so an image's result
    depended on the other images of the batch."""
    small_x = small_x[..., :11, :11].contiguous()  # an odd size: CPU randn's tail differs with the draw's length
    sg = xt.SmoothGrad(xt.Gradient(small), samples=3, seed=0)
    both = sg.explain(small_x)
    torch.testing.assert_close(sg(small_x[:1]), both.attributions[:1])
    other = small_x.clone()
    other[1:] = torch.randn(2, 3, 11, 11, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(sg(other, target=both.targets)[:1], both.attributions[:1])
    # and not on the chunking: 3 images x 100 copies are 2 wrapped calls (images 0-1, then 2)
    sg = xt.SmoothGrad(xt.Gradient(small), samples=100, seed=0)
    torch.testing.assert_close(sg(small_x, target=1)[:2], sg(small_x[:2], target=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xt.SmoothGrad(xt.Gradient(small, batch_size=64), samples=100, seed=0)(small_x, target=1),
                               sg(small_x, target=1), rtol=1e-5, atol=1e-6)
    assert torch.equal(sg(small_x, target=1), sg(small_x, target=1))  # bit for bit with the seed
