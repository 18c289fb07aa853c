"""Fidelity and robustness under random perturbations: infidelity, max-sensitivity, sensitivity-n.

* :func:`infidelity` (Yeh et al. 2019; Captum ``metrics.infidelity``): how well ``I . Phi``
  predicts the score drop ``F(x) - F(x - I)`` for random perturbations ``I``.
* :func:`max_sensitivity` (Yeh et al. 2019; Captum ``metrics.sensitivity_max``): how much the
  explanation moves when the input moves a little (and the mean of that, avg-sensitivity).
* :func:`sensitivity_n` (Ancona et al. 2018): the correlation, over random subsets of n
  features, between the relevance they hold and the score drop when they are removed.

Arguments shared by every metric (``model``, ``x``, ``attribution``, ``target``, ``reduce``,
``batch_size``, ``progress``) are documented in :mod:`xai_torch.metrics._common`.

Randomness: every draw comes from one ``torch.Generator`` seeded with ``seed`` on the model's
device, in fixed blocks (one block per image, or per subset draw), so a seed gives the same
result bit-for-bit on the same device whatever ``batch_size`` is. On the CPU the uniform noise of
:func:`max_sensitivity` is the same stream as Captum's default noise after
``torch.manual_seed(seed)``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..batching import auto_batch_size, check_batch_size, map_chunks
from ..errors import XaiError, check_fill, check_input, check_positive_int, describe
from ..explainer import Explainer, model_device
from ..seeding import check_seed, make_generator
from ..space import broadcast_to_images
from ..targets import ClassTarget, FunctionTarget, as_target
from ._common import Scorer, coerce_attribution, correlation, is_explainer, to_result

PERTURBATIONS = ("gaussian", "square")


# ------------------------------------------------------------------------------------------
# Results
@dataclass
class InfidelityResult:
    """What :func:`infidelity` returns (per-image float64 tensors on ``x.device``).

    Attributes:
        infidelity: ``(B,)`` ``E_I[(beta * I.Phi - (F(x) - F(x - I)))^2]``.
        beta: ``(B,)`` the scale applied to ``I.Phi``: the least-squares one
            ``E[I.Phi * dF] / E[(I.Phi)^2]`` with ``normalize=True``, else 1.
    """

    infidelity: torch.Tensor
    beta: torch.Tensor


@dataclass
class SensitivityResult:
    """What :func:`max_sensitivity` returns (per-image float64 tensors on ``x.device``).

    Attributes:
        max_sensitivity: ``(B,)`` ``max_j ||Phi(x + d_j) - Phi(x)|| / ||Phi(x)||``.
        avg_sensitivity: ``(B,)`` the mean of the same ratios over the samples.
    """

    max_sensitivity: torch.Tensor
    avg_sensitivity: torch.Tensor


@dataclass
class SensitivityNResult:
    """What :func:`sensitivity_n` returns (float64 tensors on ``x.device``).

    Attributes:
        correlation: ``(B, G)`` Pearson correlation between ``sums`` and ``deltas`` per image and
            grid point (NaN where either does not vary, e.g. n = all features).
        n: ``(G,)`` long, the subset sizes (in features).
        sums: ``(B, G, subsets)`` the relevance ``sum_{i in S} R_i`` of each drawn subset.
        deltas: ``(B, G, subsets)`` the score drop ``F(x) - F(x with S set to the baseline)``.
    """

    correlation: torch.Tensor
    n: torch.Tensor
    sums: torch.Tensor
    deltas: torch.Tensor


# ------------------------------------------------------------------------------------------
# Model-free numerics
def infidelity_from_terms(a: torch.Tensor, b: torch.Tensor,
                          normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Infidelity from ``a = I.Phi`` and ``b = F(x) - F(x - I)``, both ``(B, S)``.

    Returns:
        ``(infidelity, beta)``, each ``(B,)``: ``mean_s (beta a - b)^2`` with ``beta = 1``, or with
        ``normalize=True`` ``beta = sum(a b) / sum(a^2)`` (a zero denominator counts as 1, as
        Captum) and the expansion ``beta^2 E[a^2] - 2 beta E[ab] + E[b^2]``.

    Example:
        >>> infidelity_from_terms(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 4.0]]), normalize=True)
        (tensor([0.]), tensor([2.]))
    """
    if not normalize:
        return (a - b).pow(2).mean(-1), torch.ones(a.shape[:-1], dtype=a.dtype, device=a.device)
    aa, ab, bb = a.pow(2).sum(-1), (a * b).sum(-1), b.pow(2).sum(-1)
    beta = ab / torch.where(aa != 0, aa, torch.ones_like(aa))
    return (beta * beta * aa - 2 * beta * ab + bb) / a.shape[-1], beta


