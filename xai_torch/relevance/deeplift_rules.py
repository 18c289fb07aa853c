"""DeepLIFT's Rescale rule applied per *call*, by a scoped :class:`~torch.overrides.TorchFunctionMode`.

The model runs once on the concatenated batch ``[x; b]`` (``2n`` rows: the images, then their
baselines). Every intercepted call of an elementwise nonlinearity ``y = f(z)`` sees both halves at
once, so it pairs ``z_x = z[:n]`` with ``z_b = z[n:]`` whatever module, reused module or functional
form made the call, and runs the original function inside a custom autograd Function whose
backward multiplies by the Rescale multiplier (Shrikumar et al. 2017)::

    m = (f(z_x) - f(z_b)) / (z_x - z_b)        (f'(z_x) where |z_x - z_b| < eps, as Captum)

the same ``m`` for both halves. Linear operations (convolutions, linear layers, BatchNorm in eval
mode, additions, average pooling, interpolation...) keep their plain gradient, which is their exact
multiplier. Max pooling uses Captum's rule (:class:`_MaxPool`): the output difference
``max(y_x, y_b) - y_b`` is routed to the image's maxima, ``y_x - max(y_x, y_b)`` to the baseline's,
and both are divided by the input difference, so the pooled contributions sum to ``y_x - y_b``.

Non-elementwise nonlinear operations with no rule (softmax, normalisation layers, attention,
products of two input-dependent tensors such as squeeze-excitation gates) keep their gradient and
are counted by name, so the explainer can warn; a call whose tensor does not have the ``2n`` rows
(a batch that is not first) is counted as ``"unpaired ..."`` the same way.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

__all__ = ["RescaleMode"]

_T = torch.Tensor
_NN: Any = torch._C._nn

#: elementwise functions -> (their name, position of the ``inplace`` argument, in place by default)
_ELEMENTWISE: dict[Any, tuple[str, int, bool]] = {}


def _add(name: str, fns: list[Any], pos: int = -1, inplace: bool = False) -> None:
    for fn in fns:
        if fn is not None:
            _ELEMENTWISE.setdefault(fn, (name, pos, inplace))


def _get(obj: Any, name: str) -> Any:
    return getattr(obj, name, None)


_add("relu", [F.relu, torch.relu, _T.relu], 1)
_add("relu", [torch.relu_, _T.relu_], -1, True)
_add("relu6", [F.relu6, _get(_NN, "relu6")], 1)
_add("relu6", [_get(_NN, "relu6_")], -1, True)
_add("hardtanh", [F.hardtanh, _get(_NN, "hardtanh")], 3)
_add("hardtanh", [_get(_NN, "hardtanh_")], -1, True)
_add("threshold", [F.threshold, torch.threshold], 3)
_add("threshold", [torch.threshold_], -1, True)
_add("sigmoid", [torch.sigmoid, _T.sigmoid, F.sigmoid])
_add("sigmoid", [torch.sigmoid_, _T.sigmoid_], -1, True)
_add("tanh", [torch.tanh, _T.tanh, F.tanh])
_add("tanh", [torch.tanh_, _T.tanh_], -1, True)
_add("gelu", [F.gelu])
_add("silu", [F.silu], 1)
_add("mish", [F.mish], 1)
_add("hardswish", [F.hardswish], 1)
_add("hardsigmoid", [F.hardsigmoid], 1)
_add("elu", [F.elu], 2)
_add("elu", [_get(_NN, "elu_")], -1, True)
_add("celu", [F.celu], 2)
_add("celu", [_get(torch, "celu_")], -1, True)
_add("selu", [F.selu], 1)
_add("selu", [_get(torch, "selu_")], -1, True)
_add("leaky_relu", [F.leaky_relu], 2)
_add("leaky_relu", [_get(_NN, "leaky_relu_")], -1, True)
_add("prelu", [F.prelu])
_add("softplus", [F.softplus])
_add("logsigmoid", [F.logsigmoid])
_add("softsign", [F.softsign])
_add("tanhshrink", [F.tanhshrink])
_add("hardshrink", [F.hardshrink])
_add("softshrink", [F.softshrink])

#: max pooling: Captum's maxpool rule
_MAXPOOL: dict[Any, str] = {fn: name for name in ("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d",
                                                  "adaptive_max_pool2d", "adaptive_max_pool3d")
                            if (fn := getattr(F, name, None)) is not None}

#: nonlinear operations with no rule (the gradient is used there): warned by name
_UNRULED: dict[Any, str] = {fn: name for name in ("softmax", "log_softmax", "softmin", "layer_norm", "group_norm",
                                                  "instance_norm", "local_response_norm", "normalize", "glu",
                                                  "scaled_dot_product_attention")
                            if (fn := getattr(F, name, None)) is not None}
_UNRULED.update({torch.softmax: "softmax", _T.softmax: "softmax", torch.log_softmax: "log_softmax",
                 _T.log_softmax: "log_softmax"})
#: products and quotients: nonlinear when both operands depend on the input
_PRODUCTS: dict[Any, str] = {fn: name for name, fns in (
    ("product", [torch.mul, _T.mul, _T.mul_, _T.__mul__, _T.__rmul__, _T.__imul__]),
    ("quotient", [torch.div, _T.div, _T.div_, _T.__truediv__, _T.__rtruediv__, _T.__itruediv__]),
    ("matmul", [torch.matmul, _T.matmul, _T.__matmul__, _T.__rmatmul__, torch.bmm, _T.bmm]),
    ("einsum", [torch.einsum]),
) for fn in fns}


def _input_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The call's input tensor and its other arguments."""
    if args:
        return args[0], args[1:], kwargs
    rest = dict(kwargs)
    return rest.pop("input", None), (), rest


