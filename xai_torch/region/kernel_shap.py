"""KernelSHAP on superpixels (Lundberg & Lee 2017), batched.

Shapley values of the superpixels of each image, for the game ``v(z) = F(image with the
superpixels of z, the rest hidden)``: the weighted least-squares fit of ``v(z) - v(0)`` by
``z . phi`` under the Shapley kernel ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))``, with the
efficiency constraint ``sum(phi) = v(1) - v(0)`` imposed exactly (the kernel's infinite
weights at ``|z| in {0, M}``). With every coalition enumerated the fit *is* the Shapley values.

Coalitions, per image with M superpixels and a budget of ``samples``:

* ``samples >= 2^M - 2``: all of them (exact Shapley values);
* else shap's scheme: coalition sizes whose share of the kernel mass covers all their
  subsets are enumerated from the outside in (size s with its complement size M - s), and the
  rest of the budget is drawn at random, sizes in proportion to the kernel, each draw paired
  with its complement; a repeated draw adds weight instead of a forward, and the random block
  carries the kernel mass the enumerated sizes leave.

The solve (KKT system of the constrained least squares) is float64 torch, batched over images
and targets.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, XaiWarning, check_positive_int, describe
from .superpixel import Design, Fit, SuperpixelExplainer, SuperpixelExplanation

#: ``samples="auto"``: shap's ``2 M + 2048`` coalitions.
AUTO_BASE = 2048


@dataclass
class KernelSHAPExplanation(SuperpixelExplanation):
    """:class:`~xai_torch.region.superpixel.SuperpixelExplanation` of :class:`KernelSHAP`.

    Attributes:
        base_values: ``(B, [K])`` target score with every superpixel hidden, ``v(0)``; the
            weights add up to ``scores - base_values``.
        exact: ``(B,)`` bool, whether every coalition was evaluated (the weights are then the
            exact Shapley values of the game).
        coalitions: ``(B,)`` coalitions evaluated per image besides the image itself and the
            fully hidden one.
    """

    base_values: Optional[torch.Tensor] = None
    exact: Optional[torch.Tensor] = None
    coalitions: Optional[torch.Tensor] = None


@dataclass
class ShapleyDesign(Design):
    """KernelSHAP's coalitions with their kernel ``weights`` ``(B, N)`` float64 (0 on the image,
    the fully hidden row and padding), and per image whether they are ``exact`` and how many
    ``coalitions`` there are."""

    weights: torch.Tensor
    exact: torch.Tensor
    coalitions: torch.Tensor


@dataclass
class ShapleyFit(Fit):
    """KernelSHAP's Shapley values (``weights``) with ``base_values`` per image and target, and
    ``exact`` / ``coalitions`` per image (see :class:`KernelSHAPExplanation`)."""

    base_values: torch.Tensor
    exact: torch.Tensor
    coalitions: torch.Tensor


def shapley_kernel(m: int, sizes: torch.Tensor) -> torch.Tensor:
    """The Shapley kernel ``(M - 1) / (C(M, s) s (M - s))`` of coalitions of ``sizes`` (0 < s < M),
    float64."""
    comb = torch.tensor([float(math.comb(m, s)) for s in range(m + 1)], dtype=torch.float64, device=sizes.device)
    s = sizes.to(torch.float64)
    return (m - 1) / (comb[sizes] * s * (m - s))


def _with_complements(z: torch.Tensor) -> torch.Tensor:
    """Rows ``z_0, ~z_0, z_1, ~z_1, ...``."""
    return torch.stack([z, ~z], 1).reshape(-1, z.shape[1])


def shapley_coalitions(m: int, budget: int, generator: Optional[torch.Generator] = None,
                       device: Union[str, torch.device] = "cpu") -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The coalitions KernelSHAP evaluates for ``m`` players and a budget of ``budget`` (see
    the module doc), without the empty and the full one.

    Returns:
        ``(z, weights, exact)``: ``(n, m)`` bool coalitions (``n <= budget``), ``(n,)`` float64
        kernel weights summing to 1, and whether every coalition is there.
    """
    device = torch.device(device)
    if m < 2:
        raise XaiError(f"KernelSHAP needs at least 2 players; got {m}.")
    if m < 62 and budget >= 2**m - 2:  # every coalition
        codes = torch.arange(1, 2**m - 1, device=device)
        z = ((codes[:, None] >> torch.arange(m, device=device)) & 1).to(torch.bool)
        w = shapley_kernel(m, z.sum(1))
        return z, w / w.sum(), True
    top, paired = m // 2, (m - 1) // 2  # sizes 1..top are drawn; 1..paired have a distinct complement size
    sizes = torch.arange(1, top + 1, device=device)
    per_size = (m - 1) / (sizes * (m - sizes)).to(torch.float64)  # kernel mass of one size, up to a factor
    mass = per_size * torch.where(sizes <= paired, 2.0, 1.0).to(torch.float64)
    mass = mass / mass.sum()  # of size s and its complement together
    zs, ws, left, full = [], [], budget, 0
    for s in range(1, top + 1):  # whole sizes, from the outside in, while their share covers them
        count = math.comb(m, s) * (2 if s <= paired else 1)
        share = float(mass[s - 1] / mass[s - 1:].sum())
        if left * share / count < 1 - 1e-8:
            break
        picks = torch.combinations(torch.arange(m, device=device), s) if s > 1 else \
            torch.arange(m, device=device)[:, None]
        z = torch.zeros(picks.shape[0], m, dtype=torch.bool, device=device).scatter_(1, picks, True)
        zs.append(_with_complements(z) if s <= paired else z)
        ws.append(torch.full((count,), float(mass[s - 1]) / count, dtype=torch.float64, device=device))
        left -= count
        full = s
    if full < top and left > 0:
        z, w = _random_coalitions(m, left, sizes[full:], per_size[full:], paired, generator)
        zs.append(z)
        ws.append(w * (mass[full:].sum() / w.sum()))
    z = torch.cat(zs) if zs else torch.zeros(0, m, dtype=torch.bool, device=device)
    w = torch.cat(ws) if ws else torch.zeros(0, dtype=torch.float64, device=device)
    return z, w / w.sum() if w.numel() else w, False


