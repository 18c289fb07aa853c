"""ROAD: RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods"), with its noisy linear imputation.

Removed pixels are not replaced by a constant (which leaks the removal mask's shape to the model)
but by the solution of a small linear system: every removed pixel equals the weighted mean of its
8 neighbours, plus a little Gaussian noise. The score of the imputed image is then read for MoRF
(most relevant first removed: a faithful attribution makes the score drop fast) and LeRF (least
relevant first removed: the score should hold).

The common arguments (model, x, attribution, target, reduce, batch_size, progress) are documented
in :mod:`xai_torch.metrics._common`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import XaiError, XaiWarning, check_choice, check_input, describe
from ._common import SCORES, Scorer, check_fraction, coerce_attribution, descending_order, is_explainer, to_result

ORDERS = ("morf", "lerf", "both")
SOLVERS = ("auto", "cg", "spsolve")
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# (row offset, column offset, weight) of the 8 neighbours: 1/6 for the 4-neighbours, 1/12 for
# the diagonals (they sum to 1).
_NEIGHBOURS = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)


# ---------------------------------------------------------------------------------------------
# Noisy linear imputation
def _neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the 8 neighbours of every pixel of ``(..., H, W)``; neighbours outside the
    image count as 0 (so ``_neighbour_sum(ones)`` is the weight of the neighbours that exist)."""
    p = F.pad(u, (1, 1, 1, 1))
    edges = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
    return edges / 6 + corners / 12


def _solve_cg(x: torch.Tensor, remove: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """The harmonic fill by conjugate gradients, matrix-free (a 3x3 stencil), batched over every
    image and channel at once. float64 ``(N, C, H, W)`` in, the filled image out.

    For each removed pixel i: ``s_i u_i - sum_{j removed} w_ij u_j = sum_{j known} w_ij x_j``, with
    ``s_i`` the weight of i's neighbours inside the image. Restricted to the removed pixels this
    matrix is symmetric positive definite (irreducibly diagonally dominant as long as every image
    keeps a known pixel), so CG with the diagonal ``s`` as (Jacobi) preconditioner applies; each
    channel of each image is its own system and has its own step sizes.
    """
    h, w = x.shape[-2:]
    r_mask = remove[:, None].to(x.dtype)
    s = _neighbour_sum(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))

    def apply(v: torch.Tensor) -> torch.Tensor:  # v is zero on the known pixels
        return r_mask * (s * v - _neighbour_sum(v))

    b = r_mask * _neighbour_sum(x * (1 - r_mask))
    goal = tol * b.flatten(2).norm(dim=2)
    goal = torch.where(goal > 0, goal, torch.full_like(goal, 1e-300))
    u = torch.zeros_like(x)
    r = b.clone()
    z = r / s
    p = z.clone()
    rz = (r * z).sum((2, 3), keepdim=True)
    done = False
    for it in range(max_iter):
        ap = apply(p)
        pap = (p * ap).sum((2, 3), keepdim=True)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(1e-300), torch.zeros_like(pap))
        u.add_(alpha * p)
        r.sub_(alpha * ap)
        if it % 8 == 7 or it == max_iter - 1:  # a host sync only every 8 steps
            if bool((r.flatten(2).norm(dim=2) <= goal).all()):
                done = True
                break
        z = r / s
        rz_new = (r * z).sum((2, 3), keepdim=True)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-300), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    if not done and bool(remove.any()):
        warnings.warn(f"noisy_linear_impute: conjugate gradients did not reach tol={tol:g} in {max_iter} "
                      "iterations; raise max_iter or use solver='spsolve'.", XaiWarning, stacklevel=3)
    return torch.where(remove[:, None], u, x)