def _has_small(dz: torch.Tensor, eps: float) -> bool:
    """Whether some ``|dz| < eps``."""
    return dz.numel() > 0 and float(dz.abs().amin()) < eps


def _rescale(dz: torch.Tensor, dy: torch.Tensor, deriv: Callable[[], torch.Tensor], eps: float,
             small: Optional[bool] = None) -> torch.Tensor:
    """``dy / dz``, ``deriv()`` where ``|dz| < eps`` (computed only when there is such an
    element; ``small`` says whether there is, when known). ``dy`` and ``dz`` are overwritten."""
    m = dy.div_(dz)
    dz = dz.abs_()
    if (dz.numel() > 0 and float(dz.amin()) < eps) if small is None else small:
        m = torch.where(dz < eps, deriv().to(m.dtype), m)
    return m


class _Elementwise(torch.autograd.Function):
    """Runs the original call on ``[z_x; z_b]``; its backward is ``grad * m`` for both halves."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, call: Callable[[], torch.Tensor],
                deriv: Callable[[torch.Tensor], torch.Tensor], n: int, inplace: bool, eps: float) -> torch.Tensor:
        dz = z[:n] - z[n:]
        # an in-place call overwrites z_x: then its gradient is taken first, where it is needed
        zx = z[:n]
        if inplace and _has_small(dz, eps):
            zx = deriv(zx)
            deriv = lambda d: d  # noqa: E731
        y = call()
        if inplace:
            ctx.mark_dirty(z)
        m = _rescale(dz, y[:n] - y[n:], lambda: deriv(zx), eps)
        ctx.save_for_backward(m)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None, None, None, None]:
        (m,) = ctx.saved_tensors
        return (grad.reshape(2, *m.shape) * m).reshape(grad.shape), None, None, None, None, None


class _MaxPool(torch.autograd.Function):
    """Captum's maxpool rule on ``[z_x; z_b]`` (a documented equivalent: the unpooling is the
    pooling's own vector-Jacobian product, so every max pooling form is covered). The pooling
    runs once, in a graph of its own whose backward does the unpooling."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, call: Callable[[torch.Tensor], torch.Tensor], n: int,
                eps: float) -> torch.Tensor:
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            out = call(leaf)
        y = out.detach()
        top = torch.maximum(y[:n], y[n:])
        # the image's maxima take max(y_x, y_b) - y_b, the baseline's y_x - max(y_x, y_b)
        ctx.graph, ctx.shares, ctx.dz, ctx.eps = (leaf, out), (top - y[n:], y[:n] - top), z[:n] - z[n:], eps
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], None, None, None]:
        (leaf, out), (up, down), dz = ctx.graph, ctx.shares, ctx.dz
        n = dz.shape[0]
        gx = grad[:n]
        small = _has_small(dz, ctx.eps)
        with torch.enable_grad():
            (routed,) = torch.autograd.grad(out, leaf, torch.cat([gx * up, gx * down]), retain_graph=small)
            plain = lambda: torch.autograd.grad(out, leaf, torch.cat([gx, torch.zeros_like(gx)]))[0][:n]  # noqa: E731
            gin = _rescale(dz, routed[:n] + routed[n:], plain, ctx.eps, small)
        ctx.graph = ctx.shares = ctx.dz = None
        return torch.cat([gin, torch.zeros_like(gin)]), None, None, None


