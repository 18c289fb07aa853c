"""LIME on superpixels (Ribeiro et al. 2016), lime's ``LimeImageExplainer`` algorithm, batched.

For each image: ``samples`` random coalitions ``z ~ Bernoulli(0.5)^S`` (row 0 all ones, the
image itself), their perturbed images scored by the model, and a weighted ridge regression
(``alpha = 1``, with intercept) of the scores on ``z``, each row weighted by the kernel
``sqrt(exp(-d^2 / width^2))`` of its cosine distance to the all-ones row,
``d = 1 - sqrt(|z| / S)``. The coefficients are the superpixel weights. The ridge is solved in
float64 torch, batched over images and targets.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import XaiError, check_positive_int, describe
from .superpixel import Design, Fit, SuperpixelExplainer, SuperpixelExplanation


@dataclass
class LIMEExplanation(SuperpixelExplanation):
    """:class:`~xai_torch.region.superpixel.SuperpixelExplanation` of :class:`LIME`.

    Attributes:
        intercept: ``(B, [K])`` the surrogate's intercept.
        r2: ``(B, [K])`` weighted R^2 of the surrogate on the samples (lime's ``score``).
        local_pred: ``(B, [K])`` the surrogate's prediction for the image itself
            (``intercept + sum(weights)``), to compare with ``scores``.
    """

    intercept: Optional[torch.Tensor] = None
    r2: Optional[torch.Tensor] = None
    local_pred: Optional[torch.Tensor] = None


@dataclass
class LIMEFit(Fit):
    """LIME's surrogate: ``weights`` (the ridge coefficients) and, per image and target,
    ``intercept``, ``r2`` and ``local_pred`` (see :class:`LIMEExplanation`)."""

    intercept: torch.Tensor
    r2: torch.Tensor
    local_pred: torch.Tensor


def lime_kernel(distance: torch.Tensor, width: float) -> torch.Tensor:
    """lime's image kernel ``sqrt(exp(-d^2 / width^2))``."""
    return torch.exp(-(distance**2) / (2 * width**2))


def cosine_to_ones(z: torch.Tensor, count: Any) -> torch.Tensor:
    """Cosine distance of 0/1 rows ``z`` ``(..., N, S)`` to the all-ones row of ``count`` features
    (``(...)`` numbers, so padded columns do not count): ``1 - sqrt(|z| / count)``; all-zero rows
    get 1 (scikit-learn's convention)."""
    count = torch.as_tensor(count, dtype=torch.float64, device=z.device)
    on = z.to(torch.float64).sum(-1)
    return 1 - torch.sqrt(on / count[..., None])


def weighted_ridge(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 1.0) -> dict[str, torch.Tensor]:
    """Ridge regression with intercept and sample weights, batched (scikit-learn's ``Ridge``
    with ``sample_weight``: minimises ``sum_n w_n (y_n - b - z_n . c)^2 + alpha |c|^2``).

    Args:
        z: ``(B, N, S)`` features.
        y: ``(B, N, K)`` targets (K regressions share the features and weights).
        w: ``(B, N)`` sample weights >= 0.

    Returns:
        dict of float64 tensors: ``coef`` ``(B, K, S)``, ``intercept``, ``r2`` (weighted R^2 on
        the samples, 1 when the targets are constant and fitted exactly, else 0 for constant
        targets, as scikit-learn's ``r2_score``) and ``local_pred`` (prediction at the all-ones
        row), each ``(B, K)``.
    """
    z, y, w = z.to(torch.float64), y.to(torch.float64), w.to(torch.float64)
    total = w.sum(1, keepdim=True)  # (B, 1)
    zm = (w[..., None] * z).sum(1, keepdim=True) / total[..., None]  # (B, 1, S)
    ym = (w[..., None] * y).sum(1, keepdim=True) / total[..., None]  # (B, 1, K)
    zc, yc = z - zm, y - ym
    zw = zc * w[..., None]
    gram = zw.transpose(1, 2) @ zc + alpha * torch.eye(z.shape[2], dtype=torch.float64, device=z.device)
    coef = torch.linalg.solve(gram, zw.transpose(1, 2) @ yc)  # (B, S, K)
    intercept = ym[:, 0] - (zm @ coef)[:, 0]  # (B, K)
    pred = z @ coef + intercept[:, None]
    residual = (w[..., None] * (y - pred) ** 2).sum(1)
    spread = (w[..., None] * yc**2).sum(1)
    r2 = torch.where(spread > 0, 1 - residual / spread.clamp(min=1e-300),
                     (residual == 0).to(torch.float64))
    local = intercept + coef.sum(1)
    return {"coef": coef.transpose(1, 2), "intercept": intercept, "r2": r2, "local_pred": local}


class LIME(SuperpixelExplainer):
    """LIME on superpixels: a locally weighted linear surrogate over superpixels switched on and
    off, as lime's ``LimeImageExplainer`` computes it (cosine-distance kernel, weighted ridge
    with intercept, first sample the image itself). The perturbed images are composed batched
    on the model's device and the ridge is solved in torch.

    Differences from lime: the target is one class per image (``target=None`` is lime's top
    label; give a ``(B, K)`` target for its ``top_labels=K``), explained by its softmax
    probability by default (the sigmoid of a one-logit model); every superpixel is kept
    (lime's default ``num_features=100000``); segments are always renumbered from 0; the random
    draws come from torch, so results equal lime's in distribution, not bit for bit.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        samples: coalitions per image, the image itself included (lime's ``num_samples``).
        kernel_width: width of the distance kernel (lime's ``kernel_width``).
        alpha: ridge penalty (lime's ``Ridge(alpha=1)``).
        hide, segmenter, output, normalize, input_range, blur_sigma, seed: see
            :mod:`xai_torch.region.superpixel`.

    Returns:
        ``(B, 1, H, W)`` maps (``(B, K, 1, H, W)`` for ``(B, K)`` targets): each pixel carries
        its superpixel's weight. ``explain`` returns a :class:`LIMEExplanation` (segments,
        per-superpixel weights, intercept, weighted R^2, local prediction).

    Cost:
        ``samples`` forwards per image in no-grad chunks of ``batch_size``, plus the
        segmentation (quickshift: about 0.5 s per 224 px image on CPU) and a ``S x S`` solve.

    Example:
        >>> lime = xt.region.LIME(model, samples=1000, seed=0)
        >>> res = lime.explain(x, image=pixels)         # segments the pixel images
        >>> res.weights, res.r2                          # (B, S), (B,)
        >>> maps = lime(x, segments=res.segments)        # reuse the segmentation
    """

    def __init__(self, model: Any, *, samples: int = 1000, kernel_width: float = 0.25, alpha: float = 1.0,
                 hide: Any = "mean", segmenter: Any = "quickshift", output: str = "softmax", normalize: Any = None,
                 input_range: Any = None,
                 blur_sigma: float = 10.0, seed: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, hide=hide, segmenter=segmenter, output=output, normalize=normalize,
                         input_range=input_range, blur_sigma=blur_sigma, seed=seed, batch_size=batch_size,
                         progress=progress)
        self.samples = check_positive_int(samples, "samples", minimum=2)
        for name, value in (("kernel_width", kernel_width), ("alpha", alpha)):  # alpha > 0 keeps the solve posed
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                raise XaiError(f"{name} must be a number > 0; got {describe(value)}.")
        self.kernel_width = float(kernel_width)
        self.alpha = float(alpha)

    def _config(self) -> dict[str, Any]:
        return {"samples": self.samples, "kernel_width": self.kernel_width, "alpha": self.alpha, **super()._config()}

    def _design(self, counts: list[int], generator: Optional[torch.Generator], device: torch.device) -> Design:
        n, width = self.samples, max(counts)
        z = torch.zeros(len(counts), n, width, dtype=torch.bool, device=device)
        for i, s in enumerate(counts):  # per image (its own segment count), from one seeded generator
            z[i, 0, :s] = True
            z[i, 1:, :s] = torch.randint(0, 2, (n - 1, s), generator=generator, device=device, dtype=torch.uint8) > 0
        rows = torch.full((len(counts),), n, dtype=torch.long)
        return Design(z, rows)

    def _fit(self, design: Design, y: torch.Tensor, counts: torch.Tensor) -> LIMEFit:
        w = lime_kernel(cosine_to_ones(design.z, counts), self.kernel_width)
        fit = weighted_ridge(design.z, y, w, self.alpha)
        return LIMEFit(fit["coef"], fit["intercept"], fit["r2"], fit["local_pred"])

    def _result(self, **kwargs: Any) -> LIMEExplanation:
        return LIMEExplanation(**kwargs)