def _solve_spsolve(x: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    """The same system, assembled with scipy.sparse and solved directly (SuperLU), one image at a
    time on the CPU (one factorisation serves all channels)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    xs = x.detach().cpu().numpy()
    ms = remove.detach().cpu().numpy()
    out = xs.copy()
    n, c, h, w = xs.shape
    for i in range(n):
        idx = np.flatnonzero(ms[i].ravel())
        k = idx.size
        if k == 0:
            continue
        var = np.full(h * w, -1, dtype=np.int64)
        var[idx] = np.arange(k)
        row, col = np.divmod(idx, w)
        flat = xs[i].reshape(c, h * w)
        diag = np.zeros(k)
        rhs = np.zeros((k, c))
        rows, cols, vals = [np.arange(k)], [np.arange(k)], []
        for dr, dc, weight in _NEIGHBOURS:
            rr, cc = row + dr, col + dc
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            eq = np.flatnonzero(inside)
            nb = rr[inside] * w + cc[inside]
            diag[eq] += weight
            unknown = var[nb] >= 0
            rows.append(eq[unknown])
            cols.append(var[nb[unknown]])
            vals.append(np.full(int(unknown.sum()), -weight))
            np.add.at(rhs, eq[~unknown], weight * flat[:, nb[~unknown]].T)
        a = sp.csc_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(k, k))
        sol = spsolve(a, rhs).reshape(k, c)
        out[i].reshape(c, h * w)[:, idx] = sol.T
    return torch.from_numpy(out).to(x.device)


def _linear_fill(x: torch.Tensor, remove: torch.Tensor, solver: str, tol: float,
                 max_iter: Optional[int]) -> torch.Tensor:
    """Noise-free imputation of ``(N, C, H, W)`` (any float dtype) as float64 on x.device."""
    x64 = x.detach().to(torch.float64)
    if solver == "auto":
        solver = "cg" if x.device.type != "cpu" else "spsolve"
    if solver == "spsolve":
        return _solve_spsolve(x64, remove)
    h, w = x.shape[-2:]
    return _solve_cg(x64, remove, tol, max_iter if max_iter is not None else 50 * (h + w) + 100)


def _check_solver(solver: str, tol: object, max_iter: object) -> None:
    check_choice(solver, "solver", SOLVERS)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0 < tol < 1):
        raise XaiError(f"tol must be a number in (0, 1) (the relative residual of the solve); got {describe(tol)}.")
    if max_iter is not None and (isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1):
        raise XaiError(f"max_iter must be None (automatic) or an integer >= 1; got {describe(max_iter)}.")


def _check_noise(noise: object) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise XaiError(f"noise must be a finite number >= 0 (the standard deviation added to imputed pixels); "
                       f"got {describe(noise)}.")
    return float(noise)


def noisy_linear_impute(x: torch.Tensor, remove_mask: torch.Tensor, noise: float = 0.01,
                        generator: Optional[torch.Generator] = None, *, solver: str = "auto",
                        tol: float = 1e-8, max_iter: Optional[int] = None) -> torch.Tensor:
    """ROAD's noisy linear imputation: fill the removed pixels from the known ones.

    Every removed pixel becomes the weighted mean of its 8 neighbours (weight 1/6 for the
    4-neighbours, 1/12 for the diagonals). Neighbours outside the image drop out and the mean is
    renormalised by the weight of those that remain (as in Rong et al.'s and pytorch-grad-cam's
    ``NoisyLinearImputer``). Known pixels stay fixed. This is one sparse linear system per image,
    shared by all channels. Then ``N(0, noise²)`` is added to the imputed pixels only (absolute
    noise, in the tensor's space).

    Args:
        x: images ``(B, C, H, W)`` (or ``(C, H, W)``), any float dtype, on any device.
        remove_mask: bool ``(B, H, W)`` (``(H, W)`` for one image): True where a pixel is removed.
            Note that pytorch-grad-cam's imputer takes the opposite mask (1 = keep). Every image
            must keep at least one pixel.
        noise: standard deviation of the Gaussian noise on the imputed pixels (0: none).
        generator: a ``torch.Generator`` on ``x.device`` for the noise (``None``: the global one).
        solver: ``"cg"`` (batched conjugate gradients on x's device, matrix-free), ``"spsolve"``
            (scipy's direct sparse solve, per image on the CPU) or ``"auto"`` (``"cg"`` on an
            accelerator, ``"spsolve"`` on the CPU, where it is the faster one).
        tol: relative residual at which CG stops (per image and channel); ``spsolve`` is exact.
        max_iter: CG's iteration cap (``None``: ``50 * (H + W) + 100``); a warning says when it
            is hit.

    Returns:
        The imputed images, a new tensor with x's shape, dtype and device (x is not modified).
        The solve runs in float64.

    Shape:
        ``(B, C, H, W)``, ``(B, H, W)`` -> ``(B, C, H, W)``.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> remove = torch.rand(2, 32, 32) < 0.5
        >>> filled = noisy_linear_impute(x, remove, noise=0.0)
        >>> bool((filled[~remove[:, None].expand_as(x)] == x[~remove[:, None].expand_as(x)]).all())
        True
    """
    x4, unbatched = check_input(x)
    if not isinstance(remove_mask, torch.Tensor) or remove_mask.dtype != torch.bool:
        raise XaiError(f"remove_mask must be a bool tensor (True = removed); got {describe(remove_mask)}.")
    m = remove_mask[None] if (unbatched and remove_mask.ndim == 2) else remove_mask
    b, _, h, w = x4.shape
    if m.shape != (b, h, w):
        raise XaiError(f"remove_mask must have shape ({b}, {h}, {w}) to match x of shape {tuple(x.shape)}; "
                       f"got {describe(remove_mask)}.")
    noise = _check_noise(noise)
    _check_solver(solver, tol, max_iter)
    m = m.to(x4.device)
    if bool(m.flatten(1).all(1).any()):
        raise XaiError("remove_mask removes every pixel of an image; keep at least one to impute from.")
    out = _linear_fill(x4, m, solver, tol, max_iter)
    if noise > 0:
        draw = torch.randn(x4.shape, generator=generator, device=x4.device,
                           dtype=torch.float64 if x4.dtype == torch.float64 else torch.float32)
        out = out + torch.where(m[:, None], draw.double() * noise, 0.0)
    out = out.to(x4.dtype)
    return out[0] if unbatched else out


# ---------------------------------------------------------------------------------------------
# ROAD
@dataclass
class RoadResult:
    """ROAD curves per image (float64, on ``x.device``).

    Attributes:
        fractions: ``(F,)`` the fractions of pixels removed, as asked.
        removed: ``(F,)`` long, the number of pixels each fraction removes (``round(f * H * W)``).
        morf: ``(B, F)`` score after removing the most relevant pixels first (``None`` for
            ``order="lerf"``). Lower means a more faithful attribution.
        lerf: ``(B, F)`` score after removing the least relevant pixels first (``None`` for
            ``order="morf"``). Higher is better.
        morf_mean: ``(B,)`` mean of ``morf`` over the fractions (pytorch-grad-cam's averager).
        lerf_mean: ``(B,)`` mean of ``lerf`` over the fractions.
        combined: ``(B,)`` ``mean(lerf - morf)`` over the fractions (``order="both"`` only):
            positive and larger is better. pytorch-grad-cam's ``ROADCombined`` is half of this.
        clean: ``(B,)`` the score of each clean image.
        targets: ``(B,)`` long, the class scored in each image (``None`` for a callable target).
    """

    fractions: torch.Tensor
    removed: torch.Tensor
    morf: Optional[torch.Tensor]
    lerf: Optional[torch.Tensor]
    morf_mean: Optional[torch.Tensor]
    lerf_mean: Optional[torch.Tensor]
    combined: Optional[torch.Tensor]
    clean: torch.Tensor
    targets: Optional[torch.Tensor]


def _check_fractions(fractions: Any) -> list[float]:
    if isinstance(fractions, torch.Tensor):
        fractions = fractions.tolist()
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (Sequence, np.ndarray)) or len(fractions) == 0:
        raise XaiError(f"fractions must be a non-empty sequence of numbers in (0, 1); got {describe(fractions)}.")
    return [check_fraction(f, f"fractions[{i}]", low_open=True, high_open=True) for i, f in enumerate(fractions)]


def _noise_seed(seed: int, order: int, fraction: int, image: int) -> int:
    """A generator seed per (order, fraction, image): the noise of an imputed image does not
    depend on how the rows are split into model calls."""
    return int(np.random.SeedSequence([seed, order, fraction, image]).generate_state(1, np.uint64)[0] >> 1)


def road(model: Any, x: torch.Tensor, attribution: Any, target: Any = None, *,
         fractions: Sequence[float] = DEFAULT_FRACTIONS, order: str = "both", score: str = "softmax",
         noise: float = 0.01, seed: int = 0, reduce: str = "sum", solver: str = "auto", tol: float = 1e-8,
         batch_size: Optional[int] = None, progress: Optional[bool] = None) -> RoadResult:
    """ROAD (Rong et al. 2022): the score of the target class after removing a fraction of the
    pixels, most relevant first (MoRF) and least relevant first (LeRF), with removed pixels
    filled by :func:`noisy_linear_impute` instead of a constant.

    For each fraction ``f``, ``k = round(f * H * W)`` pixels are removed (all channels): MoRF
    removes the ``k`` first pixels of :func:`descending_order` of the relevance, LeRF the ``k``
    last ones. Ties are broken by that stable order (raster order among equal values), so
    exactly ``k`` pixels go even when the attribution has plateaus. The imputed images are scored
    for the clean image's class (or ``target``) by :class:`Scorer`.

    Args:
        model, x, attribution, target, reduce, batch_size, progress: see
            :mod:`xai_torch.metrics._common`.
        fractions: fractions of the pixels removed, each in (0, 1), in any order.
        order: ``"morf"``, ``"lerf"`` or ``"both"``.
        score: ``"softmax"`` (probability), ``"logit"``, ``"log_softmax"`` or ``"accuracy"``
            (1.0 when the top-1 class is the target: the paper's curves with true labels as
            ``target``). On a one-logit model the probability kinds are the sigmoid's (see
            :data:`xai_torch.targets.SCORES`).
        noise: standard deviation of the imputation noise, absolute in x's space (the paper and
            pytorch-grad-cam use 0.01 on normalised images).
        seed: seeds the noise; each imputed image draws from its own generator seeded from
            ``(seed, order, fraction, image)``, so results do not depend on ``batch_size``.
        solver, tol: how the imputation system is solved (see :func:`noisy_linear_impute`).

    Returns:
        A :class:`RoadResult`.

    Shape:
        x ``(B, C, H, W)``, attribution ``(B, C|1, H, W)`` or ``(B, H, W)`` -> curves ``(B, F)``.
        Cost: ``B`` clean forwards plus ``B * F`` per order (one per image, fraction and
        order, batched), and one linear solve per imputed image.

    Reproducing pytorch-grad-cam (jacobgil) numbers:
        Its ``ROADMostRelevantFirst(p)`` keeps the pixels with ``cam < percentile(cam, p)``, so it
        removes the *top (100 - p) %*; ``ROADLeastRelevantFirst(p)`` removes the *bottom
        (100 - p) %*; and it scores the logit change ``logit(x_imp) - logit(x)``. The equivalent
        here is ``fractions=[1 - p / 100 for p in percentiles]``, ``score="logit"``, then
        ``res.morf - res.clean[:, None]`` (and the same for ``lerf``). Its averagers are
        ``morf_mean - clean`` / ``lerf_mean - clean`` and its ``ROADCombined`` is
        ``combined / 2``. The counts can differ by a pixel (``np.percentile`` interpolates, we
        round ``f * H * W``), and where the attribution has ties at the threshold it removes
        all of them while we remove exactly ``k``; its noise comes from the global RNG.

    Example:
        >>> attributions = xt.IntegratedGradients(model)(x)                # (B, C, H, W)
        >>> res = road(model, x, attributions, fractions=(0.2, 0.5, 0.8))
        >>> res.morf.shape, res.lerf.shape, res.combined.shape          # (B, 3), (B, 3), (B,)
        >>> jacobgil_morf = road(model, x, attributions, fractions=(0.8, 0.5, 0.2), score="logit",
        ...                      order="morf")                           # its percentiles 20, 50, 80
        >>> jacobgil_morf.morf - jacobgil_morf.clean[:, None]
    """
    x4, _ = check_input(x)
    fr = _check_fractions(fractions)
    check_choice(order, "order", ORDERS)
    check_choice(score, "score", SCORES)
    noise = _check_noise(noise)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise XaiError(f"seed must be an integer >= 0; got {describe(seed)}.")
    _check_solver(solver, tol, None)
    b, c, h, w = x4.shape
    hw = h * w
    counts = [int(math.floor(f * hw + 0.5)) for f in fr]
    if max(counts) >= hw:
        raise XaiError(f"fractions up to {max(fr)} remove every pixel of a {h}x{w} image; nothing would be "
                       "left to impute from. Use smaller fractions or larger images.")
    relevance = None
    explainer = is_explainer(attribution)
    if not explainer:  # check the attribution before any model call
        relevance = coerce_attribution(attribution, x4, reduce=reduce, name="road")

    scorer = Scorer(model, x4, target, score=score, batch_size=batch_size, progress=progress, name="road")
    dev = scorer.device
    relevance = scorer.attributions(attribution, reduce) if relevance is None else relevance.to(dev)
    ranks = torch.empty((b, hw), dtype=torch.long, device=dev)
    ranks.scatter_(1, descending_order(relevance), torch.arange(hw, device=dev).expand(b, hw))

    orders = ["morf", "lerf"] if order == "both" else [order]
    order_ids = [ORDERS.index(o) for o in orders]  # morf 0, lerf 1 (seeds the noise)
    is_lerf = torch.tensor([o == "lerf" for o in orders], device=dev)
    nf = len(fr)
    k_t = torch.tensor(counts, dtype=torch.long, device=dev)

    def make(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(start, stop, device=dev)
        img = rows % b
        fi = (rows // b) % nf
        oi = rows // (b * nf)
        k = k_t[fi][:, None]
        rank = ranks[img]
        remove = torch.where(is_lerf[oi][:, None], rank >= hw - k, rank < k).view(-1, h, w)
        filled = _linear_fill(scorer.x[img], remove, solver, tol, None)
        if noise > 0:
            draws = []
            for o, f, i in zip(oi.tolist(), fi.tolist(), img.tolist()):
                g = torch.Generator(device=dev).manual_seed(_noise_seed(seed, order_ids[o], f, i))
                draws.append(torch.randn((c, h, w), generator=g, device=dev, dtype=torch.float32))
            filled = filled + torch.where(remove[:, None], torch.stack(draws).double() * noise, 0.0)
        return filled.to(scorer.x.dtype), img

    scores = scorer.evaluate(len(orders) * nf * b, make, desc="road").view(len(orders), nf, b).transpose(1, 2)
    curves = dict(zip(orders, scores))
    morf, lerf = curves.get("morf"), curves.get("lerf")
    return RoadResult(
        fractions=torch.tensor(fr, dtype=torch.float64, device=x4.device),
        removed=torch.tensor(counts, dtype=torch.long, device=x4.device),
        morf=None if morf is None else to_result(morf, x4),
        lerf=None if lerf is None else to_result(lerf, x4),
        morf_mean=None if morf is None else to_result(morf.mean(1), x4),
        lerf_mean=None if lerf is None else to_result(lerf.mean(1), x4),
        combined=None if morf is None or lerf is None else to_result((lerf - morf).mean(1), x4),
        clean=to_result(scorer.clean, x4),
        targets=None if scorer.classes is None else scorer.classes.to(x4.device),
    )


__all__ = ["noisy_linear_impute", "road", "RoadResult", "ORDERS", "SOLVERS"]
