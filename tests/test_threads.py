"""Explainers on one model in several threads (issue 19, item 1): a web service or a thread-pool
evaluation runs them at once. Each thread gets its serial results, bit for bit, and nothing stays
on the model.

Why this holds: the CAM capture hooks (:class:`xai_torch.hooks.LayerTap`) record only forwards of
the thread that registered them, and the rectifier rule's ``TorchFunctionMode`` is entered in the
calling thread only (PyTorch keeps the mode stack per thread: checked in
``test_the_function_mode_stack_is_per_thread``). Grad mode is per thread too.

Equality is exact: every thread computes the same chunks with the same kernels, and torch's
intra-op pool is one thread here (``one_thread``), so no kernel splits its sums differently. The
switch interval is lowered so that the threads interleave inside every forward and backward.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import xai_torch as xt

from conftest import SmallNet, assert_no_trace, snapshot


@pytest.fixture(autouse=True)
def interleaved() -> Iterator[None]:
    """Threads switch every microsecond (CPython's default is 5 ms), on one intra-op thread."""
    interval, threads = sys.getswitchinterval(), torch.get_num_threads()
    sys.setswitchinterval(1e-6)
    torch.set_num_threads(1)
    yield
    sys.setswitchinterval(interval)
    torch.set_num_threads(threads)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SmallNet().eval()


X = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
SEGMENTS = (torch.arange(12)[:, None] // 6 * 2 + torch.arange(12)[None, :] // 6).expand(3, 12, 12).clone()

# name -> (build(model), call keywords): the explainers of the report, and both kinds of
# hooks (per-call CAM taps on conv2 and on the reused ReLU's second call) and the rectifier mode
RECIPES: dict[str, tuple[Callable[[Any], xt.Explainer], dict[str, Any]]] = {
    "GradCAM": (lambda m: xt.GradCAM(m, layer="conv2"), {}),
    "Gradient": (lambda m: xt.Gradient(m), {}),
    "GuidedBackprop": (lambda m: xt.GuidedBackprop(m), {}),
    "ScoreCAM": (lambda m: xt.ScoreCAM(m, layer="conv2"), {}),
    "GuidedGradCAM": (lambda m: xt.GuidedGradCAM(m, layer="conv2"), {}),
    "IntegratedGradients": (lambda m: xt.IntegratedGradients(m, steps=4), {}),
    "CAM": (lambda m: xt.CAM(m, layer="relu", call=1), {}),
    "LIME": (lambda m: xt.LIME(m, samples=12, seed=0), {"segments": SEGMENTS}),
    "RISE": (lambda m: xt.RISE(m, masks=12, cell=4, seed=0), {}),
}


def run_threads(jobs: list[Callable[[], None]]) -> None:
    """Run the jobs in threads at once; re-raise the first error of any."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], None]) -> None:
        try:
            barrier.wait()
            job()
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def serial(model) -> dict[str, torch.Tensor]:
    return {name: build(model)(X, 1, **kw) for name, (build, kw) in RECIPES.items()}


def check_together(model, names: list[str], calls: int, *, shared: bool = False) -> None:
    """Threads ``names`` (one each), ``calls`` calls each, on ``model``: every result equals the
    serial one, bit for bit. ``shared``: one explainer instance per name, used by its thread and
    by the main thread's serial reference."""
    expect = serial(model)
    before = snapshot(model, X)
    built = {n: RECIPES[n][0](model) for n in names}
    got: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(names))}

    def job(i: int, name: str) -> Callable[[], None]:
        build, kw = RECIPES[name]

        def work() -> None:
            for _ in range(calls):
                explainer = built[name] if shared else build(model)
                got[i].append(explainer(X, 1, **kw))
        return work

    run_threads([job(i, n) for i, n in enumerate(names)])
    for i, name in enumerate(names):
        assert len(got[i]) == calls
        for result in got[i]:
            torch.testing.assert_close(result, expect[name], rtol=0, atol=0, msg=name)
    assert_no_trace(before, snapshot(model, X))


