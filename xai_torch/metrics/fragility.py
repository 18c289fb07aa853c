"""Fragility of explanations (Ghorbani et al. 2019, "Interpretation of Neural Networks is
Fragile"): a small perturbation that keeps the predicted class can move the explanation far.

:func:`fragility` runs a bounded, seeded iterative attack in the L-infinity ball of radius
``epsilon`` around each image. Every step is checked on the real model: a step that changes the
predicted class is rejected for that image. The attack lowers the top-k intersection with the
original map (``objective="topk"``, Ghorbani's top-k attack), the rank correlation
(``"spearman"``) or moves the centre of mass (``"mass_center"``):

* ``method="gradient"``: projected sign-gradient steps on a differentiable stand-in of the
  explainer (double backward through a softplus copy of the model; see
  :mod:`xai_torch.metrics.fragility_maps` for the explainers it knows);
* ``method="search"``: a gradient-free, seeded random search (each step tries a random sign
  perturbation of ``step_size`` per image and keeps it when the real map moved further), for
  every other explainer (LIME, RISE, Occlusion, CAMs...).

The result compares with a control: one random sign perturbation of the full budget
``epsilon`` (the "random perturbation" baseline of the paper).

See :mod:`xai_torch.metrics._common` for the arguments every metric shares.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from ..errors import XaiError, check_choice, check_input, check_positive_int, describe
from ..runner import ModelRunner, warn_if_training
from ..seeding import check_seed, derive_seed, make_generator
from ..targets import ClassTarget, as_target, class_output
from ._common import REDUCTIONS, reduce_channels, to_result
from .fragility_maps import (
    centers,
    differentiable,
    measured,
    score,
    softplus_copy,
    stand_in,
    surrogate,
    top_mask,
)
from .invariance import _attribution, check_copyable
from .sanity import _build_explainer

OBJECTIVES = ("topk", "spearman", "mass_center")
METHODS = ("auto", "gradient", "search")
_CONTROL, _SEARCH = 11, 12


@dataclass
class FragilityResult:
    """What :func:`fragility` returns (per-image tensors on ``x.device``).

    Attributes:
        method_used: ``"gradient"`` or ``"search"``.
        objective: the objective the attack lowered.
        k: the top-k size.
        topk_intersection: ``(B,)`` float64, the share of the original top-k pixels still in
            the top-k after the attack (1: unchanged).
        spearman: ``(B,)`` float64, the rank correlation of the attacked and original maps.
        mass_center_shift: ``(B,)`` float64, the distance in pixels between their centres of mass.
        control_topk_intersection, control_spearman, control_mass_center_shift: ``(B,)`` the same
            for the random-noise control (one random sign perturbation of size ``epsilon``).
        class_kept: ``(B,)`` bool, the attacked image keeps the predicted class (always, since
            steps that change it are rejected: a check).
        control_class_kept: ``(B,)`` bool, the control keeps it (not enforced).
        linf: ``(B,)`` float64, ``max |x_adv - x|`` (at most ``epsilon``).
        accepted: ``(B,)`` int64, the steps kept for each image.
        targets: ``(B,)`` the classes explained.
        model_calls: images forwarded through the model and its softplus copy (each forward
            counts its batch; the backward passes are not counted apart).
        adversarial: ``(B, C, H, W)`` the attacked images when ``keep_images=True``.
    """

    method_used: str
    objective: str
    k: int
    topk_intersection: torch.Tensor
    spearman: torch.Tensor
    mass_center_shift: torch.Tensor
    control_topk_intersection: torch.Tensor
    control_spearman: torch.Tensor
    control_mass_center_shift: torch.Tensor
    class_kept: torch.Tensor
    control_class_kept: torch.Tensor
    linf: torch.Tensor
    accepted: torch.Tensor
    targets: torch.Tensor
    model_calls: int
    adversarial: Optional[torch.Tensor] = None


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < float(value) < math.inf):
        raise XaiError(f"{name} must be a positive finite number; got {describe(value)}.")
    return float(value)


def _signs(gens: list[Optional[torch.Generator]], like: torch.Tensor) -> torch.Tensor:
    """One random sign tensor per image, each from its image's own generator."""
    return torch.stack([torch.randint(0, 2, like.shape[1:], generator=g, device=like.device).to(like.dtype) * 2 - 1
                        for g in gens])


