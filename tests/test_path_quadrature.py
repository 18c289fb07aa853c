"""Quadrature rules on [0, 1] (xai_torch/path/quadrature.py): pure functions, closed forms."""
import pytest
import torch

import xai_torch as xt
from xai_torch.path import quadrature as quad

RULES = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre"]


@pytest.mark.parametrize("name", RULES + ["captum_trapezoid"])
def test_quadrature_nodes_and_weights(name):
    alphas, weights = quad.get_rule(name, 10)
    assert alphas.dtype == weights.dtype == torch.float64 and alphas.shape == weights.shape == (10,)
    assert bool((alphas >= 0).all() and (alphas <= 1).all() and (alphas.diff() > 0).all())
    expect = 0.9 if name == "captum_trapezoid" else 1.0  # Captum's bug: (n - 1) / n
    assert float(weights.sum()) == pytest.approx(expect, abs=1e-14)
    assert getattr(xt.path, name) is quad.RULES[name]


def test_quadrature_closed_forms():
    for n in (1, 3, 8):  # Gauss-Legendre is exact up to degree 2n - 1
        a, w = quad.gauss_legendre(n)
        assert float((w * a ** (2 * n - 1)).sum()) == pytest.approx(1 / (2 * n), abs=1e-14)
    a, w = quad.riemann_middle(4)
    torch.testing.assert_close(a, torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64))
    a, w = quad.riemann_trapezoid(3)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    for rule in (quad.riemann_middle, quad.riemann_trapezoid):  # exact for lines (float32-rounded nodes)
        a, w = rule(7)
        assert float((w * (3 * a + 1)).sum()) == pytest.approx(2.5, abs=1e-7)
    a, w = quad.riemann_left(4)
    assert a[0] == 0 and a[-1] == 0.75
    a, w = quad.riemann_right(4)
    assert a[0] == 0.25 and a[-1] == 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_quadrature_rejects_bad_steps(bad):
    with pytest.raises(xt.XaiError, match="steps"):
        quad.gauss_legendre(bad)


def test_quadrature_rejects_bad_names_and_short_trapezoid():
    with pytest.raises(xt.XaiError, match="method"):
        quad.get_rule("simpson", 10)
    with pytest.raises(xt.XaiError, match="steps"):
        quad.riemann_trapezoid(1)
