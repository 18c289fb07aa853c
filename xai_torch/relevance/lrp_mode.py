"""Per-call interception for LRP: a :class:`~torch.overrides.TorchFunctionMode`, entered only
around the explainer's own forward pass, that runs every call of

* ``F.conv1d/2d/3d`` and ``F.linear`` (modules, reused modules, functional calls) inside an
  autograd Function whose backward is the call's LRP rule;
* ``F.batch_norm`` in eval mode whose input is the output of such a call: merged into that
  call's rule (``W * scale``, ``b * scale + shift``, as zennit's canonizers do on a copy;
  here per call, with no copy and no change to the model); its backward passes relevance
  unchanged. Any other BatchNorm call gets an epsilon rule on its affine map
  (``R_in = scale * x * R / stab(y)``, the composite's stabilizer);
* average pooling (``F.avg_pool1d/2d/3d``, ``F.adaptive_avg_pool1d/2d/3d``) and residual
  additions of two tensors of the same shape (``a + b``, ``a += b``, ``torch.add``,
  ``Tensor.add(_)``): zennit's ``Norm`` rule, relevance split in proportion to the summands;
* rectifiers (those of :mod:`xai_torch.rules`): relevance passes unchanged.

Everything else (max pooling, concatenation, reshapes, products, other activations) keeps
its gradient, as in zennit; activations with no rule are counted so the explainer can warn.
Relevance flows as the "gradient" (zennit's convention).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..rules import RectifierMode, RectifierRule
from .lrp_rules import LayerCall, Rule, norm_relevance

__all__ = ["LRPMode", "PASS"]

#: rectifiers pass relevance unchanged
PASS = RectifierRule("pass", lambda g, y, lo, hi: g)

_CONV = {F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d"}
_POOL = {f for f in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                     F.adaptive_avg_pool3d) if f is not None}
_ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}
_IADD = {torch.Tensor.add_, torch.Tensor.__iadd__}
_COPIES: set[Any] = {torch.clone, torch.Tensor.clone, torch.Tensor.contiguous}
_NONNEG_KEEPING = {f for f in (F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.flatten, torch.Tensor.flatten,
                               torch.Tensor.view, torch.Tensor.reshape, torch.reshape, F.dropout) if f is not None} \
    | _COPIES


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


class _Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, call: LayerCall, rule: Rule) -> torch.Tensor:
        z = call.forward(x, call.weight, call.bias)
        ctx.call, ctx.rule = call, rule
        # the output may be changed in place later (an in-place ReLU): keep a copy if the rule needs it
        ctx.z = z.detach().clone() if rule.needs_output else None
        ctx.save_for_backward(x)
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None]:
        (x,) = ctx.saved_tensors
        call: LayerCall = ctx.call
        z = None if ctx.z is None else call.output(ctx.z)
        return ctx.rule.relevance(call, x, z, r), None, None


class _Merged(torch.autograd.Function):
    """A BatchNorm merged into the layer before it: relevance passes unchanged."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        return run()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, None]:
        return r, None