def sensitivity_ratios(clean: torch.Tensor, noisy: torch.Tensor, norm="fro") -> torch.Tensor:
    """``||noisy_j - clean|| / ||clean||`` for ``clean`` ``(B, ...)`` and ``noisy`` ``(B, S, ...)``
    (flattened per attribution; a zero ``||clean||`` counts as 1, as Captum). Returns ``(B, S)``."""
    ord_ = _norm_ord(norm)
    ref = torch.linalg.vector_norm(clean.flatten(1), ord=ord_, dim=1)
    ref = torch.where(ref == 0, torch.ones_like(ref), ref)
    diff = (noisy - clean[:, None]).flatten(2)
    return torch.linalg.vector_norm(diff, ord=ord_, dim=2) / ref[:, None]


def sensitivity_n_grid(features: int, points: int = 10, top: float = 0.8) -> list[int]:
    """The default grid: ``points`` log-spaced subset sizes from 1 to ``top`` of ``features``
    (rounded, duplicates dropped)."""
    hi = max(1.0, top * features)
    return sorted({int(v) for v in np.rint(np.logspace(0.0, math.log10(hi), points))})


def feature_map(h: int, w: int, patch: int, device=None) -> tuple[torch.Tensor, int]:
    """``((H*W,) long, D)``: the feature of each pixel (row-major) for ``patch x patch`` cells
    (the last row / column of cells cropped at the edge), and the number of features D."""
    gw = -(-w // patch)
    gh = -(-h // patch)
    rows = torch.arange(h, device=device) // patch
    cols = torch.arange(w, device=device) // patch
    return (rows[:, None] * gw + cols[None, :]).reshape(-1), gh * gw


def subset_masks(keys: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``(m, D)`` bool: in row i, the ``counts[i]`` features with the smallest ``keys`` (a
    uniformly random subset of that size when the keys are i.i.d. uniform)."""
    order = keys.argsort(dim=1)
    ranks = torch.arange(keys.shape[1], device=keys.device).expand_as(keys)
    return torch.zeros_like(keys, dtype=torch.bool).scatter_(1, order, ranks < counts[:, None])


def square_masks(params: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(m, 1, H, W)`` bool squares from ``params`` ``(m, 3)`` = (side, top, left)."""
    side, top, left = params[:, :1], params[:, 1:2], params[:, 2:3]
    ii = torch.arange(h, device=params.device)
    jj = torch.arange(w, device=params.device)
    rows = (ii >= top) & (ii < top + side)
    cols = (jj >= left) & (jj < left + side)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


# ------------------------------------------------------------------------------------------
# Helpers
class _Blocks:
    """Rows of random draws made in fixed blocks of ``per`` rows, in block order.

    ``rows(start, stop)`` may be asked again for a range it already served (a CUDA
    out-of-memory retry in :func:`map_chunks`); blocks before ``start`` are dropped."""

    def __init__(self, draw: Callable[[int], torch.Tensor], per: int) -> None:
        self.draw, self.per, self.cache, self.next = draw, per, {}, 0

    def rows(self, start: int, stop: int) -> torch.Tensor:
        first, last = start // self.per, (stop - 1) // self.per
        for k in [k for k in self.cache if k < first]:
            del self.cache[k]
        while self.next <= last:
            self.cache[self.next] = self.draw(self.next)
            self.next += 1
        parts = [self.cache[k] for k in range(first, last + 1)]
        t = parts[0] if len(parts) == 1 else torch.cat(parts)
        off = first * self.per
        return t[start - off:stop - off]


def _norm_ord(norm):
    if norm == "fro":
        return 2.0
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool) and norm > 0:
        return float(norm)
    raise XaiError(f"norm must be 'fro' (the Frobenius / L2 norm of the flattened attribution) or a "
                   f"positive number p (float('inf') for the max norm); got {describe(norm)}.")


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise XaiError(f"{name} must be a finite number > 0; got {describe(value)}.")
    return float(value)


def _baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    b = check_fill(baseline, "baseline (a model-space value)")
    if not isinstance(b, torch.Tensor):
        b = torch.tensor(b, dtype=x.dtype, device=x.device)
    return broadcast_to_images(b, x, "baseline")


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / torch.where(den != 0, den, torch.ones_like(den))


def _check_perturbed(out, like: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != like.shape:
        raise XaiError(f"{what} must be a tensor of shape {tuple(like.shape)} (one per perturbed image); "
                       f"got {describe(out)}.")
    if not bool(torch.isfinite(out).all()):
        raise XaiError(f"{what} has NaN or infinite values.")
    return out.detach().to(device=like.device)


# ------------------------------------------------------------------------------------------
# Infidelity
def infidelity(model, x: torch.Tensor, attribution, target=None, *, perturbation="gaussian", std: float = 0.003,
               square: int = 10, samples: int = 10, normalize: bool = False, global_attribution: bool = False,
               baseline=0.0, score: str = "logit", seed: Optional[int] = 0, batch_size: Optional[int] = None,
               progress: Optional[bool] = None) -> InfidelityResult:
    """Infidelity (Yeh et al. 2019): ``E_I[(I . Phi - (F_c(x) - F_c(x - I)))^2]`` over random
    perturbations ``I``, with Captum's semantics (``captum.metrics.infidelity``). Lower is better.

    Args:
        model, x, attribution, target, batch_size, progress: see :mod:`xai_torch.metrics._common`.
            The attribution is used per element: ``(B, C, H, W)``, or ``(B, 1, H, W)`` /
            ``(B, H, W)`` maps broadcast over the channels.
        perturbation: how ``x~ = x - I`` is drawn:

            * ``"gaussian"``: ``x~ = x - N(0, std^2)`` per element (Captum's example).
            * ``"square"``: a random square set to ``baseline`` (the paper's square removal), drawn
              uniformly among all squares of side 1 to ``square`` pixels that fit the image (as the
              authors' enumeration), all channels.
            * a callable ``perturbation(x_rows, generator)`` called once per model chunk on the
              ``(m, C, H, W)`` repeated images (rows image-major: the ``samples`` copies of image 0
              first, as Captum's ``repeat_interleave``). It returns the perturbed images ``x~``, or
              a pair ``(I, x~)`` whose ``I`` is used as given (Captum's raw ``perturb_func``).
        std: the standard deviation of the Gaussian noise, in model-space units.
        square: the largest side of the removed squares, in pixels.
        samples: perturbations per image (Captum's ``n_perturb_samples``).
        normalize: scale ``I . Phi`` by its least-squares factor ``beta`` first (Captum's
            ``normalize=True``, the authors' code): invariant to the attribution's scale.
        global_attribution: the attribution is global (Integrated Gradients, gradient x input),
            so ``I = (x - x~) / (x - baseline)`` per element (``x - x~`` where ``x = baseline``), as
            Captum's ``infidelity_perturb_func_decorator(True)``; else ``I = x - x~``.
        baseline: model-space value or tensor broadcastable to ``x``: the reference of the global
            perturbation and the fill of ``"square"``. 0 (the default) is Captum's ``baselines=None``.
        score: the class score ``F_c`` (``"logit"``, as Captum; see ``SCORES``).
        seed: seed of the perturbations (``None``: torch's global generator).

    Returns:
        :class:`InfidelityResult` with ``infidelity`` and ``beta``, each ``(B,)``.

    Shape:
        x ``(B, C, H, W)``; attribution ``(B, C, H, W)`` / ``(B, 1, H, W)`` / ``(B, H, W)``.

    Cost:
        ``B * (samples + 1)`` forwards, batched (chunks of at most ``batch_size`` images).

    Example:
        >>> attr = xt.InputXGradient(model)(x)
        >>> res = xt.metrics.infidelity(model, x, attr, global_attribution=True, samples=50)
        >>> res.infidelity                                  # (B,)
    """
    x4, _ = check_input(x)
    custom = callable(perturbation) and not isinstance(perturbation, str)
    if not custom and perturbation not in PERTURBATIONS:
        raise XaiError(f"perturbation must be one of {list(PERTURBATIONS)} or a callable (x_rows, generator) -> "
                       f"perturbed images; got {describe(perturbation)}.")
    std = _positive(std, "std")
    square = check_positive_int(square, "square")
    samples = check_positive_int(samples, "samples")
    seed = check_seed(seed)
    base = _baseline(baseline, x4)
    attr = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=None, name="infidelity")

    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress, name="infidelity")
    dev = scorer.device
    xd = scorer.x
    attr = scorer.attributions(attribution, reduce=None) if attr is None else attr.to(dev)
    base = base.to(dev)
    b, c, h, w = xd.shape
    gen = make_generator(seed, dev)

    if perturbation == "gaussian":
        blocks = _Blocks(lambda k: torch.randn((samples, c, h, w), generator=gen, device=dev, dtype=xd.dtype) * std,
                         samples)
    elif perturbation == "square":
        top = min(square, h, w)
        sides = torch.arange(1, top + 1, device=dev)
        weights = ((h - sides + 1) * (w - sides + 1)).double()

        def draw_squares(k: int) -> torch.Tensor:
            s = sides[torch.multinomial(weights, samples, replacement=True, generator=gen)]
            u = torch.rand((samples, 2), generator=gen, device=dev, dtype=torch.float64)
            t = (u[:, 0] * (h - s + 1)).long().clamp_max(h - s)
            left = (u[:, 1] * (w - s + 1)).long().clamp_max(w - s)
            return torch.stack([s, t, left], 1)

        blocks = _Blocks(draw_squares, samples)

    a = torch.empty(b * samples, dtype=torch.float64, device=dev)

    def make(start: int, stop: int):
        rows = torch.arange(start, stop, device=dev) // samples
        xr = xd[rows]
        given = None
        if custom:
            out = perturbation(xr.clone(), gen)
            if isinstance(out, (tuple, list)) and len(out) == 2:
                given = _check_perturbed(out[0], xr, "the perturbation's I")
                out = out[1]
            z = _check_perturbed(out, xr, "the perturbed images x~").to(xr.dtype)
        elif perturbation == "gaussian":
            z = xr - blocks.rows(start, stop)
        else:
            mask = square_masks(blocks.rows(start, stop), h, w)
            z = torch.where(mask, base[rows], xr)
        if given is not None:
            pert = given.double()
        elif global_attribution:
            pert = _safe_div((xr - z).double(), (xr - base[rows]).double())
        else:
            pert = (xr - z).double()
        a[start:stop] = (pert * attr[rows]).flatten(1).sum(1)
        return z, rows

    drop = scorer.clean.repeat_interleave(samples) - scorer.evaluate(b * samples, make, desc="infidelity")
    value, beta = infidelity_from_terms(a.view(b, samples), drop.view(b, samples), bool(normalize))
    return InfidelityResult(to_result(value, x4), to_result(beta, x4))


# ------------------------------------------------------------------------------------------
# Max-sensitivity
def max_sensitivity(explainer, x: torch.Tensor, target=None, *, radius: float = 0.02, samples: int = 10,
                    norm="fro", perturbation=None, model=None, seed: Optional[int] = 0,
                    batch_size: Optional[int] = None, progress: Optional[bool] = None) -> SensitivityResult:
    """Max-sensitivity (Yeh et al. 2019) with Captum's semantics (``captum.metrics.sensitivity_max``):
    ``max_j ||Phi(x + d_j) - Phi(x)|| / ||Phi(x)||`` over ``samples`` noises ``d_j`` uniform in the
    L-infinity ball of ``radius`` (a zero ``||Phi(x)||`` counts as 1), and the mean of the same
    ratios (avg-sensitivity, Bhatt et al. 2020). Lower is better.

    The class explained on the noisy copies is the clean image's (its argmax when ``target`` is
    None, taken once): the metric measures how the explanation moves, not the prediction.

    Args:
        explainer: any xai_torch explainer, or a callable ``explainer(x, target=classes) ->
            attributions`` (one attribution of a fixed shape per image).
        x, target, batch_size, progress: see :mod:`xai_torch.metrics._common`. ``batch_size`` is
            the most noisy images one explainer call sees (the explainer may split them further).
            ``target`` may also be a callable ``output -> (n,)`` scores (passed on unchanged).
        radius: half-width of the uniform noise, in model-space units (Captum's 0.02).
        samples: noisy copies per image (Captum's ``n_perturb_samples``).
        norm: ``"fro"`` (L2 of the flattened attribution, Captum's default) or a number p > 0.
        perturbation: ``None`` (uniform noise) or a callable ``perturbation(x_rows, generator) ->
            noisy images`` called once per chunk on the repeated ``(m, C, H, W)`` images (the
            ``samples`` copies of image 0 first).
        model: the model whose argmax pins the classes when ``target`` is None and ``explainer``
            is a plain callable (an xai_torch explainer reports its own classes).
        seed: seed of the noise (``None``: torch's global generator). On the CPU, seed s draws
            the same noise as Captum's default after ``torch.manual_seed(s)``.

    Returns:
        :class:`SensitivityResult` with ``max_sensitivity`` and ``avg_sensitivity``, each ``(B,)``.

    Shape:
        x ``(B, C, H, W)``; the explainer returns ``(n, ...)`` for ``n`` images.

    Cost:
        ``B * (samples + 1)`` explained images: one call on ``x``, then chunks of at most
        ``batch_size`` noisy images.

    Example:
        >>> res = xt.metrics.max_sensitivity(xt.Gradient(model), x, radius=0.02, samples=10)
        >>> res.max_sensitivity, res.avg_sensitivity          # (B,), (B,)
    """
    x4, _ = check_input(x)
    if not callable(explainer):
        raise XaiError(f"explainer must be an xai_torch explainer or a callable (x, target=) -> attributions; "
                       f"got {describe(explainer)}.")
    radius = _positive(radius, "radius")
    samples = check_positive_int(samples, "samples")
    ord_ = _norm_ord(norm)
    if perturbation is not None and not callable(perturbation):
        raise XaiError(f"perturbation must be None (uniform noise) or a callable (x_rows, generator) -> noisy "
                       f"images; got {describe(perturbation)}.")
    seed = check_seed(seed)
    batch_size = check_batch_size(batch_size)
    tgt = as_target(target, x4.shape[0])
    if tgt.k is not None:
        raise XaiError(f"max_sensitivity takes one target per image; got a ({x4.shape[0]}, {tgt.k}) target. "
                       "Call it once per target column.")
    if not isinstance(tgt, (ClassTarget, FunctionTarget)):
        raise XaiError("max_sensitivity repeats each image: give class targets or a callable that scores each "
                       f"output row on its own; got {type(tgt).__name__}.")
    xt_explainer = isinstance(explainer, Explainer)
    pin = isinstance(tgt, ClassTarget) and tgt.classes is None
    if pin and not xt_explainer and model is None:
        raise XaiError("max_sensitivity needs the clean class of each image to keep it fixed on the noisy "
                       "copies: pass target=classes, or model=the classifier (its argmax is taken once).")
    if model is not None and not callable(model):
        raise XaiError(f"model must be an nn.Module or a callable; got {describe(model)}.")

    b = x4.shape[0]
    owner = explainer.model if xt_explainer else model
    dev = model_device(owner, x4.device) if owner is not None else x4.device
    xd = x4.detach().to(dev, copy=True)

    # the clean explanation, and the classes that every noisy copy keeps
    classes = None if not isinstance(tgt, ClassTarget) or pin else tgt.classes.expand(b).to(dev)
    if xt_explainer:
        res = explainer.explain(xd.clone(), target=target)
        clean = res.attributions
        if pin:
            classes = res.targets.to(dev)
    else:
        if pin:
            classes = Scorer(model, xd, None, score="logit", batch_size=batch_size, progress=False,
                             name="max_sensitivity").classes
        clean = explainer(xd.clone(), target=_call_target(target, tgt, classes, None))
    clean = _check_attribution(clean, b, "the explainer's attribution of x").to(dev, torch.float64)

    gen = make_generator(seed, dev)
    if perturbation is None:
        blocks = _Blocks(lambda k: torch.empty((samples, *xd.shape[1:]), device=dev, dtype=xd.dtype).uniform_(
            -radius, radius, generator=gen), samples)
    n = b * samples
    ratios = torch.empty(n, dtype=torch.float64, device=dev)
    ref = torch.linalg.vector_norm(clean.flatten(1), ord=ord_, dim=1)
    ref = torch.where(ref == 0, torch.ones_like(ref), ref)

    def chunk(start: int, stop: int) -> None:
        rows = torch.arange(start, stop, device=dev) // samples
        xr = xd[rows]
        if perturbation is None:
            noisy = xr + blocks.rows(start, stop)
        else:
            noisy = _check_perturbed(perturbation(xr.clone(), gen), xr, "the perturbed images").to(xr.dtype)
        out = explainer(noisy, target=_call_target(target, tgt, classes, rows))
        out = _check_attribution(out, stop - start, "the explainer's attribution of the noisy images")
        if out.shape[1:] != clean.shape[1:]:
            raise XaiError(f"the explainer returned attributions of shape {tuple(out.shape[1:])} per noisy image "
                           f"but {tuple(clean.shape[1:])} per clean image.")
        diff = (out.to(dev, torch.float64) - clean[rows]).flatten(1)
        ratios[start:stop] = torch.linalg.vector_norm(diff, ord=ord_, dim=1) / ref[rows]

    size = batch_size if batch_size is not None else auto_batch_size(xd[0].numel(), dev)
    map_chunks(chunk, n, size, device=dev, progress=progress, desc="max_sensitivity")
    r = ratios.view(b, samples)
    return SensitivityResult(to_result(r.amax(1), x4), to_result(r.mean(1), x4))


def _call_target(target, tgt, classes: Optional[torch.Tensor], rows: Optional[torch.Tensor]):
    """The ``target`` of one explainer call: the clean classes of its rows (a ClassTarget keeps its
    score), or the user's callable unchanged."""
    if classes is None:
        return target
    c = (classes if rows is None else classes[rows]).cpu()
    return ClassTarget(c, score=target.score) if isinstance(target, ClassTarget) else c


def _check_attribution(out, n: int, what: str) -> torch.Tensor:
    if hasattr(out, "attributions") and not isinstance(out, torch.Tensor):
        out = out.attributions
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(out))
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != n or out.is_complex():
        raise XaiError(f"{what} must be a real tensor with one row per image ({n}); got {describe(out)}.")
    out = out.detach()
    if not bool(torch.isfinite(out).all()):
        raise XaiError(f"{what} has NaN or infinite values.")
    return out


