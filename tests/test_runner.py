"""The model runner: call counts, pinning, chunking, no view of the input, inference mode, input
errors raised as XaiError with the original chained."""
import pytest
import torch
from torch import nn

import xai_torch as xt
from xai_torch.runner import ModelRunner, repeat_rows
from xai_torch.targets import SCORES, ClassTarget, score_classes

from conftest import Counting, SmallNet, assert_no_trace, snapshot


class Recording(nn.Module):
    """Records every input tensor it is handed (the object itself, not a copy)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x):
        self.seen.append(x)
        return self.model(x)


def shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_pin_scores_each_image_once_and_pins_argmax(small, small_x):
    model = Counting(small).eval()
    run = ModelRunner(model, batch_size=2, sample=small_x[0])
    pinned = run.pin(small_x, xt.as_target(None, 3))
    assert model.sizes == [2, 1] and run.calls == 3
    out = small(small_x)
    torch.testing.assert_close(pinned.scores, out.max(1).values)
    assert pinned.classes.tolist() == out.argmax(1).tolist()
    torch.testing.assert_close(pinned.probs, out.softmax(1).max(1).values)
    assert isinstance(pinned.target, ClassTarget) and pinned.target.classes.tolist() == out.argmax(1).tolist()
    assert run.target is pinned.target and run.clean_scores is pinned.scores


def test_pin_shares_one_forward_between_k_targets(small, small_x):
    model = Counting(small).eval()
    run = ModelRunner(model, batch_size=8, sample=small_x[0])
    pinned = run.pin(small_x, xt.as_target([[0, 1], [2, 3], [4, 0]], 3))
    assert model.sizes == [3] and run.calls == 3  # one forward per image, whatever K is
    out = small(small_x)
    torch.testing.assert_close(pinned.scores, out.gather(1, torch.tensor([[0, 1], [2, 3], [4, 0]])).flatten())


def test_scores_and_grad_in_chunks(small, small_x):
    model = Counting(small).eval()
    run = ModelRunner(model, batch_size=2, sample=small_x[0], target=xt.as_target([1, 2, 3], 3))
    rows = torch.arange(3)
    scored = run.scores(lambda a, b: (small_x[a:b] * 2, rows[a:b]), 3)
    assert model.sizes == [2, 1]
    torch.testing.assert_close(scored.scores, small(small_x * 2)[rows, rows + 1])
    assert scored.classes.tolist() == [1, 2, 3] and scored.probs.shape == (3,)
    g, s = run.gradients(small_x, rows)
    assert model.sizes == [2, 1, 2, 1] and run.calls == 6
    xg = small_x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(small(xg)[rows, rows + 1].sum(), xg)
    torch.testing.assert_close(g, ref)
    torch.testing.assert_close(s, small(small_x)[rows, rows + 1])


def test_automatic_chunk_size_follows_the_sample(small):
    x = torch.randn(2, 3, 64, 64)
    assert ModelRunner(small, sample=x[0]).chunk == 2**21 // (3 * 64 * 64)
    assert ModelRunner(small, sample=x).chunk == 2**21 // (3 * 64 * 64)  # a batch: its first image
    assert ModelRunner(small, batch_size=5, sample=x[0]).chunk == 5
    with pytest.raises(xt.XaiError, match="batch_size"):
        ModelRunner(small, batch_size=0)
    with pytest.raises(xt.XaiError, match="sample"):
        _ = ModelRunner(small).chunk


def test_map_runs_every_chunk_in_order(small):
    run = ModelRunner(small, batch_size=3)
    assert run.map(lambda a, b: (a, b), 8) == [(0, 3), (3, 6), (6, 8)]


def test_the_model_never_sees_the_users_memory(small, small_x):
    model = Recording(small).eval()
    run = ModelRunner(model, batch_size=8, sample=small_x[0], target=xt.as_target(0, 3))
    xd = run.place(small_x)
    assert shares_memory(xd, small_x)  # same device: no copy up front...
    run.pin(xd, xt.as_target(None, 3))
    run.forward(xd[1:])
    run.grad(xd, torch.arange(3))
    run.scores(lambda a, b: (xd[a:b], torch.arange(a, b)), 3)
    assert len(model.seen) == 4
    assert not any(shares_memory(z, small_x) for z in model.seen)  # ...but every model input is a copy
    fresh = small_x * 1
    run.forward(fresh)
    assert model.seen[-1] is fresh  # tensors the caller made are not copied


def test_explainers_never_hand_the_model_the_users_memory(small, small_x):
    model = Recording(small).eval()
    for explainer in (xt.Gradient(model), xt.InputXGradient(model), xt.Occlusion(model, window=4),
                      xt.RISE(model, masks=4, cell=4, seed=0), xt.SmoothGrad(xt.Gradient(model), samples=2)):
        model.seen.clear()
        explainer.explain(small_x)
        assert model.seen and not any(shares_memory(z, small_x) for z in model.seen), type(explainer).__name__


def test_works_under_the_users_inference_mode(small, small_x):
    with torch.inference_mode():
        x = small_x.clone()
        run = ModelRunner(small, sample=x[0], target=xt.as_target(None, 3))
        pinned = run.pin(x, run.target)
        g = run.grad(x, torch.arange(3))
        attr = xt.Gradient(small)(x)
    xg = small_x.clone().requires_grad_(True)
    out = small(xg)
    (ref,) = torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), xg)
    torch.testing.assert_close(g.grad, ref)
    torch.testing.assert_close(attr, ref)
    assert pinned.classes.tolist() == out.argmax(1).tolist()


def test_grad_refuses_a_detached_score(small, small_x):
    run = ModelRunner(lambda z: small(z).detach(), sample=small_x[0], target=xt.as_target(0, 3), name="Probe")
    with pytest.raises(xt.XaiError, match="Probe: the target score does not depend on x"):
        run.grad(small_x, torch.arange(3))


def test_grad_with_a_custom_forward_is_counted(small, small_x):
    run = ModelRunner(small, sample=small_x[0], target=xt.as_target(0, 3))
    g = run.grad(small_x, torch.arange(3), forward=lambda z: 2 * small(z))
    ref = run.grad(small_x, torch.arange(3))
    torch.testing.assert_close(g.grad, 2 * ref.grad)
    assert run.calls == 6


def test_training_mode_buffers_come_back(small_x):
    torch.manual_seed(0)
    model = SmallNet()  # training mode
    before = snapshot(model, small_x)
    with pytest.warns(xt.XaiWarning, match="training mode.*BatchNorm2d"):
        xt.metrics.Scorer(model, small_x, None)
    run = ModelRunner(model, sample=small_x[0])
    assert run.training
    with run.session():
        run.forward(small_x)
    assert_no_trace(before, snapshot(model, small_x))


# --- input errors -------------------------------------------------------------------------------
def test_wrong_channel_count_is_an_xai_error_naming_the_shape(small):
    x = torch.randn(4, 8, 8)  # 3-D: one image with 4 channels, the model takes 3
    before = snapshot(small, x)
    for call in (lambda: xt.Gradient(small)(x), lambda: xt.Occlusion(small, window=4)(x),
                 lambda: xt.metrics.Scorer(small, x[None])):
        with pytest.raises(xt.XaiError, match=r"SmallNet.*\(4, 8, 8\).*'conv1' \(Conv2d\)") as info:
            call()
        assert isinstance(info.value.__cause__, RuntimeError)  # the original, chained
        assert "channels" in str(info.value.__cause__)
    assert_no_trace(before, snapshot(small, x))


def test_wrong_dtype_is_an_xai_error(small):
    with pytest.raises(xt.XaiError, match="float64") as info:
        xt.Gradient(small)(torch.randn(1, 3, 8, 8, dtype=torch.float64))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_dtype_mismatches_name_both_dtypes_and_nothing_is_cast(small):
    """Issue 19 item 4: float64 x / float32 model and float32 x / bfloat16 model (float16
    convolutions run on CUDA only) raise XaiError naming both dtypes; x in the model's dtype
    works, with float32 results."""
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    half = SmallNet().eval().to(torch.bfloat16)
    for model, bad, good in ((small, x.double(), x), (half, x, x.to(torch.bfloat16))):
        dtype = next(model.parameters()).dtype
        for call in (lambda m, z: xt.Gradient(m)(z), lambda m, z: xt.metrics.deletion(m, z, z[:, 0], step=16).curve):
            with pytest.raises(xt.XaiError, match=rf"'conv1' \(Conv2d\) computes in {dtype} but x is {bad.dtype}"):
                call(model, bad)
            assert call(model, good).dtype == (torch.float64 if call(model, good).ndim == 2 else torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (float16 convolutions)")
def test_float16_model_with_float32_x_on_cuda():
    torch.manual_seed(0)
    model = SmallNet().eval().half().cuda()
    x = torch.rand(2, 3, 8, 8, device="cuda")
    with pytest.raises(xt.XaiError, match=r"computes in torch.float16 but x is torch.float32"):
        xt.Gradient(model)(x)
    maps = xt.Gradient(model)(x.half())
    assert maps.dtype == torch.float32 and bool(torch.isfinite(maps).all())


def test_input_errors_behind_parameter_free_layers_and_in_functional_models():
    """A Flatten before the first Linear, or no layers at all (F(x) = x W): still an XaiError
    naming the misfit (these escaped as bare RuntimeErrors)."""
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(xt.XaiError, match=r"'1' \(Linear\) computes in torch.float32 but x is torch.float64"):
        xt.Gradient(seq)(x.double())
    with pytest.raises(xt.XaiError, match=r"\(4, 4, 4\).*'1' \(Linear\) failed") as info:
        xt.Occlusion(seq, window=2)(torch.rand(1, 4, 4, 4))
    assert isinstance(info.value.__cause__, RuntimeError)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(48, 2))

        def forward(self, z):
            return z.flatten(1) @ self.w

    with pytest.raises(xt.XaiError, match="it computes in torch.float32 but x is torch.float64"):
        xt.metrics.deletion(Functional(), x.double(), x[:, 0].double(), step=4)
    bug = RuntimeError("a bug, not the input")

    class Buggy(Functional):
        def forward(self, z):
            raise bug

    with pytest.raises(RuntimeError) as info:   # no layer ran and the dtypes agree: not the input's
        ModelRunner(Buggy(), sample=x[0]).forward(x)
    assert info.value is bug


def test_errors_from_later_layers_are_not_disguised(small, small_x):
    error = RuntimeError("boom")
    small.fail_with = error  # raised after conv1 and bn ran: not the input's fault
    with pytest.raises(RuntimeError) as info:
        ModelRunner(small, sample=small_x[0]).forward(small_x)
    assert info.value is error
    small.fail_with = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        ModelRunner(small, sample=small_x[0]).forward(small_x)


def test_only_the_first_call_is_checked(small, small_x):
    class FailsLater(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.calls = nn.Conv2d(3, 2, 1), 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("second call")
            return self.conv(x).mean((2, 3))

    run = ModelRunner(FailsLater(), sample=small_x[0])
    run.forward(small_x)
    with pytest.raises(RuntimeError, match="second call"):
        run.forward(small_x)  # the input fitted once: the error is the model's own


def test_plain_callables_keep_their_errors(small_x):
    def fn(z):
        raise RuntimeError("callable")

    with pytest.raises(RuntimeError, match="callable"):
        ModelRunner(fn, sample=small_x[0]).forward(small_x)


# --- score kinds ---------------------------------------------------------------------------------
def test_score_kinds_live_once():
    out = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]])
    c = torch.tensor([1, 2])
    assert SCORES == ("logit", "softmax", "log_softmax", "accuracy")
    torch.testing.assert_close(score_classes(out, c, "logit"), torch.tensor([3.0, 0.2]))
    torch.testing.assert_close(score_classes(out, c, "softmax"), out.softmax(1)[[0, 1], c])
    torch.testing.assert_close(score_classes(out, c, "log_softmax"), out.log_softmax(1)[[0, 1], c])
    torch.testing.assert_close(score_classes(out, c, "accuracy"), torch.tensor([1.0, 0.0]))
    assert xt.metrics.SCORES is SCORES or set(xt.metrics.SCORES) == set(SCORES)


def test_repeat_rows():
    out = torch.arange(6).view(3, 2)
    assert repeat_rows(out, 2)[:, 0].tolist() == [0, 0, 2, 2, 4, 4]
    assert repeat_rows({"logits": out, "n": 1}, 2)["n"] == 1
    assert repeat_rows([1, 2], 2) == [1, 1, 2, 2]
    with pytest.raises(xt.XaiError, match="one row per image"):
        repeat_rows(3.0, 2)
