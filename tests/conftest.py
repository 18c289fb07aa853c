"""Shared fixtures: small models, the packaged model, and the "no trace" snapshot."""
from __future__ import annotations

import functools
import math
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import xai_torch as xt


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``-n``), each worker gets its share of the cores as
    torch intra-op threads: two workers with two threads each on two cores only wait on each
    other. ``PYTEST_XDIST_WORKER_COUNT`` is set by xdist in every worker."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        # the processes a test starts (notebook kernels, torchrun ranks, Ray workers, the CLI)
        # get the same share instead of one thread per core each
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, str(share))


#: the test files that take longest (tens of seconds), run first: xdist hands out files in
#: collection order, so a long file started last would keep one worker busy after the others end
LONGEST_FIRST = ("test_notebooks.py", "test_path_ig.py", "test_path_adaptive.py", "test_dataset_ray.py",
                 "test_backprop.py", "test_distributed_loop.py", "test_contract.py", "test_cli_explain.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long files first (see ``LONGEST_FIRST``), every file's own order kept."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def calibrate(model: nn.Module, size: int, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers realistic running statistics, then switch to eval mode.

    Random-init torchvision models in eval mode have running mean 0 / var 1, which makes
    activations and gradients explode or vanish (1e-10 logits on mobilenet_v2).
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 3, size, size, generator=g))
    return model.eval()


# name -> (builder kwargs, input size, true rectifier calls per forward)
ARCHS = {
    "resnet18": ({}, 64, 17),
    "vgg11": ({}, 64, 10),
    "densenet121": ({}, 64, 121),
    "inception_v3": ({"aux_logits": False, "init_weights": True}, 80, 94),
    "mobilenet_v2": ({}, 64, 35),
}


@functools.cache
def _arch(name: str) -> nn.Module:
    kwargs, size, _ = ARCHS[name]
    torch.manual_seed(0)
    return calibrate(getattr(torchvision.models, name)(weights=None, **kwargs), size)


@pytest.fixture(params=list(ARCHS))
def arch(request):
    """(name, model in eval mode, input batch of 2, true rectifier call count)."""
    name = request.param
    _, size, calls = ARCHS[name]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return name, _arch(name), x, calls


def torchvision_model(name: str) -> nn.Module:
    return _arch(name)


@functools.cache
def _lite0():
    return xt.zoo.efficientnet_lite0()


@pytest.fixture(scope="session")
def lite0():
    return _lite0()


@pytest.fixture(scope="session")
def chelsea():
    return xt.zoo.preprocess(xt.zoo.image("chelsea"))


class SmallNet(nn.Module):
    """conv -> ReLU (reused, in-place) -> conv -> ReLU -> GAP -> FC; optional failure inside."""

    def __init__(self, classes: int = 5, channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)
        self.fail_with: BaseException | None = None

    def forward(self, x):
        x = self.relu(self.bn(self.conv1(x)))
        if self.fail_with is not None:
            raise self.fail_with
        x = self.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class Counting(nn.Module):
    """Wraps a model and records the batch size of every call (model-call counts), and the
    inputs themselves with ``keep_inputs=True``."""

    def __init__(self, model, keep_inputs: bool = False):
        super().__init__()
        self.model, self.sizes, self.inputs, self.keep_inputs = model, [], [], keep_inputs

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if self.keep_inputs:
            self.inputs.append(x.detach().clone())
        return self.model(x)


