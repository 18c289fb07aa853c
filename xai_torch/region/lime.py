"""LIME on superpixels (Ribeiro et al. 2016), lime's ``LimeImageExplainer`` algorithm, batched.

For each image: ``samples`` random coalitions ``z ~ Bernoulli(0.5)^S`` (row 0 all ones, the
image itself), their perturbed images scored by the model, and a weighted ridge regression
(``alpha = 1``, with intercept) of the scores on ``z``, each row weighted by the kernel
``sqrt(exp(-d^2 / width^2))`` of its cosine distance to the all-ones row,
``d = 1 - sqrt(|z| / S)``. The coefficients are the superpixel weights. The ridge (or
Captum's Lasso surrogate) is solved in float64 torch, batched over images and targets; the
kernel and the sampling can be the user's (Captum's ``similarity_func`` / ``perturb_func``).
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import XaiError, XaiWarning, check_choice, check_positive_int, describe
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


def _centred(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float64 copies and the weighted means and centred features / targets of a weighted fit."""
    z, y, w = z.to(torch.float64), y.to(torch.float64), w.to(torch.float64)
    total = w.sum(1, keepdim=True)  # (B, 1)
    zm = (w[..., None] * z).sum(1, keepdim=True) / total[..., None]  # (B, 1, S)
    ym = (w[..., None] * y).sum(1, keepdim=True) / total[..., None]  # (B, 1, K)
    return z, y, w, zm, ym, z - zm, y - ym


def _summary(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, zm: torch.Tensor, ym: torch.Tensor,
             yc: torch.Tensor, coef: torch.Tensor) -> dict[str, torch.Tensor]:
    """Intercept, weighted R^2 and local prediction of a fit with ``coef`` ``(B, S, K)``."""
    intercept = ym[:, 0] - (zm @ coef)[:, 0]  # (B, K)
    pred = z @ coef + intercept[:, None]
    residual = (w[..., None] * (y - pred) ** 2).sum(1)
    spread = (w[..., None] * yc**2).sum(1)
    r2 = torch.where(spread > 0, 1 - residual / spread.clamp(min=1e-300),
                     (residual == 0).to(torch.float64))
    local = intercept + coef.sum(1)
    return {"coef": coef.transpose(1, 2), "intercept": intercept, "r2": r2, "local_pred": local}


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
    z, y, w, zm, ym, zc, yc = _centred(z, y, w)
    zw = zc * w[..., None]
    gram = zw.transpose(1, 2) @ zc + alpha * torch.eye(z.shape[2], dtype=torch.float64, device=z.device)
    coef = torch.linalg.solve(gram, zw.transpose(1, 2) @ yc)  # (B, S, K)
    return _summary(z, y, w, zm, ym, yc, coef)


def weighted_lasso(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 0.01, *, tol: float = 1e-12,
                   max_iter: int = 10000) -> dict[str, torch.Tensor]:
    """Lasso with intercept and sample weights, batched (scikit-learn's ``Lasso`` with
    ``sample_weight``, Captum's ``SkLearnLasso``): minimises
    ``sum_n w_n (y_n - b - z_n . c)^2 / (2 sum_n w_n) + alpha |c|_1`` by cyclic coordinate
    descent on the weighted Gram matrix (sweeps over the nonzero coefficients between full sweeps,
    as glmnet), in float64, every image and target at once.

    Args:
        z, y, w: as :func:`weighted_ridge`.
        alpha: the L1 penalty (> 0).
        tol: stop when a sweep changes no coefficient ``c_j`` by more than ``tol`` times the
            targets' weighted standard deviation over that of ``z_j``; ``max_iter`` sweeps at most
            (with a warning).

    Returns:
        as :func:`weighted_ridge` (features without spread, e.g. padding columns, get 0).
    """
    z, y, w, zm, ym, zc, yc = _centred(z, y, w)
    total = w.sum(1)[:, None, None]
    zw = zc * w[..., None]
    gram = zw.transpose(1, 2) @ zc / total  # (B, S, S)
    corr = zw.transpose(1, 2) @ yc / total  # (B, S, K)
    diag = torch.diagonal(gram, dim1=1, dim2=2)  # (B, S)
    live = diag > 1e-300
    inv = torch.where(live, 1 / diag.clamp(min=1e-300), torch.zeros_like(diag))
    coef = torch.zeros_like(corr)
    grad = corr.clone()  # corr - gram @ coef, kept up to date
    spread = ((w[..., None] * yc**2).sum(1) / total[:, 0]).sqrt().amax(1)  # (B,) largest target std
    root = diag.sqrt()
    columns = gram.transpose(1, 2).contiguous()  # columns[:, j] = gram[:, :, j]
    every = list(range(z.shape[2]))
    active: Optional[list[int]] = None  # None: a sweep over every feature, else over the nonzero ones
    for _ in range(max_iter):
        moved = torch.zeros_like(spread)  # largest change of a prediction in the sweep
        for j in every if active is None else active:
            rho = grad[:, j] + diag[:, j, None] * coef[:, j]  # (B, K)
            new = torch.sign(rho) * (rho.abs() - alpha).clamp(min=0) * inv[:, j, None] + 0.0  # no -0
            delta = new - coef[:, j]
            coef[:, j] = new
            grad -= columns[:, j, :, None] * delta[:, None]
            moved = torch.maximum(moved, (delta.abs() * root[:, j, None]).amax(1))
        converged = bool((moved <= tol * spread).all())
        if converged and active is None:  # converged on a sweep over every feature: done
            break
        # glmnet's active set: sweep the nonzero coefficients until they settle, then check all
        active = None if converged else (torch.nonzero((coef != 0).any(2).any(0)).flatten().tolist() or None)
    else:
        warnings.warn(f"LIME's lasso did not converge in {max_iter} sweeps; the weights are approximate.",
                      XaiWarning, stacklevel=5)
    return _summary(z, y, w, zm, ym, yc, coef)


