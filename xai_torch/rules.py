"""Rectifier gradient rules (guided backpropagation, DeconvNet) and their scoped interception.

The rule applies to every rectifier *call* in the forward pass, whatever its form:
``nn.ReLU`` / ``nn.ReLU6`` modules (in-place or not, reused instances called many times), the
functional forms ``F.relu``, ``F.relu_``, ``torch.relu(_)``, ``Tensor.relu(_)``, ``F.relu6``,
``F.hardtanh(x, 0, max)`` (how ``nn.ReLU6`` and torchvision's MobileNet call it) and
``F.threshold(x, 0, 0)``. A :class:`torch.overrides.TorchFunctionMode`, entered only around
the explainer's own forward pass, sees these calls without touching a single module: the
model's objects, hooks and state never change.

Each intercepted call computes the original function (same values, same in-place
behaviour) inside a custom autograd Function whose backward is the rule:

* guided backpropagation (Springenberg et al. 2015): ``R_in = 1[lo < z < hi] * max(R_out, 0)``
* DeconvNet (Zeiler & Fergus 2014): ``R_in = max(R_out, 0)``

``clamp``/``clamp_min`` are not treated as rectifiers (they clamp inputs, boxes and
probabilities far more often than they act as activations). Leaky, smooth and gated
activations (GELU, SiLU, ELU, LeakyReLU, ...) have no rule: their calls are counted so the
explainer can warn naming them.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from .errors import XaiError


@dataclass(frozen=True)
class RectifierRule:
    """A backward rule for rectifiers: ``backward(grad_out, y, lo, hi) -> grad_in``.

    ``y`` is the rectifier's output: ``lo < y < hi`` exactly where ``lo < z < hi``, so the
    forward mask needs no extra storage (PyTorch's own ReLU backward saves the same tensor).
    """

    name: str
    backward: Callable[[torch.Tensor, torch.Tensor, float, Optional[float]], torch.Tensor]


def _masked(grad: torch.Tensor, y: torch.Tensor, lo: float, hi: Optional[float]) -> torch.Tensor:
    """``grad * 1[lo < y < hi]`` with PyTorch's fused rectifier backward kernels."""
    if hi is None:
        out: torch.Tensor = torch.ops.aten.threshold_backward(grad, y, lo)
    else:
        out = torch.ops.aten.hardtanh_backward(grad, y, lo, hi)
    return out


PLAIN = RectifierRule("plain", _masked)  # the true derivative
GUIDED = RectifierRule("guided", lambda g, y, lo, hi: _masked(g.clamp_min(0), y, lo, hi))
DECONV = RectifierRule("deconvnet", lambda g, y, lo, hi: g.clamp_min(0))


class _Rectify(torch.autograd.Function):
    """Runs the original rectifier call; its backward applies the rule that ``mode.rule``
    names *when the backward runs*, so one forward can serve a plain and a guided pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: Callable[[], torch.Tensor], lo: float, hi: Optional[float],
                inplace: bool, mode: RectifierMode) -> torch.Tensor:
        y = call()
        if inplace:
            ctx.mark_dirty(x)
        ctx.mode, ctx.lo, ctx.hi = mode, lo, hi
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None, None, None, None]:
        (y,) = ctx.saved_tensors
        return ctx.mode.rule.backward(grad, y, ctx.lo, ctx.hi), None, None, None, None, None


#: a call's parsed rectifier: (input, lo, hi, inplace), or None when the call is not one
Spec = Optional[tuple[Any, float, Optional[float], bool]]
Parser = Callable[[tuple[Any, ...], dict[str, Any]], Spec]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


# Each parser returns (input, lo, hi, inplace) for a rectifier call, or None when the call is
# not a rectifier (e.g. hardtanh(-1, 1)).
def _relu_parser(inplace_default: bool) -> Parser:
    return lambda args, kw: (_arg(args, kw, 0, "input", None), 0.0, None,
                             bool(_arg(args, kw, 1, "inplace", inplace_default)))


def _relu6_parser(inplace_default: bool) -> Parser:
    return lambda args, kw: (_arg(args, kw, 0, "input", None), 0.0, 6.0,
                             bool(_arg(args, kw, 1, "inplace", inplace_default)))


def _hardtanh_parser(inplace_default: bool) -> Parser:
    def parse(args: tuple[Any, ...], kw: dict[str, Any]) -> Spec:
        lo = float(_arg(args, kw, 1, "min_val", -1.0))
        hi = float(_arg(args, kw, 2, "max_val", 1.0))
        if lo != 0.0:
            return None
        return _arg(args, kw, 0, "input", None), lo, hi, bool(_arg(args, kw, 3, "inplace", inplace_default))
    return parse


def _threshold_parser(inplace_default: bool) -> Parser:
    def parse(args: tuple[Any, ...], kw: dict[str, Any]) -> Spec:
        thr = float(_arg(args, kw, 1, "threshold", 1.0))
        val = float(_arg(args, kw, 2, "value", 1.0))
        if thr != 0.0 or val != 0.0:
            return None
        return _arg(args, kw, 0, "input", None), 0.0, None, bool(_arg(args, kw, 3, "inplace", inplace_default))
    return parse


def _table(pairs: list[tuple[str, Parser]]) -> dict[Any, Parser]:
    table: dict[Any, Parser] = {}
    for name, parser in pairs:
        obj = _resolve(name)
        if obj is not None:
            table[obj] = parser
    return table


def _resolve(dotted: str) -> Any:
    root, *parts = dotted.split(".")
    obj: Any = {"F": F, "torch": torch}[root]
    for p in parts:
        obj = getattr(obj, p, None)
        if obj is None:
            return None
    return obj


_RECTIFIERS = _table([
    ("F.relu", _relu_parser(False)),
    ("torch.relu", _relu_parser(False)),
    ("torch.relu_", _relu_parser(True)),          # also F.relu_
    ("torch.Tensor.relu", _relu_parser(False)),
    ("torch.Tensor.relu_", _relu_parser(True)),
    ("F.relu6", _relu6_parser(False)),
    ("torch._C._nn.relu6", _relu6_parser(False)),
    ("torch._C._nn.relu6_", _relu6_parser(True)),
    ("F.hardtanh", _hardtanh_parser(False)),
    ("torch._C._nn.hardtanh", _hardtanh_parser(False)),
    ("torch._C._nn.hardtanh_", _hardtanh_parser(True)),   # also F.hardtanh_
    ("F.threshold", _threshold_parser(False)),
    ("torch.threshold", _threshold_parser(False)),
    ("torch.threshold_", _threshold_parser(True)),  # also F.threshold_
])

# Activations with no rectifier rule: their calls are counted to warn the user.
_UNRULED: dict[Any, str] = {}
for _name in ("gelu", "silu", "elu", "elu_", "selu", "selu_", "celu", "celu_", "leaky_relu",
              "leaky_relu_", "rrelu", "rrelu_", "prelu", "mish", "hardswish", "softplus", "glu"):
    _fn = getattr(F, _name, None)
    if _fn is not None:
        _UNRULED[_fn] = _name.rstrip("_")


class RectifierMode(TorchFunctionMode):
    """Intercepts rectifier calls while active and applies ``rule`` to their gradients.

    Attributes:
        rule: the rule backward passes through the recorded calls apply (may be changed
            between two backward passes over the same graph).
        calls: number of rectifier calls intercepted.
        unruled: ``Counter`` of activation calls that have no rule (``{"gelu": 12}``).
    """

    def __init__(self, rule: RectifierRule) -> None:
        super().__init__()
        self.rule = rule
        self.calls = 0
        self.unruled: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: Optional[dict[str, Any]] = None) -> Any:
        kwargs = kwargs or {}
        try:
            parser = _RECTIFIERS.get(func)
            unruled = None if parser is not None else _UNRULED.get(func)
        except TypeError:  # unhashable callables
            parser = unruled = None
        if parser is not None:
            spec = parser(args, kwargs)
            if spec is not None and isinstance(spec[0], torch.Tensor):
                x, lo, hi, inplace = spec
                self.calls += 1
                return _Rectify.apply(x, lambda: func(*args, **kwargs), lo, hi, inplace, self)
        elif unruled is not None:
            self.unruled[unruled] += 1
        return func(*args, **kwargs)


def check_interceptable(model: Any,
                        consequence: str = "guided backpropagation / DeconvNet would silently return the plain "
                                           "gradient") -> None:
    """Raise if the rectifier calls of ``model`` cannot be seen from Python; ``consequence`` says
    what the explainer would do then (in the message).

    TorchScript and ``torch.compile`` run their graphs outside the Python dispatcher, so a
    rule would silently not apply; ``nn.DataParallel`` runs replicas in other threads.
    """
    if not isinstance(model, nn.Module):
        return
    for name, module in model.named_modules():
        where = f"submodule {name!r}" if name else "the model"
        if isinstance(module, torch.jit.ScriptModule):
            how = "torch.jit.trace" if "Traced" in type(module).__name__ else "torch.jit.script"
            raise XaiError(
                f"{where} is a TorchScript module (made with {how}): its rectifier calls cannot be "
                f"intercepted, so {consequence}. Explain the eager (untraced, unscripted) model instead."
            )
        if hasattr(module, "_orig_mod") and type(module).__name__ == "OptimizedModule":
            raise XaiError(
                f"{where} is compiled with torch.compile: its rectifier calls cannot be "
                "intercepted. Explain the eager module instead (compiled._orig_mod)."
            )
        if isinstance(module, nn.DataParallel):
            raise XaiError(
                f"{where} is nn.DataParallel, which runs replicas in other threads where the "
                "rule cannot reach. Explain model.module instead."
            )


def wrapper_error(err: BaseException, who: str) -> Optional[XaiError]:
    """The :class:`XaiError` that says what to do when ``err`` comes from a wrapper inside the
    model that gradients cannot pass, else None.

    ``torch.utils.checkpoint(..., use_reentrant=True)`` supports ``.backward()`` only, never
    ``torch.autograd.grad`` (which every gradient method uses, so that no ``.grad`` changes):
    PyTorch refuses with a message that names checkpointing and ``.grad()``. Nothing else is
    recognised, so an unrelated error is never relabelled.
    """
    text = str(err).lower()
    if isinstance(err, RuntimeError) and "checkpoint" in text and ".grad()" in text:
        return XaiError(
            f"{who}: the model uses torch.utils.checkpoint(..., use_reentrant=True), which supports "
            "loss.backward() only, not the torch.autograd.grad that explainers use (so that no .grad of "
            "the model changes). Pass use_reentrant=False to checkpoint (same memory saving, same "
            "results), or explain the model without checkpointing."
        )
    return None


@contextlib.contextmanager
def wrapper_errors(who: str) -> Iterator[None]:
    """Re-raise the errors :func:`wrapper_error` recognises as that :class:`XaiError` (the
    original chained); everything else, and ``KeyboardInterrupt``, passes unchanged."""
    try:
        yield
    except RuntimeError as err:
        translated = wrapper_error(err, who)
        if translated is None:
            raise
        raise translated from err
