"""Sufficiency (Dasgupta, Frost & Moshkovitz 2022), as Quantus 0.6 ``Sufficiency``: among the
other images of the batch whose explanation is close to this one's, the fraction the model gives
the same class.

Arguments shared by every metric are in :mod:`xai_torch.metrics._common`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import XaiError, check_input, describe
from ._common import check_fraction, to_result
from .flipping import _prepare


@dataclass
class SufficiencyResult:
    """What :func:`sufficiency` returns (tensors on ``x.device``).

    Attributes:
        sufficiency: ``(B,)`` float64: among the other images within ``threshold`` of this
            image's explanation, the fraction predicted as the same class (0 when there is none).
        distances: ``(B, B)`` float64 standardised Euclidean distances between the explanations,
            divided by their maximum.
        predictions: ``(B,)`` long, the model's top-1 class of each image.
        model_calls: images forwarded, ``B``.
    """

    sufficiency: torch.Tensor
    distances: torch.Tensor
    predictions: torch.Tensor
    model_calls: int


def standardized_distances(a: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` ``scipy.spatial.distance.cdist(a, a, "seuclidean")`` of the rows of ``a``
    ``(B, F)``: each feature divided by the standard deviation scipy uses, that of the ``2B`` rows
    of ``[a; a]`` (ddof = 1), except that features equal in every row are left out: they add
    nothing to any distance, and scipy divides 0 by 0 there (every distance becomes NaN)."""
    a = a.double()
    b = a.shape[0]
    var = (a - a.mean(0)).pow(2).sum(0) * 2.0 / (2 * b - 1)
    keep = var > 0
    z = a[:, keep] / var[keep].sqrt()
    if z.shape[1] == 0:
        return torch.zeros(a.shape[0], a.shape[0], dtype=torch.float64, device=a.device)
    sq = z.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp(min=0)
    d2.fill_diagonal_(0.0)
    return d2.sqrt()


def sufficiency(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *, threshold: float = 0.6,
                absolute: bool = True, batch_size: Optional[int] = None,
                progress: Optional[bool] = None) -> SufficiencyResult:
    """Sufficiency (Dasgupta et al. 2022): the explanations of the B images are compared by the
    standardised Euclidean distance (divided by the largest distance of the batch); two images
    "share" an explanation when that distance is at most ``threshold``. An image's score is the
    fraction of the other images sharing its explanation that the model predicts as the same
    class: 1 when a similar explanation always comes with the same decision. Higher is better.
    A batch-level metric: each image's value depends on the other images.

    Defaults are Quantus 0.6's: ``threshold=0.6``, ``distance_func="seuclidean"``, ``abs=True``
    (its ``normalise`` is a positive scale, which the standardised distance ignores). Equal to
    Quantus to 1e-6 except that attribution features that are the same in every image (a zero
    border, a constant background: common in CAMs and ReLU gradients) are left out, where scipy
    makes every distance NaN and Quantus scores every image 0.

    Args:
        model, x, attribution, target, batch_size, progress: see :mod:`xai_torch.metrics._common`
            (``target`` only reaches an explainer; the predictions are the model's top-1).
        threshold: the largest normalised distance in [0, 1] at which two explanations count as
            the same.
        absolute: compare ``|attribution|`` (Quantus ``abs=True``).

    Returns:
        :class:`SufficiencyResult`.

    Cost:
        ``B`` forwards (the clean images), no perturbation.

    Example:
        >>> xt.metrics.sufficiency(model, x, xt.Saliency(model)).sufficiency
    """
    x4, _ = check_input(x)
    threshold = check_fraction(threshold, "threshold")
    x4, scorer, attr = _prepare(model, x4, attribution, target, "softmax", batch_size, progress, "sufficiency")
    if x4.shape[0] < 2:      # after the model's own checks (channels, dtype), which say more
        raise XaiError(f"sufficiency compares the explanations of several images: give at least 2 images; got "
                       f"{describe(x4)}.")
    if scorer.clean_top1 is None:
        raise XaiError("sufficiency needs class outputs (B, num_classes) to compare predictions; a callable "
                       "target gives no classes.")
    a = (attr.abs() if absolute else attr).flatten(1)
    d = standardized_distances(a)
    top = d.abs().max()
    d = d / top if bool(top > 0) else d
    b = d.shape[0]
    near = (d <= threshold) & ~torch.eye(b, dtype=torch.bool, device=d.device)
    pred = scorer.clean_top1
    same = pred[None, :] == pred[:, None]
    count = near.sum(1).double()
    value = (near & same).sum(1).double() / torch.where(count > 0, count, torch.full_like(count, torch.inf))
    return SufficiencyResult(to_result(value, x4), to_result(d, x4), pred.to(x4.device), scorer.calls)


__all__ = ["SufficiencyResult", "sufficiency", "standardized_distances"]
