"""Complexity of an explanation: sparseness (Chalasani et al. 2020), complexity (Bhatt et al.
2020) and effective complexity (Nguyen & Martinez 2020), the Quantus ``Sparseness``,
``Complexity`` and ``EffectiveComplexity`` metrics.

Model-free, batched pure functions of the attribution: a tensor or array ``(B, C, H, W)``,
``(B, 1, H, W)`` or ``(B, H, W)`` (``(H, W)`` is one map). They return ``(B,)`` float64 on the
attribution's device.

Defaults follow Quantus 0.6 (``abs=True``, normalised by the largest ``|a|``; every value of
the map is a feature, channels included, unless ``reduce`` names a channel reduction), with two
deliberate differences, both documented per function and tested:

* Quantus normalises by the largest ``|a|`` of the **whole batch** (``normalise_by_max`` is
  called on the batch with no axes), so an image's effective complexity depends on the other
  images it is evaluated with. Here every map is normalised by its own maximum; on one image
  (or a batch whose maps share their maximum) the two agree.
* Quantus' sparseness adds ``1e-7`` to every value before the Gini index; here that offset is
  0 (the paper's Gini) unless ``offset=1e-7`` is asked for.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError, check_choice, describe
from ._common import REDUCTIONS, reduce_channels


def feature_maps(attribution: Any, reduce: Optional[str] = None, *, name: str = "attribution") -> torch.Tensor:
    """A model-free metric's attribution as float64 ``(B, N)`` features (one row per map).

    Args:
        attribution: ``(B, C, H, W)``, ``(B, 1, H, W)``, ``(B, H, W)`` or ``(H, W)``, tensor or array.
        reduce: ``None`` (every value is a feature, channels included, as Quantus) or a channel
            reduction of :data:`~xai_torch.metrics._common.REDUCTIONS` (one feature per pixel).

    Raises:
        XaiError: not a real, finite tensor or array of one of those shapes, or an unknown ``reduce``.
    """
    a = attribution
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor) or a.is_complex() or a.dtype == torch.bool or a.ndim not in (2, 3, 4):
        raise XaiError(f"{name} must be a real tensor or array of shape (B, C, H, W), (B, H, W) or (H, W); "
                       f"got {describe(attribution)}.")
    if a.numel() == 0:
        raise XaiError(f"{name} is empty: {describe(attribution)}.")
    a = a.detach().to(torch.float64)
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    if not bool(torch.isfinite(a).all()):
        raise XaiError(f"{name} has NaN or infinite values.")
    if reduce is not None:
        check_choice(reduce, "reduce", REDUCTIONS)
        a = reduce_channels(a, reduce)
    return a.flatten(1)


def normalise_by_max(a: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` rows divided by their own largest ``|a|`` (an all-zero row stays zero)."""
    top = a.abs().amax(1, keepdim=True)
    return a / torch.where(top == 0, torch.ones_like(top), top)


def _prepare(attribution: Any, reduce: Optional[str], normalise: bool, name: str) -> torch.Tensor:
    a = feature_maps(attribution, reduce, name=name)
    if not isinstance(normalise, bool):
        raise XaiError(f"normalise must be True or False; got {describe(normalise)}.")
    return (normalise_by_max(a) if normalise else a).abs()


def sparseness(attribution: Any, *, reduce: Optional[str] = None, normalise: bool = True,
               offset: float = 0.0) -> torch.Tensor:
    """Sparseness (Chalasani et al. 2020): the Gini index of ``|a|`` (Hurley & Rickard 2009),
    ``G = sum_k (2k - N - 1) c_(k) / (N sum_k c_k)`` with ``c_(1) <= ... <= c_(N)`` the sorted
    values. 0 for a uniform map, ``(N - 1) / N`` for a single non-zero feature. Higher is sparser.

    Args:
        attribution: see the module docstring.
        reduce: ``None`` (every value, as Quantus) or a channel reduction.
        normalise: divide each map by its largest ``|a|`` first (Quantus' default; the Gini
            index is scale invariant, so this changes nothing unless ``offset`` > 0).
        offset: added to every ``|a|`` before the index. Quantus adds ``1e-7``, which turns an
            all-zero map into 0 and shrinks every score by ``sum c / (sum c + N offset)``; the
            paper's index has none (0.0, the default).

    Returns:
        ``(B,)`` float64; NaN for an all-zero map (the index is undefined) when ``offset`` is 0.

    Example:
        >>> xt.metrics.sparseness(attr)   # (B,)
    """
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not (math.isfinite(offset) and offset >= 0):
        raise XaiError(f"offset must be a finite number >= 0 (Quantus uses 1e-7); got {describe(offset)}.")
    c = torch.sort(_prepare(attribution, reduce, normalise, "sparseness") + float(offset), dim=1).values
    n = c.shape[1]
    k = torch.arange(1, n + 1, dtype=torch.float64, device=c.device)
    total = c.sum(1)
    g = ((2 * k - n - 1) * c).sum(1) / (n * torch.where(total == 0, torch.ones_like(total), total))
    return torch.where(total == 0, torch.full_like(g, float("nan")), g)


def complexity(attribution: Any, *, reduce: Optional[str] = None, normalise: bool = True) -> torch.Tensor:
    """Complexity (Bhatt et al. 2020): the entropy of the fractional contributions
    ``p_i = |a_i| / sum_j |a_j|``, ``-sum_i p_i ln p_i`` (``0 ln 0 = 0``). 0 for a single
    non-zero feature, ``ln N`` for a uniform map. Lower is simpler.

    Quantus computes ``-sum p ln(p + 1e-12)``: equal to this to ~1e-12 per feature.

    Args:
        attribution: see the module docstring.
        reduce: ``None`` (every value, as Quantus) or a channel reduction.
        normalise: divide by the largest ``|a|`` first (Quantus' default; no effect on the entropy).

    Returns:
        ``(B,)`` float64 in nats; NaN for an all-zero map.

    Example:
        >>> xt.metrics.complexity(attr)   # (B,)
    """
    a = _prepare(attribution, reduce, normalise, "complexity")
    total = a.sum(1, keepdim=True)
    p = a / torch.where(total == 0, torch.ones_like(total), total)
    h = -torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p)).sum(1)
    return torch.where(total[:, 0] == 0, torch.full_like(h, float("nan")), h)


def effective_complexity(attribution: Any, *, eps: float = 1e-5, reduce: Optional[str] = None,
                         normalise: bool = True) -> torch.Tensor:
    """Effective complexity (Nguyen & Martinez 2020): the number of features whose ``|a|``
    exceeds ``eps`` (after dividing each map by its largest ``|a|``, by default). Lower is simpler.

    Differs from Quantus 0.6 in one point: Quantus divides by the largest ``|a|`` of the whole
    batch, so an image's count depends on the other images; here each map uses its own maximum
    (the same on one image).

    Args:
        attribution: see the module docstring.
        eps: the threshold, >= 0 (Quantus' 1e-5).
        reduce: ``None`` (every value, as Quantus) or a channel reduction.
        normalise: divide each map by its largest ``|a|`` first (Quantus' default).

    Returns:
        ``(B,)`` float64 counts.

    Example:
        >>> xt.metrics.effective_complexity(attr, eps=1e-3)
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
        raise XaiError(f"eps must be a finite threshold >= 0 (Quantus uses 1e-5); got {describe(eps)}.")
    a = _prepare(attribution, reduce, normalise, "effective_complexity")
    return (a > float(eps)).sum(1).to(torch.float64)


__all__ = ["sparseness", "complexity", "effective_complexity", "feature_maps", "normalise_by_max"]