def _depends(t: Any, rows: int) -> bool:
    """Whether ``t`` looks like an input-dependent activation of the ``2n``-row batch."""
    return (isinstance(t, torch.Tensor) and t.requires_grad and not isinstance(t, nn.Parameter) and t.ndim >= 1
            and t.shape[0] == rows)


class RescaleMode(TorchFunctionMode):
    """Applies the Rescale rule (and the maxpool rule) to the calls of one forward of ``2n`` rows.

    Args:
        n: images in the first half of the batch (their baselines are the second half).
        eps: below this ``|z_x - z_b|`` the multiplier is the gradient at ``z_x`` (Captum's 1e-10).

    Attributes:
        calls: ``Counter`` of the calls the rule was applied to, by function (``{"relu": 17}``).
        unruled: ``Counter`` of nonlinear calls with no rule, by function (``{"softmax": 1}``).
    """

    def __init__(self, n: int, eps: float = 1e-10) -> None:
        super().__init__()
        self.n, self.eps = n, eps
        self.calls: Counter[str] = Counter()
        self.unruled: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: Optional[dict[str, Any]] = None) -> Any:
        kwargs = kwargs or {}
        try:
            spec = _ELEMENTWISE.get(func)
            pool = _MAXPOOL.get(func) if spec is None else None
            other = (_UNRULED.get(func) or _PRODUCTS.get(func)) if spec is None and pool is None else None
        except TypeError:  # unhashable callables
            return func(*args, **kwargs)
        if spec is not None:
            return self._elementwise(func, spec, args, kwargs)
        if pool is not None:
            return self._maxpool(func, pool, args, kwargs)
        if other is not None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if func in _UNRULED or sum(_depends(t, 2 * self.n) for t in tensors) >= 2:
                self.unruled[other] += 1
        return func(*args, **kwargs)

    def _paired(self, z: Any, name: str) -> bool:
        if isinstance(z, torch.Tensor) and z.ndim >= 1 and z.shape[0] == 2 * self.n and z.is_floating_point():
            return True
        if isinstance(z, torch.Tensor) and z.requires_grad:
            self.unruled[f"unpaired {name}"] += 1
        return False

    def _elementwise(self, func: Any, spec: tuple[str, int, bool], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
        name, pos, inplace = spec
        z, rest, rest_kw = _input_of(args, kwargs)
        if not self._paired(z, name) or any(_depends(t, 2 * self.n) for t in (*rest, *rest_kw.values())):
            return func(*args, **kwargs)
        if pos >= 0:
            inplace = bool(args[pos]) if len(args) > pos else bool(kwargs.get("inplace", inplace))

        def deriv(zx: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                leaf = zx.detach().requires_grad_(True)
                out = func(leaf.clone(), *rest, **rest_kw)  # a non-leaf copy: in-place forms work on it
                (d,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
            return d

        self.calls[name] += 1
        return _Elementwise.apply(z, lambda: func(*args, **kwargs), deriv, self.n, inplace, self.eps)

    def _maxpool(self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        z, rest, rest_kw = _input_of(args, kwargs)
        if rest_kw.get("return_indices") or (name.startswith("adaptive") and len(rest) > 1 and rest[1]) \
                or (not name.startswith("adaptive") and len(rest) > 5 and rest[5]):
            self.unruled[f"{name}(return_indices=True)"] += 1
            return func(*args, **kwargs)
        if not self._paired(z, name):
            return func(*args, **kwargs)
        self.calls[name] += 1
        return _MaxPool.apply(z, lambda t: func(t, *rest, **rest_kw), self.n, self.eps)