class Scaled(nn.Module):
    """SmallNet with its logits scaled up, so that softmax probabilities move visibly."""

    def __init__(self, channels: int = 3, scale: float = 10.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.scale = SmallNet(channels=channels), scale
        self.eval()

    def forward(self, x):
        return self.net(x) * self.scale


class Linear(nn.Module):
    """F(x) = W vec(x) + c in float64: gradients are constant, G x I sums are exact drops."""

    def __init__(self, shape=(3, 6, 6), classes: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        d = math.prod(shape)
        self.w = nn.Parameter(torch.randn(classes, d, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(classes, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.c


def lin_x(b: int = 2) -> torch.Tensor:
    """Inputs of :class:`Linear`: ``(b, 3, 6, 6)`` float64."""
    return torch.randn(b, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture
def small():
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture
def small_x():
    return torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))


# --------------------------------------------------------------------------------------------
# "No trace": everything DESIGN.md promises stays exactly as it was.
_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
    "_state_dict_hooks", "_load_state_dict_pre_hooks",
)
_GLOBAL_HOOKS = (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
    "_global_backward_pre_hooks", "_global_forward_hooks_always_called",
)


def snapshot(model: nn.Module, *tensors: torch.Tensor) -> dict:
    mod = torch.nn.modules.module
    return {
        "modules": [(n, id(m), type(m), dict(vars(m)).get("inplace")) for n, m in model.named_modules()],
        "hooks": {n: {d: dict(getattr(m, d, {})) for d in _HOOK_DICTS} for n, m in model.named_modules()},
        "global_hooks": {d: dict(getattr(mod, d, {})) for d in _GLOBAL_HOOKS},
        "training": {n: m.training for n, m in model.named_modules()},
        "params": {n: (id(p), p.requires_grad, p.detach().clone(), None if p.grad is None else p.grad.clone(),
                       dict(p._backward_hooks or {})) for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "tensors": [(id(t), t.requires_grad, t.detach().clone(), t._version, t.grad) for t in tensors],
        "mode_stack": torch._C._len_torch_function_stack(),
        "grad_enabled": torch.is_grad_enabled(),
    }


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


def assert_no_trace(before: dict, after: dict) -> None:
    for key in before:
        assert _same(before[key], after[key]), f"the model or input changed: {key}"


# --------------------------------------------------------------------------------------------
# Independent reference for the rectifier rules: reroute F.relu / F.relu6 / F.hardtanh /
# F.threshold (which nn.ReLU, nn.ReLU6 and the functional forms all go through) to functions
# whose gradient is rewritten with a tensor hook. No custom autograd.Function, no mode.
def _ref_rectifier(kind: str, z: torch.Tensor, lo: float, hi: float | None) -> torch.Tensor:
    value = z.clamp(lo, hi).detach()
    if not z.requires_grad:
        return value
    if kind == "guided":
        mask = (z > lo) if hi is None else ((z > lo) & (z < hi))
        lin = z * mask
    else:  # deconvnet: identity in the backward, then max(., 0)
        lin = z
    y = value + (lin - lin.detach())
    y.register_hook(lambda g: g.clamp(min=0))
    return y


class reference_rule:
    """Context manager: inside, rectifier calls of F.* follow the reference rule ``kind``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.saved = {}

    def __enter__(self):
        k = self.kind

        def relu(input, inplace=False):
            return _ref_rectifier(k, input, 0.0, None)

        def relu6(input, inplace=False):
            return _ref_rectifier(k, input, 0.0, 6.0)

        def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
            if min_val != 0.0:  # not a rectifier: plain hardtanh
                return self.saved["hardtanh"](input, min_val, max_val)
            return _ref_rectifier(k, input, 0.0, max_val)

        def threshold(input, threshold, value, inplace=False):
            assert threshold == 0 and value == 0
            return _ref_rectifier(k, input, 0.0, None)

        for name, fn in (("relu", relu), ("relu6", relu6), ("hardtanh", hardtanh), ("threshold", threshold)):
            self.saved[name] = getattr(F, name)
            setattr(F, name, fn)
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(F, name, fn)
        return False


def reference_gradient(model, x, target, kind=None):
    """d score / dx with the reference rule ``kind`` (None = plain gradient)."""
    xg = x.detach().clone().requires_grad_(True)
    if kind is None:
        out = model(xg)
    else:
        with reference_rule(kind):
            out = model(xg)
    score = out.gather(1, torch.as_tensor(target).reshape(-1, 1)).sum()
    (g,) = torch.autograd.grad(score, xg)
    return g


def count_rectifier_ops(model, x) -> int:
    """Independent count of rectifier calls, at the dispatcher level (aten ops)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    names = {"relu", "relu_", "hardtanh", "hardtanh_", "relu6", "relu6_", "threshold", "threshold_"}

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func._schema.name.split("::")[-1]
            if name in names:
                if name.startswith("hardtanh"):
                    lo = args[1] if len(args) > 1 else (kwargs or {}).get("min_val", -1.0)
                    if lo == 0:
                        Count.n += 1
                else:
                    Count.n += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        model(x)
    return Count.n


def close(a, b, rtol=1e-4):
    """``a`` equals ``b`` to ``rtol`` relative to ``b``'s largest value (``b`` not all zero)."""
    scale = b.abs().max()
    assert scale > 0
    err = (a - b).abs().max() / scale
    assert err <= rtol, f"relative error {float(err):.2e}"


@pytest.fixture
def gapnet():
    """The GAP -> FC net of the CAM tests (tests/cam_helpers.py), float64, eval mode."""
    from cam_helpers import make_gapnet

    return make_gapnet()


@pytest.fixture
def gap_x():
    from cam_helpers import gap_input

    return gap_input()


class SideNet(nn.Module):
    """``net`` plus a layer ``unused`` that runs on x but that no score depends on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.unused = net, nn.Conv2d(3, 2, 1)

    def forward(self, x):
        self.unused(x)
        return self.net(x)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module of tiny tensors: on busy cores the threads only wait
    on each other (20x slower). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
