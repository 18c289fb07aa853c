"""Quadrature rules on ``[0, 1]`` for path integrals: pure functions ``n -> (alphas, weights)``.

Every builder returns two float64 tensors of length ``n``: the path positions ``alphas`` and
the weights ``weights`` so that ``sum_k weights[k] * g(alphas[k])`` approximates
``integral_0^1 g(a) da``. The weights of every rule but ``captum_trapezoid`` sum to 1.

=================== ============================ =========================================
rule                alphas (k = 0..n-1)          weights
=================== ============================ =========================================
riemann_left        k / n                        1 / n
riemann_right       (k + 1) / n                  1 / n
riemann_middle      (k + 1/2) / n                1 / n
riemann_trapezoid   k / (n - 1)                  1 / (n - 1), ends halved (n >= 2)
gauss_legendre      (1 + t_k) / 2, Legendre t_k  w_k / 2  (default; never hits 0 or 1)
captum_trapezoid    k / (n - 1)                  1 / n, ends halved: sum (n - 1) / n
=================== ============================ =========================================

``captum_trapezoid`` reproduces Captum's ``riemann_trapezoid``, whose nodes are spaced
``1/(n-1)`` but weighted ``1/n``, so its integrals come out scaled by ``(n-1)/n`` (-2 % at
n = 50). Use it only to compare with Captum.

Example:
    >>> alphas, weights = xt.path.gauss_legendre(4)
    >>> float((weights * alphas**3).sum())     # integral of a^3 = 1/4, exact for degree <= 7
    0.25
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import check_choice, check_positive_int

_F64 = torch.float64


def _linspace(start: float, stop: float, n: int) -> torch.Tensor:
    """Equally spaced nodes as Captum makes them (``torch.linspace`` in float32), in float64.

    They differ from the exact ``start + k * step`` by at most one float32 rounding, which
    float32 model inputs round away anyway; matching Captum's nodes bit for bit matters
    because a ReLU network's gradient jumps at its kinks, so one-ulp different inputs can give
    visibly different IG on a real network.
    """
    return torch.linspace(start, stop, n, dtype=torch.float32).to(_F64)


def riemann_left(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left Riemann sum: ``alphas = k/n``, ``weights = 1/n``."""
    n = check_positive_int(n, "steps")
    return _linspace(0, 1 - 1 / n, n), torch.full((n,), 1.0 / n, dtype=_F64)


def riemann_right(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right Riemann sum: ``alphas = (k+1)/n``, ``weights = 1/n``."""
    n = check_positive_int(n, "steps")
    return _linspace(1 / n, 1, n), torch.full((n,), 1.0 / n, dtype=_F64)


def riemann_middle(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint rule: ``alphas = (k+1/2)/n``, ``weights = 1/n``."""
    n = check_positive_int(n, "steps")
    return _linspace(1 / (2 * n), 1 - 1 / (2 * n), n), torch.full((n,), 1.0 / n, dtype=_F64)


def riemann_trapezoid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trapezoid rule on ``n`` equally spaced nodes including 0 and 1 (correct weights)."""
    n = check_positive_int(n, "steps", minimum=2)
    weights = torch.full((n,), 1.0 / (n - 1), dtype=_F64)
    weights[[0, -1]] /= 2
    return _linspace(0, 1, n), weights


def gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre rule mapped to ``[0, 1]``: exact for polynomials of degree ``2n - 1``."""
    n = check_positive_int(n, "steps")
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)


def captum_trapezoid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum's ``riemann_trapezoid``, bug included: weights ``1/n`` (ends halved) on nodes
    spaced ``1/(n-1)``, so the weights sum to ``(n-1)/n``. For comparisons with Captum only."""
    n = check_positive_int(n, "steps", minimum=2)
    weights = torch.full((n,), 1.0 / n, dtype=_F64)
    weights[[0, -1]] /= 2
    return _linspace(0, 1, n), weights


RULES = {
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
    "riemann_trapezoid": riemann_trapezoid,
    "gauss_legendre": gauss_legendre,
    "captum_trapezoid": captum_trapezoid,
}


def get_rule(method: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alphas, weights)`` of the rule named ``method`` with ``n`` nodes."""
    check_choice(method, "method", RULES)
    return RULES[method](n)