def fragility(model: nn.Module, explainer: Any, x: torch.Tensor, target: Any = None, *, epsilon: float = 8 / 255,
              steps: int = 10, step_size: Optional[float] = None, k: Optional[int] = None, objective: str = "topk",
              seed: int = 0, method: str = "auto", reduce: str = "abs", clip: Optional[tuple[float, float]] = None,
              softplus_beta: float = 10.0, call_kwargs: Optional[Mapping[str, Any]] = None,
              keep_images: bool = False, batch_size: Optional[int] = None,
              progress: Optional[bool] = None) -> FragilityResult:
    """Fragility of the explanation (Ghorbani et al. 2019): how far a class-preserving attack in
    an L-infinity ball of radius ``epsilon`` moves the map, against random noise of the same
    budget. Everything runs on deep copies of ``model``; the user's model is never touched.

    Args:
        model: an ``nn.Module`` (see :mod:`xai_torch.metrics._common`).
        explainer: an xai_torch explainer built on ``model`` (deep-copied with it), or a factory
            ``model -> explainer``.
        x, target, reduce, batch_size, progress: see :mod:`xai_torch.metrics._common`. The maps
            compared are ``reduce``-d over channels (default ``"abs"``, the paper's).
            ``batch_size`` applies to the class checks (give the explainer its own).
        epsilon: the L-infinity budget in model-input units (8/255 for [0, 1] images).
        steps: attack iterations (each: one step, one class check, one explanation).
        step_size: the size of one sign step; default ``2.5 * epsilon / steps``.
        k: top-k size; default 10 % of the pixels (at least 1). More than ``H * W`` raises.
        objective: ``"topk"``, ``"spearman"`` or ``"mass_center"`` (module doc).
        seed: seeds the random search, the control and the stand-in's SmoothGrad draws
            (per image: an image's draws do not depend on the others).
        method: ``"auto"`` (gradient when the explainer is differentiable, else search),
            ``"gradient"`` (raises for an explainer the stand-in does not know) or ``"search"``.
        clip: ``(low, high)`` the valid input range kept by the attack and the control
            (``None``: no clipping).
        softplus_beta: the softplus replacing ReLU in the gradient attack's model copy.
        call_kwargs: call keywords for every explainer call (``{"segments": ...}`` for LIME).
        keep_images: keep the attacked images in the result.

    Returns:
        :class:`FragilityResult`.

    Raises:
        XaiError: ``epsilon``, ``steps`` or ``step_size`` <= 0, ``k`` larger than the map, an
            unknown objective or method, a non-differentiable explainer with
            ``method="gradient"``.

    Cost:
        ``B`` images x (``steps + 2`` explanations and ``steps + 2`` forwards), plus for the
        gradient method ``steps`` double backwards of the stand-in (IG: up to 16 points,
        SmoothGrad: up to 8 draws each); ``model_calls`` counts the forwards.

    Example:
        >>> r = xt.metrics.fragility(model, xt.Gradient(model), x, epsilon=8 / 255, steps=20)
        >>> r.topk_intersection.mean(), r.control_topk_intersection.mean(), r.method_used
    """
    x4, _ = check_input(x)
    check_copyable(model, explainer, "fragility copies the model (and a softplus twin for the attack)")
    epsilon = _positive(epsilon, "epsilon")
    steps = check_positive_int(steps, "steps")
    alpha = 2.5 * epsilon / steps if step_size is None else _positive(step_size, "step_size")
    objective = check_choice(objective, "objective", OBJECTIVES)
    method = check_choice(method, "method", METHODS)
    check_choice(reduce, "reduce", REDUCTIONS)
    seed_ = check_seed(seed)
    if seed_ is None:
        raise XaiError("fragility needs an int seed (the attack and the control are reproducible).")
    beta = _positive(softplus_beta, "softplus_beta")
    pixels = x4.shape[2] * x4.shape[3]
    if k is None:
        k = max(1, round(0.1 * pixels))
    elif isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= pixels:
        raise XaiError(f"k must be an int in [1, {pixels}] (the pixels of a {x4.shape[2]}x{x4.shape[3]} map); "
                       f"got {describe(k)}.")
    if clip is not None:
        if (not isinstance(clip, (tuple, list)) or len(clip) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clip)
                or not clip[0] < clip[1]):
            raise XaiError(f"clip must be None or (low, high) with low < high; got {describe(clip)}.")
    tgt = as_target(target, x4.shape[0])
    if not isinstance(tgt, ClassTarget) or tgt.k is not None:
        raise XaiError("fragility explains one class per image: give None, an int or one class per image.")
    kwargs = dict(call_kwargs or {})
    warn_if_training(model, "fragility", stacklevel=3)

    model_copy, expl = _build_explainer(explainer, model)
    use_gradient = method == "gradient" or (method == "auto" and differentiable(expl))
    if method == "gradient" and not differentiable(expl):
        raise XaiError(f"method='gradient' needs a differentiable explainer (Gradient, InputXGradient, "
                       f"IntegratedGradients, SmoothGrad of the first two, on the input); got "
                       f"{type(expl).__name__}. Use method='search' or 'auto'.")
    twin = softplus_copy(model_copy, beta) if use_gradient else None
    calls = [0]

    def count(mod: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], torch.Tensor):
            calls[0] += args[0].shape[0]
    handles = [m.register_forward_pre_hook(count) for m in (model_copy, twin) if m is not None]
    runner = ModelRunner(model_copy, batch_size=batch_size, progress=progress, name="fragility", sample=x4[0],
                         device=x4.device)
    xd = x4.detach().to(runner.device, copy=True)
    b = xd.shape[0]

    def top1(z: torch.Tensor) -> torch.Tensor:
        parts = runner.map(lambda s, e: class_output(runner.forward(z[s:e])).detach(), b)
        logits = torch.cat(parts)
        if logits.ndim != 2:
            raise XaiError(f"fragility needs a model output of shape (B, num_classes); got {describe(logits)}.")
        return logits

    def explain(z: torch.Tensor) -> torch.Tensor:
        a = _attribution(expl(z.clone(), target=classes.cpu(), **kwargs), "the")
        if a.ndim != 4 or a.shape[0] != b or a.shape[2:] != xd.shape[2:]:
            raise XaiError(f"fragility compares pixel maps: the explainer must return (B, C, H, W) or (B, 1, H, W) "
                           f"at the input size {tuple(xd.shape[2:])}; got {tuple(a.shape)}.")
        return reduce_channels(a, reduce)

    def project(z: torch.Tensor) -> torch.Tensor:
        z = torch.minimum(torch.maximum(z, xd - epsilon), xd + epsilon)
        return z if clip is None else z.clamp(clip[0], clip[1])

    try:
        with runner.session():
            logits = top1(xd)
        clean_top1 = logits.argmax(1)
        classes = clean_top1 if tgt.classes is None else tgt.classes.expand(b).to(logits.device)
        if bool(((classes < 0) | (classes >= logits.shape[1])).any()):
            raise XaiError(f"target classes must lie in [0, {logits.shape[1] - 1}] for this model; "
                           f"got {sorted(set(classes.tolist()))[:5]}.")
        ref = explain(xd)
        ref_top, ref_center = top_mask(ref, k), centers(ref)

        def judge(z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
            with runner.session():
                kept = top1(z).argmax(1) == clean_top1
            m = explain(z)
            found = measured(m, ref, ref_top, ref_center, k)
            share = surrogate("topk", m, ref, ref_top, ref_center)
            return kept, found, score(objective, found, share, k), m

        gens = [make_generator(derive_seed(seed_, _CONTROL, i), xd.device) for i in range(b)]
        control = project(xd + epsilon * _signs(gens, xd))
        c_kept, c_found, c_score, _ = judge(control)

        search = [make_generator(derive_seed(seed_, _SEARCH, i), xd.device) for i in range(b)]
        fn = stand_in(expl, twin, seed_) if twin is not None else None
        # the attack starts from the control where it kept the class (PGD's random start), so it
        # ends at least as far from the original map as the control
        best_found = measured(ref, ref, ref_top, ref_center, k)
        best_score = score(objective, best_found, surrogate("topk", ref, ref, ref_top, ref_center), k)
        start = c_kept & (c_score < best_score)
        best = cur = torch.where(start.view(-1, 1, 1, 1), control, xd)
        best_score = cur_score = torch.where(start, c_score, best_score)
        best_found = {n: torch.where(start, c_found[n], v) for n, v in best_found.items()}
        accepted = torch.zeros(b, dtype=torch.long, device=xd.device)
        for _ in range(steps):
            if fn is not None:
                direction = -_surrogate_grad(fn, cur, classes, reduce, objective, ref, ref_top, ref_center,
                                             runner.chunk).sign()
            else:
                direction = _signs(search, xd)
            cand = project(cur + alpha * direction)
            kept, found, s, _ = judge(cand)
            take = kept if fn is not None else kept & (s < cur_score)
            cur = torch.where(take.view(-1, 1, 1, 1), cand, cur)
            cur_score = torch.where(take, s, cur_score)
            accepted += take.long()
            better = kept & (s < best_score)
            best = torch.where(better.view(-1, 1, 1, 1), cand, best)
            best_score = torch.where(better, s, best_score)
            best_found = {n: torch.where(better, found[n], v) for n, v in best_found.items()}
        with runner.session():
            final_kept = top1(best).argmax(1) == clean_top1
    finally:
        for h in handles:
            h.remove()
    return FragilityResult(
        method_used="gradient" if use_gradient else "search", objective=objective, k=k,
        topk_intersection=to_result(best_found["topk"], x4), spearman=to_result(best_found["spearman"], x4),
        mass_center_shift=to_result(best_found["mass_center"], x4),
        control_topk_intersection=to_result(c_found["topk"], x4), control_spearman=to_result(c_found["spearman"], x4),
        control_mass_center_shift=to_result(c_found["mass_center"], x4),
        class_kept=final_kept.to(x4.device), control_class_kept=c_kept.to(x4.device),
        linf=to_result((best.double() - xd.double()).abs().flatten(1).amax(1), x4),
        accepted=accepted.to(x4.device), targets=classes.to(x4.device), model_calls=calls[0],
        adversarial=best.to(x4.device) if keep_images else None,
    )


def _surrogate_grad(fn: Any, z: torch.Tensor, classes: torch.Tensor, reduce: str, objective: str, ref: torch.Tensor,
                    ref_top: torch.Tensor, ref_center: torch.Tensor, chunk: int) -> torch.Tensor:
    """d(objective of the stand-in map)/dz, in chunks of images."""
    out = torch.empty_like(z)
    with torch.enable_grad():
        for s in range(0, z.shape[0], max(1, chunk)):
            e = min(z.shape[0], s + max(1, chunk))
            zc = z[s:e].detach().clone().requires_grad_(True)
            m = reduce_channels(fn(zc, classes[s:e], s), reduce)
            obj = surrogate(objective, m, ref[s:e], ref_top[s:e], ref_center[s:e]).sum()
            (g,) = torch.autograd.grad(obj, zc)
            out[s:e] = g
    return out


__all__ = ["FragilityResult", "OBJECTIVES", "METHODS", "fragility"]
