"""LRP rules for linear layers (``Conv1d/2d/3d``, ``Linear``), as small classes.

A rule maps the relevance ``R`` of a layer's output ``z = f(x; W, b)`` to the relevance of
its input ``x``. Every rule is linear in ``R``; each works on one *call* of the layer
(:class:`LayerCall`: the original function, its input, weight, bias and, for a layer whose
output feeds an eval-mode BatchNorm, that BatchNorm merged into ``W`` and ``b``).

Notation: ``x+ = max(x, 0)``, ``x- = min(x, 0)``, the same for ``W`` and ``b``;
``W^T s`` is the layer's input gradient for output gradient ``s`` (a transposed
convolution); ``stab(d) = d + eps * sign(d)`` with ``sign(0) = 1`` (zennit's stabilizer).

* :class:`Epsilon` (LRP-epsilon, Bach et al. 2015; ``epsilon=0``: LRP-0):
  ``R_in = x * W^T (R / stab(z))``
* :class:`AlphaBeta` (``alpha - beta = 1``; ``alpha=1, beta=0`` is z+):
  ``R_in = alpha * [x+ W+^T + x- W-^T](R / stab(z_pos)) - beta * [x+ W-^T + x- W+^T](R / stab(z_neg))``
  with ``z_pos = W+ x+ + W- x- + b+``, ``z_neg = W- x+ + W+ x- + b-``
* :class:`Gamma` (Montavon et al. 2019, zennit's generalised form for signed inputs):
  positive outputs use ``W + gamma W+`` on ``x+`` and ``W + gamma W-`` on ``x-``, negative
  outputs the other pairing.
* :class:`Flat`: ``R_in = 1^T (R / stab(1^T 1))`` (relevance spread over the receptive field)
* :class:`WSquare`: ``R_in = (W^2)^T (R / stab(W^2 1 + b^2))``
* :class:`ZBox` (``low <= x <= high``): ``R_in = x W^T s - low W+^T s - high W-^T s``,
  ``s = R / stab(W x + b - W+ low - b+ - W- high - b-)``

These are zennit's definitions (``zennit.rules``), computed from the call's own arguments.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..errors import XaiError

__all__ = ["AlphaBeta", "Epsilon", "Flat", "Gamma", "LayerCall", "Rule", "WSquare", "ZBox", "ZPlus", "as_rule",
           "norm_relevance", "stabilize"]


def stabilize(d: torch.Tensor, eps: float) -> torch.Tensor:
    """``d + eps * sign(d)`` with ``sign(0) = 1``."""
    return d + torch.where(d >= 0, eps, -eps).to(d.dtype)


def _divide(r: torch.Tensor, d: torch.Tensor, eps: float) -> torch.Tensor:
    """``r / stab(d)``; with ``eps == 0`` a zero denominator gives 0 (LRP-0's convention)."""
    if eps == 0:
        return torch.where(d == 0, torch.zeros_like(r), r / torch.where(d == 0, torch.ones_like(d), d))
    return r / stabilize(d, eps)


def norm_relevance(inputs: list[torch.Tensor], out: torch.Tensor, r: torch.Tensor, eps: float,
                   vjp: Callable[[torch.Tensor], list[torch.Tensor]]) -> list[torch.Tensor]:
    """zennit's ``Norm`` rule for a parameter-free linear map (sum, average pooling):
    ``R_i = x_i * d out / d x_i^T (R / stab(out))``."""
    s = _divide(r, out, eps)
    return [x * g for x, g in zip(inputs, vjp(s))]


@dataclass
class LayerCall:
    """One call ``z = fn(x, weight, bias, **params)`` of a convolution or linear layer.

    ``fn`` is the original functional (``F.conv2d``, ``F.linear``...); ``params`` its other
    arguments. ``scale``/``shift`` (set when an eval-mode BatchNorm consumes ``z``) merge
    that BatchNorm: the rule then sees ``W * scale``, ``b * scale + shift`` and the
    BatchNorm's output. ``bounds`` are the z-box bounds of this forward pass.
    """

    fn: Callable[..., torch.Tensor]
    kind: str                       # "linear", "conv1d", "conv2d", "conv3d"
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    params: dict[str, Any] = field(default_factory=dict)
    scale: Optional[torch.Tensor] = None
    shift: Optional[torch.Tensor] = None
    bounds: Optional[tuple[torch.Tensor, torch.Tensor]] = None
    where: str = ""                 # the layer's name, for messages
    nonneg: bool = False            # the input is known to be >= 0 (a rectifier's output)

    def _channels(self, v: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
        shape = [1] * ndim
        shape[dim] = -1
        return v.reshape(shape)

    def merged(self) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(W, b)`` with the consuming BatchNorm merged in (when there is one)."""
        w, b = self.weight.detach(), None if self.bias is None else self.bias.detach()
        if self.scale is None or self.shift is None:
            return w, b
        w = w * self._channels(self.scale, w.ndim, 0)
        b = self.shift if b is None else b * self.scale + self.shift
        return w, b

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The merged output from the layer's own output ``z``."""
        if self.scale is None or self.shift is None:
            return z
        return z * self._channels(self.scale, z.ndim, 1) + self._channels(self.shift, z.ndim, 1)

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return self.fn(x, w, b, **self.params)

    def vjp(self, x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``W^T s``: the input gradient of ``fn(., w)`` at output gradient ``s``, shaped like ``x``."""
        if self.kind == "linear":
            return s @ w
        padding = self.params.get("padding", 0)
        if not isinstance(padding, str):
            n = int(self.kind[-2])

            def tup(v: Any) -> list[int]:
                return [int(i) for i in v] if isinstance(v, (tuple, list)) else [int(v)] * n
            out: torch.Tensor = torch.ops.aten.convolution_backward(
                s, x, w, None, tup(self.params.get("stride", 1)), tup(padding), tup(self.params.get("dilation", 1)),
                False, [0] * n, int(self.params.get("groups", 1)), [True, False, False])[0]
            return out
        with torch.enable_grad():  # string padding ("same"): let autograd transpose it
            xi = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.forward(xi, w, None), xi, s)
        return g


class Rule:
    """Base of the layer rules: :meth:`relevance` maps ``R`` of the output to ``R`` of the input.

    Attributes:
        name: the rule's name in messages and ``repr``.
        conserving: whether the rule passes on all relevance (up to the bias and the stabilizer).
        needs_output: whether :meth:`relevance` uses the layer's output ``z``.
    """

    name: str = "rule"
    conserving: bool = True
    needs_output: bool = False

    def relevance(self, call: LayerCall, x: torch.Tensor, z: Optional[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted((k, repr(v)) for k, v in vars(self).items()))))


class Epsilon(Rule):
    """LRP-epsilon: ``R_in = x * W^T (R / stab(z))``; ``epsilon=0`` is LRP-0 (a zero ``z``
    passes no relevance). Absorbs relevance for ``epsilon`` above a stabilizer (> 1e-6)."""

    name = "epsilon"
    needs_output = True

    def __init__(self, epsilon: float = 1e-6) -> None:
        if not float(epsilon) >= 0:
            raise XaiError(f"epsilon must be >= 0; got {epsilon!r}.")
        self.epsilon = float(epsilon)

    @property
    def conserving(self) -> bool:  # type: ignore[override]
        return self.epsilon <= 1e-6

    def relevance(self, call: LayerCall, x: torch.Tensor, z: Optional[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
        assert z is not None
        w, _ = call.merged()
        return x * call.vjp(x, w, _divide(r, z, self.epsilon))


def _pos(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.clamp(min=0)


def _neg(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.clamp(max=0)


def _signed(x: torch.Tensor, nonneg: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(x+, x-)``; ``x-`` is None when ``x >= 0`` everywhere (``nonneg``: known to be, the
    output of a rectifier), which saves the convolutions of that half."""
    if nonneg or bool(x.min() >= 0):
        return x, None
    return x.clamp(min=0), x.clamp(max=0)


class AlphaBeta(Rule):
    """LRP-alpha-beta (Bach et al. 2015), ``alpha - beta = 1``: ``alpha`` times the relevance
    of the positive contributions minus ``beta`` times that of the negative ones."""

    name = "alpha_beta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1) > 1e-12:
            raise XaiError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1; got alpha={alpha}, beta={beta}.")
        self.alpha, self.beta, self.stabilizer = float(alpha), float(beta), float(stabilizer)

    def _part(self, call: LayerCall, xp: torch.Tensor, xn: Optional[torch.Tensor], wa: torch.Tensor,
              wb: Callable[[], torch.Tensor], bias: Optional[torch.Tensor], r: torch.Tensor,
              positive: bool) -> torch.Tensor:
        """``[xp wa^T + xn wb^T](R / stab(wa xp + wb xn + bias))``."""
        z = call.forward(xp, wa, bias)
        if xn is not None:
            z = z + call.forward(xn, wb(), None)
        if xn is None and positive and self.stabilizer > 0:
            s = r / z.add_(self.stabilizer)   # W+ x+ + b+ >= 0: the stabilizer's sign is known
        else:
            s = _divide(r, z, self.stabilizer)
        out = xp * call.vjp(xp, wa, s)
        return out if xn is None else out + xn * call.vjp(xn, wb(), s)

    def relevance(self, call: LayerCall, x: torch.Tensor, z: Optional[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
        w, b = call.merged()
        xp, xn = _signed(x, call.nonneg)
        wp = w.clamp(min=0)
        out = self._part(call, xp, xn, wp, lambda: w.clamp(max=0), _pos(b), r, True)
        if self.alpha != 1:
            out = out * self.alpha
        if self.beta:
            out = out - self.beta * self._part(call, xp, xn, w.clamp(max=0), lambda: wp, _neg(b), r, False)
        return out


class ZPlus(AlphaBeta):
    """z+ (alpha1-beta0): relevance by the positive contributions only."""

    name = "zplus"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(1.0, 0.0, stabilizer)

    def __repr__(self) -> str:
        return f"ZPlus(stabilizer={self.stabilizer!r})"


class Gamma(Rule):
    """LRP-gamma: favours positive contributions by ``gamma`` (zennit's form for signed inputs)."""

    name = "gamma"
    needs_output = True

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        if not float(gamma) >= 0:
            raise XaiError(f"gamma must be >= 0; got {gamma!r}.")
        self.gamma, self.stabilizer = float(gamma), float(stabilizer)

    def relevance(self, call: LayerCall, x: torch.Tensor, z: Optional[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
        assert z is not None
        w, b = call.merged()
        g = self.gamma
        w1, w2 = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        b1 = None if b is None else b + g * b.clamp(min=0)
        b2 = None if b is None else b + g * b.clamp(max=0)
        xp, xn = _signed(x, call.nonneg)
        out = torch.zeros_like(x)
        # positive outputs: (x+, W1) and (x-, W2); negative outputs: (x+, W2) and (x-, W1)
        for mask, (wa, ba), wb in (((z > 0), (w1, b1), w2), ((z < 0), (w2, b2), w1)):
            d = call.forward(xp, wa, ba)
            if xn is not None:
                d = d + call.forward(xn, wb, None)
            s = _divide(r * mask, d, self.stabilizer)
            out = out + xp * call.vjp(xp, wa, s)
            if xn is not None:
                out = out + xn * call.vjp(xn, wb, s)
        return out


class Flat(Rule):
    """Flat: relevance spread evenly over each output's receptive field (weights 1, no bias)."""

    name = "flat"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def relevance(self, call: LayerCall, x: torch.Tensor, z: Optional[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
        w = call.weight.detach()
        ones_x = torch.ones_like(x)
        if int(call.params.get("groups", 1)) == 1:
            # every output channel has the same all-ones weights: one channel gives the
            # denominator, and the backward needs the relevance summed over channels only
            ones_w = torch.ones_like(w[:1])
            d = call.forward(ones_x, ones_w, None)
            s = _divide(r, d.expand_as(r), self.stabilizer)
            return call.vjp(ones_x, ones_w, s.sum(-1 if call.kind == "linear" else 1, keepdim=True))
        ones_w = torch.ones_like(w)
        s = _divide(r, call.forward(ones_x, ones_w, None), self.stabilizer)
        return call.vjp(ones_x, ones_w, s)


class WSquare(Rule):
    """w-square (Montavon et al. 2017): relevance by squared weights (the bias squared in the
    denominator, as zennit)."""

    name = "wsquare"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def relevance(self, call: LayerCall, x: torch.Tensor, z: Optional[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
        w, b = call.merged()
        w2, ones_x = w * w, torch.ones_like(x)
        s = _divide(r, call.forward(ones_x, w2, None if b is None else b * b), self.stabilizer)
        return call.vjp(ones_x, w2, s)


class ZBox(Rule):
    """z-box (Montavon et al. 2017) for inputs bounded by ``low <= x <= high``.

    Args:
        low, high: scalars or per-channel values (``(C,)`` or broadcastable to ``x``); None
            takes the bounds the explainer derives (from ``normalize=``, else each image's
            minimum and maximum).
    """

    name = "zbox"

    def __init__(self, low: Any = None, high: Any = None, stabilizer: float = 1e-6) -> None:
        if (low is None) != (high is None):
            raise XaiError("ZBox needs both low= and high= (or neither, to use the explainer's bounds).")
        self.low, self.high, self.stabilizer = low, high, float(stabilizer)

    def _bounds(self, call: LayerCall, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.low is None:
            if call.bounds is None:
                raise XaiError(f"ZBox at {call.where or 'a layer'} has no bounds: give low= and high=.")
            lo, hi = call.bounds
        else:
            lo, hi = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (self.low, self.high))
            if lo.ndim == 1 and x.ndim > 2 and lo.numel() == x.shape[1]:
                lo, hi = (v.reshape(1, -1, *([1] * (x.ndim - 2))) for v in (lo, hi))
        return lo.to(x).expand_as(x), hi.to(x).expand_as(x)

    def relevance(self, call: LayerCall, x: torch.Tensor, z: Optional[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
        w, b = call.merged()
        lo, hi = self._bounds(call, x)
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        d = call.forward(x, w, b) - call.forward(lo, wp, _pos(b)) - call.forward(hi, wn, _neg(b))
        s = _divide(r, d, self.stabilizer)
        return x * call.vjp(x, w, s) - lo * call.vjp(lo, wp, s) - hi * call.vjp(hi, wn, s)


#: rule names accepted wherever a rule is: name -> factory(epsilon, gamma, stabilizer)
RULE_NAMES: dict[str, Callable[[float, float, float], Rule]] = {
    "lrp0": lambda e, g, s: Epsilon(0.0),
    "epsilon": lambda e, g, s: Epsilon(e),
    "gamma": lambda e, g, s: Gamma(g, s),
    "zplus": lambda e, g, s: ZPlus(s),
    "alpha1_beta0": lambda e, g, s: ZPlus(s),
    "alpha2_beta1": lambda e, g, s: AlphaBeta(2.0, 1.0, s),
    "flat": lambda e, g, s: Flat(s),
    "wsquare": lambda e, g, s: WSquare(s),
    "zbox": lambda e, g, s: ZBox(stabilizer=s),
}


def as_rule(spec: Any, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6) -> Rule:
    """A :class:`Rule` from a rule or a rule name (see ``RULE_NAMES``)."""
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str) and spec in RULE_NAMES:
        return RULE_NAMES[spec](epsilon, gamma, stabilizer)
    raise XaiError(f"unknown LRP rule {spec!r}; choose one of {sorted(RULE_NAMES)} or a rule object "
                   "(xt.relevance.Epsilon(0.1), ZBox(low, high)...).")