@pytest.mark.parametrize("pair", [
    ("GradCAM", "Gradient"), ("GradCAM", "GuidedBackprop"), ("GradCAM", "GradCAM"), ("ScoreCAM", "Gradient"),
    ("GuidedGradCAM", "IntegratedGradients"), ("CAM", "Gradient"), ("LIME", "GuidedBackprop"),
    ("RISE", "GuidedBackprop"), ("GuidedGradCAM", "GuidedBackprop"),
], ids="||".join)
def test_the_reported_pairs(model, pair):
    """The pairs the fault-injection run found interfering (issue 19, item 1)."""
    check_together(model, list(pair), calls=4)


def test_every_recipe_at_once(model):
    """N = 9 threads x M = 9 explainers (one thread each), 3 calls each."""
    check_together(model, list(RECIPES), calls=3)


def test_one_explainer_instance_shared_by_threads(model):
    """A service builds its explainers once and calls them from its worker threads."""
    check_together(model, ["GradCAM", "GradCAM", "GuidedGradCAM", "GuidedGradCAM", "GuidedBackprop"],
                   calls=3, shared=True)


def test_attached_mode_in_several_threads(model):
    """Each thread's ``with`` block (its own explainer) records its own forwards only, while other
    threads run the model and call explainers on it."""
    expect = serial(model)
    before = snapshot(model, X)
    got: list[torch.Tensor] = []

    def attached() -> None:
        for _ in range(3):
            with xt.GradCAM(model, layer="conv2") as cam:
                out = model(X)
                got.append(cam.from_output(out, 1).attributions)

    def noise() -> None:
        for _ in range(3):
            model(X.flip(-1))
            xt.GuidedGradCAM(model, layer="conv2")(X.flip(-2), 0)

    run_threads([attached, attached, noise])
    assert len(got) == 6
    for result in got:
        torch.testing.assert_close(result, expect["GradCAM"], rtol=0, atol=0)
    assert_no_trace(before, snapshot(model, X))


def test_one_instance_in_with_blocks_of_several_threads(model):
    """Thread A opens ``with cam``, thread B opens ``with cam`` on the same instance, A closes its
    block, then B explains its forward: B's block is still open (the explainer keeps a stack of
    ``with`` blocks per thread; one stack for all let A's exit close B's block)."""
    cam = xt.GradCAM(model, layer="conv2")
    expect = cam(X, 1)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with cam:
            a_in.set()
            b_in.wait()
        a_out.set()

    def b() -> None:
        a_in.wait()
        with cam:
            b_in.set()
            a_out.wait()
            out = model(X)
            torch.testing.assert_close(cam.from_output(out, 1).attributions, expect, rtol=0, atol=0)

    run_threads([a, b])


def test_the_function_mode_stack_is_per_thread():
    """PyTorch keeps TorchFunctionMode stacks per thread: a mode entered here is not on another
    thread's stack, and sees none of its calls (what the rectifier rule relies on)."""
    from xai_torch.rules import GUIDED, RectifierMode

    seen: dict[str, int] = {}
    inside, done = threading.Event(), threading.Event()

    def other() -> None:
        inside.wait()
        seen["stack"] = torch._C._len_torch_function_stack()
        torch.relu(torch.ones(3))
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with RectifierMode(GUIDED) as mode:
        assert torch._C._len_torch_function_stack() == 1
        inside.set()
        done.wait()
    t.join()
    assert seen["stack"] == 0 and mode.calls == 0


class ServedElsewhere(nn.Module):
    """SmallNet whose forward on a wrong input first waits for another thread's forward of the
    same layers on a right one (a server busy with other requests), then fails."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = SmallNet()

    def forward(self, x):
        if x.shape[1] != 3:
            t = threading.Thread(target=lambda: self.net(X))
            t.start()
            t.join()
        return self.net(x)


def test_the_input_probe_sees_only_its_thread():
    """The runner's input probe (which layer failed on a wrong input) hooks every leaf: another
    thread's forward finishing those layers made it give up, and the error came back raw."""
    model = ServedElsewhere().eval()
    before = snapshot(model)
    with pytest.raises(xt.XaiError, match="takes 3 channels but x has 4"):
        xt.Gradient(model)(torch.randn(2, 4, 12, 12), 1)
    assert_no_trace(before, snapshot(model))