#: LIME's surrogate models.
SURROGATES = ("ridge", "lasso")

#: ``similarity(original, perturbed, z) -> (n,)`` sample weights (see :class:`LIME`).
Similarity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def exp_kernel_similarity(distance: str = "cosine", kernel_width: float = 1.0) -> Similarity:
    """A ``similarity=`` for :class:`LIME`: ``exp(-d^2 / (2 width^2))`` of the ``"cosine"`` or
    ``"euclidean"`` distance ``d`` between each perturbed image and its original, both
    flattened (Captum's ``get_exp_kernel_similarity_function``; its ``Lime`` default is
    ``exp_kernel_similarity("cosine", 1.0)``), batched over the rows."""
    check_choice(distance, "distance", ("cosine", "euclidean"))
    if isinstance(kernel_width, bool) or not isinstance(kernel_width, numbers.Real) or not kernel_width > 0:
        raise XaiError(f"kernel_width must be a number > 0; got {describe(kernel_width)}.")
    width = float(kernel_width)

    def similarity(original: torch.Tensor, perturbed: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        a, b = original.flatten(1).to(torch.float64), perturbed.flatten(1).to(torch.float64)
        if distance == "cosine":
            d = 1 - torch.nn.functional.cosine_similarity(a, b, dim=1)
        else:
            d = (a - b).norm(dim=1)
        return torch.exp(-(d**2) / (2 * width**2))

    return similarity


@dataclass
class LIMEDesign(Design):
    """LIME's rows with their fit ``weights`` ``(B, N)`` float64, filled in as the rows are
    evaluated when a user ``similarity`` gives them (row 0, the image, weighs 0 when a user
    ``perturbation`` drew the rows); ``None``: lime's kernel of the interpretable distance."""

    weights: Optional[torch.Tensor] = None
    fit_image: bool = True


class LIME(SuperpixelExplainer):
    """LIME on superpixels: a locally weighted linear surrogate over superpixels switched on and
    off, as lime's ``LimeImageExplainer`` computes it (cosine-distance kernel, weighted ridge
    with intercept, first sample the image itself). The perturbed images are composed batched
    on the model's device and the surrogate is fitted in torch. Captum's ``Lime`` options are
    there too: a Lasso surrogate, a user similarity kernel and a user sampling function.

    Differences from lime: the target is one class per image (``target=None`` is lime's top
    label; give a ``(B, K)`` target for its ``top_labels=K``), explained by its softmax
    probability by default (the sigmoid of a one-logit model); every superpixel is kept
    (lime's default ``num_features=100000``); segments are always renumbered from 0; the random
    draws come from torch, so results equal lime's in distribution, not bit for bit.
    Differences from Captum's ``Lime``: ``hide`` is the baseline (Captum's ``baselines``, a
    number or tensor here), the rows are drawn and weighed in batches (the functions below take
    every row of a chunk at once), and the surrogate is always fitted with an intercept.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        samples: coalitions per image, the image itself included (lime's ``num_samples``); with
            ``perturbation``, the rows it draws (the image is then scored besides them).
        kernel_width: width of lime's distance kernel (unused with ``similarity``).
        surrogate: ``"ridge"`` (default, lime's ``Ridge(alpha=1)``) or ``"lasso"`` (Captum's
            ``SkLearnLasso(alpha)``, the same objective as scikit-learn's ``Lasso`` with sample
            weights: ``sum w (y - b - z.c)^2 / (2 sum w) + alpha |c|_1``, solved by coordinate
            descent in float64 torch, :func:`weighted_lasso`).
        alpha: the surrogate's penalty (> 0); default 1.0 for ridge, 0.01 (Captum's) for lasso.
        similarity: ``None`` (lime's kernel ``exp(-d^2 / (2 width^2))`` of the cosine distance
            between the coalition and the all-ones row), or a callable
            ``similarity(original, perturbed, z) -> (n,)`` weights >= 0, which receives what
            Captum's ``similarity_func`` receives, for ``n`` rows at once: the original images
            ``(n, C, H, W)`` (model space), the perturbed ones ``(n, C, H, W)`` and the coalitions
            ``(n, S)`` float 0/1 (``S``: the largest superpixel count of the batch, padding
            columns 0). :func:`exp_kernel_similarity` gives Captum's exponential kernels.
        perturbation: ``None`` (lime's: the image, then independent Bernoulli(0.5) draws), or a
            callable ``perturbation(x, num_features, samples, generator) -> (samples,
            num_features)`` 0/1 coalitions of one image (Captum's ``perturb_func``, all rows at
            once): ``x`` ``(C, H, W)`` the image, ``generator`` the explainer's seeded
            :class:`torch.Generator` (or ``None``). Every row it draws enters the fit; the clean
            image is scored too (targets, ``scores``) but weighs 0 in the fit.
        hide, segmenter, output, normalize, input_range, blur_sigma, seed: see
            :mod:`xai_torch.region.superpixel`.

    Returns:
        ``(B, 1, H, W)`` maps (``(B, K, 1, H, W)`` for ``(B, K)`` targets): each pixel carries
        its superpixel's weight. ``explain`` returns a :class:`LIMEExplanation` (segments,
        per-superpixel weights, intercept, weighted R^2, local prediction).

    Cost:
        ``samples`` forwards per image in no-grad chunks of ``batch_size`` (one more with
        ``perturbation``), plus the segmentation (quickshift: about 0.5 s per 224 px image on
        CPU) and a ``S x S`` solve (lasso: coordinate-descent sweeps over the ``S`` features).

    Example:
        >>> lime = xt.region.LIME(model, samples=1000, seed=0)
        >>> res = lime.explain(x, image=pixels)         # segments the pixel images
        >>> res.weights, res.r2                          # (B, S), (B,)
        >>> maps = lime(x, segments=res.segments)        # reuse the segmentation
        >>> captum_like = xt.region.LIME(model, surrogate="lasso", hide=0.0,
        ...                              similarity=xt.region.exp_kernel_similarity("cosine", 1.0))
    """

    def __init__(self, model: Any, *, samples: int = 1000, kernel_width: float = 0.25, surrogate: str = "ridge",
                 alpha: Optional[float] = None, similarity: Optional[Similarity] = None,
                 perturbation: Optional[Callable[..., Any]] = None,
                 hide: Any = "mean", segmenter: Any = "quickshift", output: str = "softmax", normalize: Any = None,
                 input_range: Any = None,
                 blur_sigma: float = 10.0, seed: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, hide=hide, segmenter=segmenter, output=output, normalize=normalize,
                         input_range=input_range, blur_sigma=blur_sigma, seed=seed, batch_size=batch_size,
                         progress=progress)
        self.samples = check_positive_int(samples, "samples", minimum=2)
        self.surrogate = check_choice(surrogate, "surrogate", SURROGATES)
        if alpha is None:
            alpha = 1.0 if self.surrogate == "ridge" else 0.01
        for name, value in (("kernel_width", kernel_width), ("alpha", alpha)):  # alpha > 0 keeps the solve posed
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                raise XaiError(f"{name} must be a number > 0; got {describe(value)}.")
        for name, fn in (("similarity", similarity), ("perturbation", perturbation)):
            if fn is not None and not callable(fn):
                raise XaiError(f"{name} must be None or a callable (see help(xt.region.LIME)); got {describe(fn)}.")
        self.kernel_width = float(kernel_width)
        self.alpha = float(alpha)
        self.similarity = similarity
        self.perturbation = perturbation

    def _config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"samples": self.samples, "kernel_width": self.kernel_width}
        if self.surrogate != "ridge":
            cfg["surrogate"] = self.surrogate
        cfg["alpha"] = self.alpha
        for name in ("similarity", "perturbation"):
            fn = getattr(self, name)
            if fn is not None:
                cfg[name] = getattr(fn, "__name__", type(fn).__name__)
        return {**cfg, **super()._config()}

    def _design(self, counts: list[int], generator: Optional[torch.Generator], device: torch.device) -> Design:
        n, width = self.samples, max(counts)
        z = torch.zeros(len(counts), n, width, dtype=torch.bool, device=device)
        for i, s in enumerate(counts):  # per image (its own segment count), from one seeded generator
            z[i, 0, :s] = True
            z[i, 1:, :s] = torch.randint(0, 2, (n - 1, s), generator=generator, device=device, dtype=torch.uint8) > 0
        rows = torch.full((len(counts),), n, dtype=torch.long)
        return LIMEDesign(z, rows)

    def _design_for(self, x: torch.Tensor, counts: list[int], generator: Optional[torch.Generator],
                    device: torch.device) -> Design:
        design = self._design(counts, generator, device) if self.perturbation is None else \
            self._drawn(x, counts, generator, device)
        if not isinstance(design, LIMEDesign):  # a subclass's own plain design
            design = LIMEDesign(design.z, design.rows)
        if self.similarity is not None:
            design.weights = torch.zeros(design.z.shape[:2], dtype=torch.float64, device=device)
        return design

    def _drawn(self, x: torch.Tensor, counts: list[int], generator: Optional[torch.Generator],
               device: torch.device) -> LIMEDesign:
        """Row 0 the image, then the ``samples`` rows of the user's ``perturbation``, checked."""
        assert self.perturbation is not None
        n, width = self.samples, max(counts)
        z = torch.zeros(len(counts), n + 1, width, dtype=torch.bool, device=device)
        for i, s in enumerate(counts):
            z[i, 0, :s] = True
            drawn = self.perturbation(x[i], s, n, generator)
            if not isinstance(drawn, torch.Tensor) or tuple(drawn.shape) != (n, s):
                got = f"shape {tuple(drawn.shape)}" if isinstance(drawn, torch.Tensor) else describe(drawn)
                raise XaiError(f"perturbation must return a (samples, num_features) = ({n}, {s}) tensor of 0/1 "
                               f"values for image {i}; got {got}.")
            if drawn.dtype != torch.bool and not bool(((drawn == 0) | (drawn == 1)).all()):
                raise XaiError(f"perturbation must return 0/1 (or bool) coalitions; image {i} has other values.")
            z[i, 1:, :s] = drawn.to(device=device).to(torch.bool)
        return LIMEDesign(z, torch.full((len(counts),), n + 1, dtype=torch.long), fit_image=False)

    def _observe(self, design: Design, images: torch.Tensor, rows: torch.Tensor, x: torch.Tensor,
                 perturbed: torch.Tensor) -> None:
        if self.similarity is None:
            return
        assert isinstance(design, LIMEDesign) and design.weights is not None
        n = images.shape[0]
        sim = self.similarity(x[images], perturbed, design.z[images, rows].to(x.dtype))
        if not isinstance(sim, torch.Tensor) or sim.numel() != n or sim.ndim > 2 or sim.shape[1:] not in ((), (1,)):
            got = f"shape {tuple(sim.shape)}" if isinstance(sim, torch.Tensor) else describe(sim)
            raise XaiError(f"similarity must return a ({n},) tensor (one weight per perturbed image of the "
                           f"chunk); got {got}.")
        sim = sim.detach().reshape(n).to(device=design.weights.device, dtype=torch.float64)
        if not bool((torch.isfinite(sim) & (sim >= 0)).all()):
            raise XaiError("similarity must return finite weights >= 0.")
        design.weights[images, rows] = sim

    def _fit(self, design: Design, y: torch.Tensor, counts: torch.Tensor) -> LIMEFit:
        if not isinstance(design, LIMEDesign):
            design = LIMEDesign(design.z, design.rows)
        if design.weights is not None:
            w = design.weights.clone()
        else:
            w = lime_kernel(cosine_to_ones(design.z, counts), self.kernel_width)
        if not design.fit_image:
            w[:, 0] = 0
        if bool((w.sum(1) <= 0).any()):
            raise XaiError("every sample weighs 0 in LIME's fit (similarity); give a kernel that weighs some > 0.")
        solve = weighted_ridge if self.surrogate == "ridge" else weighted_lasso
        fit = solve(design.z, y, w, self.alpha)
        return LIMEFit(fit["coef"], fit["intercept"], fit["r2"], fit["local_pred"])

    def _result(self, **kwargs: Any) -> LIMEExplanation:
        return LIMEExplanation(**kwargs)
