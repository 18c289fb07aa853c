"""Max-sensitivity and avg-sensitivity (Yeh et al. 2019, Captum ``metrics.sensitivity_max``;
Bhatt et al. 2020): how much the explanation moves when the input moves a little.

Arguments shared by every metric (``x``, ``target``, ``batch_size``, ``progress``) are documented
in :mod:`xai_torch.metrics._common`. Randomness: the noise comes from one ``torch.Generator``
seeded with ``seed`` on the model's device, in fixed blocks (one block per image), so a seed
gives the same result bit-for-bit on the same device whatever ``batch_size`` is. On the CPU it
is the same stream as Captum's default noise after ``torch.manual_seed(seed)``.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from ..batching import check_batch_size
from ..errors import XaiError, check_input, check_positive_int, describe
from ..explainer import Explainer
from ..runner import ModelRunner
from ..seeding import check_seed, make_generator
from ..targets import ClassTarget, FunctionTarget, as_target
from ._common import Scorer, to_result
from ._random import Blocks, check_perturbed, check_positive


@dataclass
class SensitivityResult:
    """What :func:`max_sensitivity` returns (per-image float64 tensors on ``x.device``).

    Attributes:
        max_sensitivity: ``(B,)`` ``max_j ||Phi(x + d_j) - Phi(x)|| / ||Phi(x)||``.
        avg_sensitivity: ``(B,)`` the mean of the same ratios over the samples.
    """

    max_sensitivity: torch.Tensor
    avg_sensitivity: torch.Tensor


def sensitivity_ratios(clean: torch.Tensor, noisy: torch.Tensor, norm: Union[str, float] = "fro") -> torch.Tensor:
    """``||noisy_j - clean|| / ||clean||`` for ``clean`` ``(B, ...)`` and ``noisy`` ``(B, S, ...)``
    (flattened per attribution; a zero ``||clean||`` counts as 1, as Captum). Returns ``(B, S)``."""
    ord_ = _norm_ord(norm)
    ref = torch.linalg.vector_norm(clean.flatten(1), ord=ord_, dim=1)
    ref = torch.where(ref == 0, torch.ones_like(ref), ref)
    diff = (noisy - clean[:, None]).flatten(2)
    ratios: torch.Tensor = torch.linalg.vector_norm(diff, ord=ord_, dim=2) / ref[:, None]
    return ratios


def _norm_ord(norm: object) -> float:
    if norm == "fro":
        return 2.0
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool) and float(norm) > 0:
        return float(norm)
    raise XaiError(f"norm must be 'fro' (the Frobenius / L2 norm of the flattened attribution) or a "
                   f"positive number p (float('inf') for the max norm); got {describe(norm)}.")


def max_sensitivity(explainer: Callable[..., Any], x: torch.Tensor, target: Any = None, *, radius: float = 0.02,
                    samples: int = 10, norm: Union[str, float] = "fro",
                    perturbation: Optional[Callable[..., Any]] = None, model: Any = None, seed: Optional[int] = 0,
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
    radius = check_positive(radius, "radius")
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
    owner = explainer.model if isinstance(explainer, Explainer) else model
    # the explainer is what runs in chunks; the model (when known) sets the device
    runner = ModelRunner(owner if owner is not None else explainer, batch_size=batch_size, progress=progress,
                         name="max_sensitivity", sample=x4[0], device=x4.device)
    dev = runner.device
    xd = x4.detach().to(dev, copy=True)

    # the clean explanation, and the classes that every noisy copy keeps
    classes = tgt.classes.expand(b).to(dev) if isinstance(tgt, ClassTarget) and tgt.classes is not None else None
    if isinstance(explainer, Explainer):
        res = explainer.explain(xd.clone(), target=target)
        clean = res.attributions
        if pin:
            assert res.targets is not None  # class targets: the explainer reports them
            classes = res.targets.to(dev)
    else:
        if pin:
            classes = Scorer(model, xd, None, score="logit", batch_size=batch_size, progress=False,
                             name="max_sensitivity").classes
        clean = explainer(xd.clone(), target=_call_target(target, classes, None))
    clean = _check_attribution(clean, b, "the explainer's attribution of x").to(dev, torch.float64)

    gen = make_generator(seed, dev)
    if perturbation is None:
        blocks = Blocks(lambda k: torch.empty((samples, *xd.shape[1:]), device=dev, dtype=xd.dtype).uniform_(
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
            noisy = check_perturbed(perturbation(xr.clone(), gen), xr, "the perturbed images").to(xr.dtype)
        out = explainer(noisy, target=_call_target(target, classes, rows))
        out = _check_attribution(out, stop - start, "the explainer's attribution of the noisy images")
        if out.shape[1:] != clean.shape[1:]:
            raise XaiError(f"the explainer returned attributions of shape {tuple(out.shape[1:])} per noisy image "
                           f"but {tuple(clean.shape[1:])} per clean image.")
        diff = (out.to(dev, torch.float64) - clean[rows]).flatten(1)
        ratios[start:stop] = torch.linalg.vector_norm(diff, ord=ord_, dim=1) / ref[rows]

    runner.map(chunk, n)
    r = ratios.view(b, samples)
    return SensitivityResult(to_result(r.amax(1), x4), to_result(r.mean(1), x4))


def _call_target(target: Any, classes: Optional[torch.Tensor], rows: Optional[torch.Tensor]) -> Any:
    """The ``target`` of one explainer call: the clean classes of its rows (a ClassTarget keeps its
    score), or the user's callable unchanged."""
    if classes is None:
        return target
    c = (classes if rows is None else classes[rows]).cpu()
    return ClassTarget(c, score=target.score) if isinstance(target, ClassTarget) else c


def _check_attribution(out: Any, n: int, what: str) -> torch.Tensor:
    if hasattr(out, "attributions") and not isinstance(out, torch.Tensor):
        out = out.attributions
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(out))
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != n or out.is_complex():
        raise XaiError(f"{what} must be a real tensor with one row per image ({n}); got {describe(out)}.")
    t: torch.Tensor = out.detach()
    if not bool(torch.isfinite(t).all()):
        raise XaiError(f"{what} has NaN or infinite values.")
    return t


__all__ = ["SensitivityResult", "max_sensitivity", "sensitivity_ratios"]
