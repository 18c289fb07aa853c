"""Score-CAM (xai_torch/cam/scorecam.py): the three weightings, model calls, attached mode."""
from __future__ import annotations

import pytest
import torch

import xai_torch as xt

from cam_helpers import CallCounter, GapNet, acts_of


def _unit(m):
    return (m - m.min()) / (m.max() - m.min())


def test_score_cam_weightings_and_model_calls():
    torch.manual_seed(4)  # (not the global state other tests leave): every channel is active
    model = GapNet().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    calls = []
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        res = xt.ScoreCAM(model, layer="features", batch_size=4).explain(x, target=[1, 2])
    finally:
        h.remove()
    a = acts_of(model, x)
    active = (a.flatten(2).max(-1).values > a.flatten(2).min(-1).values)
    n_active = int(active.sum())
    assert calls[0] == 2 and sum(calls[1:]) == n_active and max(calls[1:]) <= 4
    # official weights: softmax probability of the class on each masked input
    up = a  # the layer has the input resolution here
    for i, c in ((0, 1), (1, 2)):
        for k in range(a.shape[1]):
            if not active[i, k]:
                assert res.weights[0][i, k] == 0
                continue
            h_k = (up[i, k] - up[i, k].min()) / (up[i, k].max() - up[i, k].min())
            with torch.no_grad():
                p = model(x[i:i + 1] * h_k).softmax(1)[0, c]
            torch.testing.assert_close(res.weights[0][i, k], p)
    # paper weighting: softmax over channels of p_c(x * H_k) - p_c(baseline); several chunks
    calls.clear()
    h = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        paper = xt.ScoreCAM(model, layer="features", weighting="paper", batch_size=1).explain(x, target=[1, 2])
    finally:
        h.remove()
    assert calls.count(1) == len(calls)  # every model call within batch_size
    assert len(calls) == 2 * (1 + a.shape[1] + 1)  # per image: clean, 5 channels, one baseline
    with torch.no_grad():
        p0 = model(torch.zeros(1, 3, 8, 8)).softmax(1)[0]
        s = torch.stack([torch.stack([model(x[i:i + 1] * _unit(a[i, k])).softmax(1)[0, c] - p0[c]
                                      for k in range(a.shape[1])]) for i, c in ((0, 1), (1, 2))])
    torch.testing.assert_close(paper.weights[0], s.softmax(1))
    # a callable target scores the masked inputs itself
    via_callable = xt.ScoreCAM(model, layer="features").explain(x, target=lambda out: out.softmax(1)[:, 1])
    torch.testing.assert_close(via_callable.weights[0][0], res.weights[0][0])
    with pytest.raises(xt.XaiError, match="weighting must be one of"):
        xt.ScoreCAM(model, layer="features", weighting="fast")


def test_one_layer_at_a_time():
    with pytest.raises(xt.XaiError, match="one layer at a time"):
        xt.ScoreCAM(GapNet(), layer=["features.0", "features.2"])


@pytest.mark.parametrize("weighting", ["official", "paper", "grad_cam_lib"])
def test_attached_mode_runs_only_the_masked_forwards(weighting):
    """In a with block, the user's forward is the clean one: Score-CAM adds only its masked
    (and baseline) forwards, and the result equals a call."""
    model = GapNet().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with CallCounter(model) as called:
        expect = xt.ScoreCAM(model, layer="features", weighting=weighting, batch_size=4).explain(x, target=[1, 2])
    with xt.ScoreCAM(model, layer="features", weighting=weighting, batch_size=4) as cam, CallCounter(model) as calls:
        out = model(x)
        got = cam.from_output(out, target=[1, 2])
    assert calls.sizes[0] == 2 and calls.sizes[1:] == called.sizes[1:]  # no second clean forward
    torch.testing.assert_close(got.attributions, expect.attributions, rtol=0, atol=0)
    torch.testing.assert_close(got.weights[0], expect.weights[0], rtol=0, atol=0)
    x.mul_(0)  # the images were kept from the forward: changing x afterwards changes nothing
    with cam:
        out = model(x + 1)
        x.add_(5)
        torch.testing.assert_close(cam.from_output(out, target=[1, 2]).attributions,
                                   xt.ScoreCAM(model, layer="features", weighting=weighting)(x * 0 + 1, [1, 2]))


def test_channel_forwards_stream_in_chunks_with_results_equal_to_any_chunking():
    torch.manual_seed(4)
    model = GapNet().eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    sizes = []
    h = model.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        one = xt.ScoreCAM(model, layer="features", batch_size=1).explain(x, target=[0, 1, 2])
        assert max(sizes) == 1
        auto = xt.ScoreCAM(model, layer="features").explain(x, target=[0, 1, 2])
    finally:
        h.remove()
    torch.testing.assert_close(auto.attributions, one.attributions, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(auto.weights[0], one.weights[0], rtol=1e-6, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_stream_fitting_grows_the_chunk_to_the_free_memory(monkeypatch):
    from xai_torch import batching
    from xai_torch.cam.scorecam import stream_fitting
    from xai_torch.runner import ModelRunner

    model = GapNet().eval().cuda()
    x = torch.rand(64, 3, 8, 8, device="cuda")
    monkeypatch.setitem(batching.AUTO_ELEMENTS, "cuda", 4 * x[0].numel())  # a first chunk of 4
    run = ModelRunner(model, sample=x[0], device=x.device)
    seen = []

    def fn(a, b):
        seen.append(b - a)
        with torch.no_grad():
            return model(x[a:b])

    out = torch.cat(stream_fitting(run, fn, 64))
    assert seen[0] == 4 and max(seen[1:]) > 4 and sum(seen) == 64
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