def _random_coalitions(m: int, left: int, sizes: torch.Tensor, per_size: torch.Tensor, paired: int,
                       generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """``left`` coalitions drawn at random (sizes ~ ``per_size``, each with its complement when
    its size is paired), distinct, weighted by how often they were drawn until the budget was
    spent."""
    device = sizes.device
    p = per_size / per_size.sum()
    draws = torch.zeros(0, m, dtype=torch.bool, device=device)
    for _ in range(64):  # nearly always one round; many when the budget nears every coalition
        d = max(4 * left, 16)
        size = sizes[torch.multinomial(p, d, replacement=True, generator=generator)]
        ranks = torch.rand(d, m, generator=generator, device=device).argsort(1).argsort(1)
        draws = torch.cat([draws, ranks < size[:, None]])
        unique, inverse = torch.unique(draws, dim=0, return_inverse=True)
        first = torch.full((unique.shape[0],), draws.shape[0], device=device, dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(draws.shape[0], device=device), "amin")
        order = first.argsort()  # the distinct draws in the order they came
        pair = unique[order].sum(1) <= paired
        spent = torch.where(pair, 2, 1).cumsum(0)
        if int(spent[-1]) >= left:
            break
    kept = int((spent <= left).sum())
    partial = kept < order.shape[0] and int(spent[kept - 1] if kept else 0) < left  # room for S, not ~S
    last = kept + int(partial)
    cutoff = int(first[order[last - 1]])  # draws after this one came when the budget was spent
    times = torch.bincount(inverse[:cutoff + 1], minlength=unique.shape[0]).to(torch.float64)
    chosen, count, pair = unique[order[:last]], times[order[:last]], pair[:last].clone()
    if partial:
        pair[-1] = False
    z = torch.cat([chosen, ~chosen[pair]])
    w = torch.cat([count, count[pair]])
    return z, w


def constrained_wls(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, total: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """``argmin_phi sum_n w_n (y_n - z_n . phi)^2`` subject to ``sum(phi) = total``, batched,
    through its KKT system.

    Args:
        z: ``(B, N, S)`` 0/1 features (padding columns all 0).
        y: ``(B, N, K)`` targets, ``w``: ``(B, N)`` weights, ``total``: ``(B, K)``.
        mask: ``(B, S)`` bool, the real features (padding ones get ``phi = 0``).

    Returns:
        ``(B, K, S)`` float64. A singular system (too few coalitions) gets the minimum-norm
        solution, with a warning.
    """
    z, y, w = z.to(torch.float64), y.to(torch.float64), w.to(torch.float64)
    b, _, s = z.shape
    ones = mask.to(torch.float64)
    zw = z.transpose(1, 2) * w[:, None]
    kkt = torch.zeros(b, s + 1, s + 1, dtype=torch.float64, device=z.device)
    kkt[:, :s, :s] = zw @ z + torch.diag_embed(1 - ones)
    kkt[:, :s, s] = ones
    kkt[:, s, :s] = ones
    rhs = torch.cat([zw @ y, total.to(torch.float64)[:, None]], 1)
    # through the SVD: a rank-deficient system (fewer coalitions than superpixels) gets the
    # minimum-norm solution, which still meets the constraint (the KKT system is consistent)
    u, sv, vh = torch.linalg.svd(kkt)
    cut = sv[:, :1] * (s + 1) * torch.finfo(torch.float64).eps
    inverse = torch.where(sv > cut, 1 / sv, torch.zeros_like(sv))
    sol = vh.transpose(1, 2) @ (inverse[..., None] * (u.transpose(1, 2) @ rhs))
    if bool((sv <= cut).any()):
        warnings.warn("KernelSHAP: too few coalitions to determine every superpixel's value (singular "
                      "system); using the minimum-norm solution. Give more samples.", XaiWarning, stacklevel=6)
    phi: torch.Tensor = sol[:, :s].transpose(1, 2) * ones[:, None]
    return phi


class KernelSHAP(SuperpixelExplainer):
    """KernelSHAP on superpixels: Shapley values of the superpixels, with the efficiency
    constraint ``sum(weights) = F(x) - F(all hidden)`` solved exactly. When the budget covers
    every coalition (``samples >= 2^M - 2``) they are the exact Shapley values; otherwise
    shap's enumeration of whole coalition sizes plus paired random sampling.

    Differences from shap's ``KernelExplainer``: no feature selection (shap >= 0.47 keeps 10
    features by default; this is its ``l1_reg=False``), one hidden image per image (``hide``)
    unless a ``background`` set is given, torch random draws with a seed.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        samples: coalitions per image besides the image itself and the fully hidden one
            (shap's ``nsamples``); ``"auto"``: ``2 M + 2048`` for M superpixels.
        background: ``None``, or ``(N, C, H, W)`` model-space images (shap's ``data``, with the
            superpixels as feature groups): a hidden superpixel then shows the background
            image's pixels, each coalition is scored on all ``N`` background images (batched on
            the model's device) and its value is the mean score, so ``base_values`` is the mean
            score of the background. Replaces ``hide``.
        hide, segmenter, output, normalize, input_range, blur_sigma, seed: see
            :mod:`xai_torch.region.superpixel`.

    Returns:
        ``(B, 1, H, W)`` maps (``(B, K, 1, H, W)`` for ``(B, K)`` targets): each pixel carries
        its superpixel's Shapley value. ``explain`` returns a :class:`KernelSHAPExplanation`
        (segments, per-superpixel values, base values, whether they are exact).

    Cost:
        ``min(samples, 2^M - 2) + 2`` forwards per image in no-grad chunks of ``batch_size``
        (``N (min(samples, 2^M - 2) + 1) + 1`` with a background of N images), plus the
        segmentation and an ``(M + 1)``-square solve.

    Example:
        >>> shap = xt.region.KernelSHAP(model, seed=0, segmenter="slic")
        >>> res = shap.explain(x, target=281)
        >>> res.weights.sum(-1), res.scores - res.base_values   # equal
    """

    def __init__(self, model: Any, *, samples: Union[int, str] = "auto", background: Optional[torch.Tensor] = None,
                 hide: Any = "mean",
                 segmenter: Any = "quickshift", output: str = "softmax", normalize: Any = None,
                 input_range: Any = None, blur_sigma: float = 10.0,
                 seed: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, hide=hide, segmenter=segmenter, output=output, normalize=normalize,
                         input_range=input_range, blur_sigma=blur_sigma, seed=seed, batch_size=batch_size,
                         progress=progress)
        self.samples: Union[int, str]
        if isinstance(samples, str):
            if samples != "auto":
                raise XaiError(f"samples must be 'auto' or an integer >= 1; got {describe(samples)}.")
            self.samples = samples
        else:
            self.samples = check_positive_int(samples, "samples")
        if background is not None and (not isinstance(background, torch.Tensor) or background.ndim != 4
                                       or not background.is_floating_point() or background.shape[0] < 1):
            got = f"shape {tuple(background.shape)}, {background.dtype}" if isinstance(background, torch.Tensor) \
                else describe(background)
            raise XaiError(f"background must be a float tensor (N, C, H, W) of N >= 1 model-space images; got {got}.")
        self.background = background

    def _config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"samples": self.samples}
        if self.background is not None:
            cfg["background"] = f"tensor{tuple(self.background.shape)}"
        return {**cfg, **super()._config()}

    def _background(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if self.background is None:
            return None
        if tuple(self.background.shape[1:]) != tuple(x.shape[1:]):
            raise XaiError(f"background must be (N, {', '.join(map(str, x.shape[1:]))}) images shaped like x; "
                           f"got {tuple(self.background.shape)}.")
        if not bool(torch.isfinite(self.background).all()):
            raise XaiError("background has NaN or infinite values.")
        return self.background.detach().to(device=x.device, dtype=x.dtype)

    def budget(self, m: int) -> int:
        """Coalitions evaluated for ``m`` superpixels, besides the full and the empty one."""
        budget = 2 * m + AUTO_BASE if isinstance(self.samples, str) else self.samples
        return min(budget, 2**m - 2) if m < 62 else budget

    def _design(self, counts: list[int], generator: Optional[torch.Generator],
                device: torch.device) -> ShapleyDesign:
        parts = [shapley_coalitions(m, self.budget(m), generator, device) for m in counts]
        rows = torch.tensor([p[0].shape[0] + 2 for p in parts], dtype=torch.long)
        z = torch.zeros(len(counts), int(rows.max()), max(counts), dtype=torch.bool, device=device)
        w = torch.zeros(len(counts), int(rows.max()), dtype=torch.float64, device=device)
        for i, (zi, wi, _) in enumerate(parts):  # row 0: the image, row 1: all hidden, then the coalitions
            n, m = zi.shape
            z[i, 0, :m] = True
            z[i, 2:n + 2, :m] = zi
            w[i, 2:n + 2] = wi
        exact = torch.tensor([p[2] for p in parts])
        return ShapleyDesign(z, rows, w, exact, rows - 2)

    def _fit(self, design: Design, y: torch.Tensor, counts: torch.Tensor) -> ShapleyFit:
        assert isinstance(design, ShapleyDesign)
        base = y[:, 1]  # (B, K)
        mask = torch.arange(design.z.shape[2], device=counts.device)[None] < counts[:, None]
        phi = constrained_wls(design.z, y - base[:, None], design.weights, y[:, 0] - base, mask)
        return ShapleyFit(phi, base, design.exact, design.coalitions)

    def _result(self, **kwargs: Any) -> KernelSHAPExplanation:
        return KernelSHAPExplanation(**kwargs)
