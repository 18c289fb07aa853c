"""Infidelity (Yeh et al. 2019; Captum ``metrics.infidelity``): how well ``I . Phi`` predicts the
score drop ``F(x) - F(x - I)`` for random perturbations ``I``.

Arguments shared by every metric (``model``, ``x``, ``attribution``, ``target``, ``batch_size``,
``progress``) are documented in :mod:`xai_torch.metrics._common`. Randomness: every draw comes
from one ``torch.Generator`` seeded with ``seed`` on the model's device, in fixed blocks (one
block per image), so a seed gives the same result bit-for-bit on the same device whatever
``batch_size`` is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, check_input, check_positive_int, describe
from ..seeding import check_seed, make_generator
from ._common import Scorer, coerce_attribution, is_explainer, to_result
from ._random import Blocks, check_perturbed, check_positive, fill_baseline

PERTURBATIONS = ("gaussian", "square")


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


def infidelity_from_terms(a: torch.Tensor, b: torch.Tensor,
                          normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Infidelity from ``a = I.Phi`` and ``b = F(x) - F(x - I)``, both ``(B, S)``.

    Returns:
        ``(infidelity, beta)``, each ``(B,)``: ``mean_s (beta a - b)^2`` with ``beta = 1``, or with
        ``normalize=True`` ``beta = sum(a b) / sum(a^2)`` (a zero denominator counts as 1, as
        Captum). The mean of the squared residual is taken directly, not through Captum's
        expansion ``beta^2 E[a^2] - 2 beta E[ab] + E[b^2]``: equal in exact arithmetic, but the
        expansion cancels to rounding noise (~1e-16 of ``E[b^2]``) when the attribution is exact.

    Example:
        >>> infidelity_from_terms(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 4.0]]), normalize=True)
        (tensor([0.]), tensor([2.]))
    """
    if not normalize:
        return (a - b).pow(2).mean(-1), torch.ones(a.shape[:-1], dtype=a.dtype, device=a.device)
    aa, ab = a.pow(2).sum(-1), (a * b).sum(-1)
    beta = ab / torch.where(aa != 0, aa, torch.ones_like(aa))
    return (beta[..., None] * a - b).pow(2).mean(-1), beta


def square_masks(params: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(m, 1, H, W)`` bool squares from ``params`` ``(m, 3)`` = (side, top, left)."""
    side, top, left = params[:, :1], params[:, 1:2], params[:, 2:3]
    ii = torch.arange(h, device=params.device)
    jj = torch.arange(w, device=params.device)
    rows = (ii >= top) & (ii < top + side)
    cols = (jj >= left) & (jj < left + side)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / torch.where(den != 0, den, torch.ones_like(den))


def infidelity(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *,
               perturbation: Union[str, Callable[..., Any]] = "gaussian", std: float = 0.003,
               square: int = 10, samples: int = 10, normalize: bool = False, global_attribution: bool = False,
               baseline: Union[float, torch.Tensor] = 0.0, score: str = "logit", seed: Optional[int] = 0,
               batch_size: Optional[int] = None, progress: Optional[bool] = None) -> InfidelityResult:
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
    perturb = perturbation if callable(perturbation) and not isinstance(perturbation, str) else None
    if perturb is None and perturbation not in PERTURBATIONS:
        raise XaiError(f"perturbation must be one of {list(PERTURBATIONS)} or a callable (x_rows, generator) -> "
                       f"perturbed images; got {describe(perturbation)}.")
    std = check_positive(std, "std")
    square = check_positive_int(square, "square")
    samples = check_positive_int(samples, "samples")
    seed = check_seed(seed)
    base = fill_baseline(baseline, x4)
    attr = None if is_explainer(attribution) else coerce_attribution(attribution, x4, reduce=None, name="infidelity")

    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress, name="infidelity")
    dev = scorer.device
    xd = scorer.x
    attr = scorer.attributions(attribution, reduce=None) if attr is None else attr.to(dev)
    base = base.to(dev)
    b, c, h, w = xd.shape
    gen = make_generator(seed, dev)

    if perturbation == "gaussian":
        blocks = Blocks(lambda k: torch.randn((samples, c, h, w), generator=gen, device=dev, dtype=xd.dtype) * std,
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

        blocks = Blocks(draw_squares, samples)

    a = torch.empty(b * samples, dtype=torch.float64, device=dev)

    def make(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(start, stop, device=dev) // samples
        xr = xd[rows]
        given = None
        if perturb is not None:
            out = perturb(xr.clone(), gen)
            if isinstance(out, (tuple, list)) and len(out) == 2:
                given = check_perturbed(out[0], xr, "the perturbation's I")
                out = out[1]
            z = check_perturbed(out, xr, "the perturbed images x~").to(xr.dtype)
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


__all__ = ["InfidelityResult", "infidelity", "infidelity_from_terms", "square_masks", "PERTURBATIONS"]