class _Affine(torch.autograd.Function):
    """A BatchNorm not merged: epsilon rule on ``y = scale * x + shift`` per channel."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, run: Callable[[], torch.Tensor], scale: torch.Tensor,
                shift: torch.Tensor, eps: float) -> torch.Tensor:
        y = run()
        ctx.eps = eps
        ctx.save_for_backward(x, scale, shift)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        x, scale, shift = ctx.saved_tensors
        shape = [1, -1] + [1] * (x.ndim - 2)
        a = x * scale.reshape(shape)
        (out,) = norm_relevance([a], a + shift.reshape(shape), r, ctx.eps, lambda s: [s])
        return out, None, None, None, None


class _Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor], eps: float) -> torch.Tensor:
        y = run(x)
        ctx.run, ctx.eps = run, eps
        ctx.save_for_backward(x)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            y = ctx.run(xi)

            def vjp(s: torch.Tensor) -> list[torch.Tensor]:
                return list(torch.autograd.grad(y, xi, s))
            (out,) = norm_relevance([x], y.detach(), r, ctx.eps, vjp)
        return out, None, None


class _Add(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, run: Callable[[], torch.Tensor],
                inplace: bool, eps: float) -> torch.Tensor:
        ctx.eps = eps
        # ``a += b`` overwrites a: keep a copy of it; the others are saved (checked for later changes)
        ctx.a = a.detach().clone() if inplace else None
        y = run()
        if inplace:
            ctx.mark_dirty(a)
            ctx.save_for_backward(b)
        else:
            ctx.save_for_backward(a, b)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        a, b = (ctx.a, *ctx.saved_tensors) if ctx.a is not None else ctx.saved_tensors
        ra, rb = norm_relevance([a, b], a + b, r, ctx.eps, lambda s: [s, s])
        return ra, rb, None, None, None


class LRPMode(RectifierMode):
    """Applies LRP rules per call while active (see the module doc).

    Args:
        pick: ``(kind, weight, first) -> (rule, name)``: the rule for a convolution / linear
            call (``kind`` ``"conv2d"``, ``"linear"``...; ``first``: it is the first such call of
            the forward pass).
        bounds: the z-box bounds ``(low, high)`` for this forward pass, or None.
        stabilizer: of the ``Norm`` rule (pooling, additions) and the unmerged BatchNorm rule.

    Attributes:
        layers: the rules applied, one ``(name, rule)`` per convolution / linear call.
        merged: BatchNorm calls merged into the layer before them; ``affine``: the others.
    """

    def __init__(self, pick: Callable[[str, torch.Tensor, bool], tuple[Rule, str]],
                 bounds: Optional[tuple[torch.Tensor, torch.Tensor]] = None, stabilizer: float = 1e-6) -> None:
        super().__init__(PASS)
        self.stabilizer = stabilizer
        self.pick = pick
        self.bounds = bounds
        self.layers: list[tuple[str, Rule]] = []
        self.merged = 0
        self.affine = 0
        self._outputs: dict[int, tuple[torch.Tensor, LayerCall]] = {}
        self._nonneg: dict[int, tuple[torch.Tensor, int]] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: Optional[dict[str, Any]] = None) -> Any:
        kwargs = kwargs or {}
        if torch.is_grad_enabled():
            try:
                kind = "linear" if func is F.linear else _CONV.get(func)
                known = kind is not None or func is F.batch_norm or func in _POOL or func in _ADD or func in _IADD
            except TypeError:  # unhashable callables
                known = False
            if known:
                out = self._intercept(func, kind, args, kwargs)
                if out is not NotImplemented:
                    return out
        calls = self.calls
        out = super().__torch_function__(func, types, args, kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        src = _arg(args, kwargs, 0, "input")
        if self.calls != calls or (func in _NONNEG_KEEPING and self._is_nonneg(src)):
            # a rectifier's output (lower bound 0), or max pooling of one; until changed in place
            self._nonneg[id(out)] = (out, out._version)
        if func in _COPIES and isinstance(src, torch.Tensor):
            seen = self._outputs.get(id(src))
            if seen is not None and seen[0] is src:   # a layer's output, copied (a LayerTap's clone)
                self._outputs[id(out)] = (out, seen[1])
        return out

    def _is_nonneg(self, x: Any) -> bool:
        hit = self._nonneg.get(id(x))
        return hit is not None and hit[0] is x and hit[1] == x._version

    def _intercept(self, func: Any, kind: Optional[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = _arg(args, kwargs, 0, "input")
        if not isinstance(x, torch.Tensor):
            return NotImplemented
        if kind is not None:
            return self._layer(func, kind, x, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(func, x, args, kwargs)
        if func in _POOL:
            if not x.requires_grad:
                return NotImplemented
            rest = args[1:]
            return _Pool.apply(x, lambda t: func(t, *rest, **kwargs), self.stabilizer)
        other = _arg(args, kwargs, 1, "other")
        if not isinstance(other, torch.Tensor) or other.shape != x.shape or kwargs.get("alpha", 1) != 1 \
                or "out" in kwargs or len(args) > 2 or not (x.requires_grad or other.requires_grad):
            return NotImplemented
        return _Add.apply(x, other, lambda: func(*args, **kwargs), func in _IADD, self.stabilizer)

    def _layer(self, func: Any, kind: str, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        weight = _arg(args, kwargs, 1, "weight")
        if not isinstance(weight, torch.Tensor) or not x.requires_grad:
            return NotImplemented
        names = ("stride", "padding", "dilation", "groups") if kind != "linear" else ()
        params = {n: _arg(args, kwargs, 3 + i, n) for i, n in enumerate(names)
                  if _arg(args, kwargs, 3 + i, n) is not None}
        rule, name = self.pick(kind, weight, not self.layers)
        self.layers.append((name, rule))
        call = LayerCall(func, kind, weight, _arg(args, kwargs, 2, "bias"), params, bounds=self.bounds, where=name,
                         nonneg=self._is_nonneg(x))
        z: torch.Tensor = _Layer.apply(x, call, rule)
        self._outputs[id(z)] = (z, call)
        return z

    def _batch_norm(self, func: Any, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not x.requires_grad:
            return NotImplemented
        mean, var, weight, bias = (_arg(args, kwargs, i, n) for i, n in
                                   ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")))
        training, eps = bool(_arg(args, kwargs, 5, "training", False)), float(_arg(args, kwargs, 7, "eps", 1e-5))
        with torch.no_grad():
            if training or mean is None or var is None:
                dims = [d for d in range(x.ndim) if d != 1]
                mean, var = x.mean(dims), x.var(dims, unbiased=False)
            scale = (var + eps).rsqrt()
            scale = scale if weight is None else scale * weight
            shift = -mean * scale if bias is None else bias - mean * scale
            scale, shift = scale.detach(), shift.detach()
        seen = self._outputs.get(id(x))
        if not training and seen is not None and seen[0] is x and seen[1].scale is None \
                and (seen[1].kind != "linear" or x.ndim == 2):
            seen[1].scale, seen[1].shift = scale, shift
            self.merged += 1
            return _Merged.apply(x, lambda: func(*args, **kwargs))
        self.affine += 1
        return _Affine.apply(x, lambda: func(*args, **kwargs), scale, shift, self.stabilizer)