# ------------------------------------------------------------------------------------------
# Sensitivity-n
def sensitivity_n(model, x: torch.Tensor, attribution, target=None, *, n=None, subsets: int = 100,
                  baseline=0.0, features="pixel", score: str = "logit", reduce: str = "sum",
                  seed: Optional[int] = 0, batch_size: Optional[int] = None,
                  progress: Optional[bool] = None) -> SensitivityNResult:
    """Sensitivity-n (Ancona et al. 2018): for each n on a grid, draw ``subsets`` random sets S of
    n features; per image and n, the Pearson correlation over the draws between the relevance
    ``sum_{i in S} R_i`` and the score drop ``F_c(x) - F_c(x with S set to the baseline)``.
    Higher is better; an attribution whose sums equal the drops for every S (gradient x input of
    a linear model with a zero baseline) has correlation 1 for every n.

    Args:
        model, x, attribution, target, reduce, batch_size, progress: see
            :mod:`xai_torch.metrics._common` (``reduce`` turns pixel attributions into one value
            per pixel; a feature's relevance is the sum over its pixels).
        n: subset sizes in features: ``None`` (about 10 log-spaced sizes from 1 to 80 % of the
            features, see :func:`sensitivity_n_grid`), an int, or a sequence of ints in [1, D].
        subsets: random subsets per image and n (at least 2).
        baseline: what removed features are set to, in model space: a number (0 = the dataset-mean
            colour for normalised inputs) or a tensor broadcastable to ``x``.
        features: ``"pixel"`` (one feature per pixel, all channels) or an int p: ``p x p`` patches
            (the last row / column cropped at the edge).
        score: the class score ``F_c`` (``"logit"`` by default; see ``SCORES``).
        seed: seed of the subsets (``None``: torch's global generator).

    Returns:
        :class:`SensitivityNResult`: ``correlation`` ``(B, G)``, the grid ``n`` ``(G,)``, and the
        ``sums`` and ``deltas`` ``(B, G, subsets)`` they come from.

    Cost:
        ``B * (G * subsets + 1)`` forwards, batched (chunks of at most ``batch_size`` images).

    Example:
        >>> attr = xt.InputXGradient(model)(x)
        >>> res = xt.metrics.sensitivity_n(model, x, attr, features=16, subsets=100)
        >>> res.correlation.mean(0)                          # the curve over res.n
    """
    x4, _ = check_input(x)
    subsets = check_positive_int(subsets, "subsets", minimum=2)
    seed = check_seed(seed)
    if features == "pixel":
        patch = 1
    elif isinstance(features, int) and not isinstance(features, bool) and features >= 1:
        patch = features
    else:
        raise XaiError(f"features must be 'pixel' or a patch size (int >= 1); got {describe(features)}.")
    b, c, h, w = x4.shape
    if patch > max(h, w):
        raise XaiError(f"features={patch} is larger than the images ({h} x {w}); use a smaller patch.")
    fmap, d = feature_map(h, w, patch)
    grid = _check_grid(n, d)
    base = _baseline(baseline, x4)
    rel = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=reduce,
                                                                     name="sensitivity_n")

    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress, name="sensitivity_n")
    dev = scorer.device
    xd = scorer.x
    rel = scorer.attributions(attribution, reduce=reduce) if rel is None else rel.to(dev)
    fmap = fmap.to(dev)
    base = base.to(dev)
    # relevance per feature (B, D)
    rel_f = torch.zeros(b, d, dtype=torch.float64, device=dev).index_add_(1, fmap, rel.flatten(1))
    counts = torch.tensor(grid, dtype=torch.long, device=dev)
    g = len(grid)
    gen = make_generator(seed, dev)
    # rows are (grid point, draw, image); one block of keys per (grid point, draw)
    blocks = _Blocks(lambda k: torch.rand((b, d), generator=gen, device=dev), b)
    sums = torch.empty(g * subsets * b, dtype=torch.float64, device=dev)

    def make(start: int, stop: int):
        idx = torch.arange(start, stop, device=dev)
        rows = idx % b
        mask_f = subset_masks(blocks.rows(start, stop), counts[idx // (subsets * b)])
        sums[start:stop] = (mask_f * rel_f[rows]).sum(1)
        mask = mask_f[:, fmap].view(-1, 1, h, w)
        return torch.where(mask, base[rows], xd[rows]), rows

    scores = scorer.evaluate(g * subsets * b, make, desc="sensitivity_n")
    drops = scorer.clean.repeat(g * subsets) - scores
    sums = sums.view(g, subsets, b).permute(2, 0, 1)
    drops = drops.view(g, subsets, b).permute(2, 0, 1)
    return SensitivityNResult(to_result(correlation(sums, drops), x4), counts.to(x4.device),
                              to_result(sums, x4), to_result(drops, x4))


def _check_grid(n, d: int) -> list[int]:
    if n is None:
        return sensitivity_n_grid(d)
    items = [n] if isinstance(n, numbers.Integral) else n
    if isinstance(items, torch.Tensor):
        items = items.tolist()
    ok = isinstance(items, (list, tuple)) and len(items) > 0 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= v <= d for v in items)
    if not ok:
        raise XaiError(f"n must be None, an int or a non-empty sequence of ints in [1, {d}] (the number of "
                       f"features); got {describe(n)}.")
    return [int(v) for v in items]


__all__ = ["InfidelityResult", "SensitivityResult", "SensitivityNResult", "infidelity", "max_sensitivity",
           "sensitivity_n", "infidelity_from_terms", "sensitivity_ratios", "sensitivity_n_grid",
           "feature_map", "subset_masks", "square_masks", "PERTURBATIONS"]
