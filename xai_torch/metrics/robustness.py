"""Robustness of an explanation to small input changes, from the Quantus catalogue: the local
Lipschitz estimate (Alvarez-Melis & Jaakkola 2018; Quantus ``LocalLipschitzEstimate``) and the
relative input / output stability (Agarwal et al. 2022; Quantus ``RelativeInputStability`` /
``RelativeOutputStability``). Lower is more robust.

Each metric re-explains ``samples`` noisy copies of every image: the copies of all images are
stacked image-major and explained in chunks of at most ``batch_size`` images, one explainer call
per chunk (as :func:`~xai_torch.metrics.max_sensitivity`), with the class of the clean image
kept on its copies. Randomness: one ``torch.Generator`` seeded with ``seed`` on the model's
device, one block of ``samples`` noises per image (see :mod:`xai_torch.metrics._random`), so an
image's result does not depend on ``batch_size`` or on the other images of the batch.

Arguments shared by every metric are documented in :mod:`xai_torch.metrics._common`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from ..batching import check_batch_size
from ..errors import XaiError, check_input, check_positive_int, describe
from ..explainer import Explainer
from ..hooks import this_thread
from ..runner import ModelRunner
from ..seeding import check_seed, make_generator
from ..targets import ClassTarget, as_target, class_output
from ._common import Scorer, to_result
from ._random import Blocks, check_perturbed, check_positive
from .sensitivity import _call_target, _check_attribution

# draws the noise of one image: (image, samples, generator) -> (samples, C, H, W)
Noise = Callable[[torch.Tensor, int, Optional[torch.Generator]], torch.Tensor]
# what each chunk hands to a metric: the rows' image index, clean and noisy images, clean and noisy
# explanations (float64, flattened), clean and noisy model outputs (None when not asked for)
Chunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
              Optional[torch.Tensor], Optional[torch.Tensor]]


@dataclass
class RelativeStability:
    """What :func:`relative_input_stability` / :func:`relative_output_stability` return
    (per-image float64 tensors on ``x.device``).

    Attributes:
        stability: ``(B,)`` the largest ratio over the noisy copies that keep the clean
            prediction; NaN when none keeps it.
        kept: ``(B,)`` how many noisy copies kept the prediction (the ones the maximum is over).
    """

    stability: torch.Tensor
    kept: torch.Tensor


def _run(name: str, explainer: Callable[..., Any], x: torch.Tensor, target: Any, *, samples: int,
         noise: Noise, perturbation: Optional[Callable[..., Any]],
         model: Any, need_outputs: bool, seed: Optional[int], batch_size: Optional[int], progress: Optional[bool],
         measure: Callable[[Chunk], torch.Tensor],
         layers: Optional[Sequence[str]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared loop: clean explanation (and outputs), then chunks of noisy copies. Returns
    ``measure`` per noisy copy ``(B, samples)`` and whether each kept the clean prediction."""
    x4, _ = check_input(x)
    if not callable(explainer):
        raise XaiError(f"explainer must be an xai_torch explainer or a callable (x, target=) -> attributions; "
                       f"got {describe(explainer)}.")
    if perturbation is not None and not callable(perturbation):
        raise XaiError(f"perturbation must be None or a callable (x_rows, generator) -> noisy images; "
                       f"got {describe(perturbation)}.")
    seed = check_seed(seed)
    batch_size = check_batch_size(batch_size)
    tgt = as_target(target, x4.shape[0])
    if not isinstance(tgt, ClassTarget) or tgt.k is not None:
        raise XaiError(f"{name} keeps the class of each image on its noisy copies: give None, a class or one "
                       f"class per image; got {describe(target)}.")
    owner = explainer.model if isinstance(explainer, Explainer) else model
    if owner is None and (need_outputs or tgt.classes is None):
        raise XaiError(f"{name} needs the model's predictions: pass model=the classifier (an xai_torch "
                       "explainer brings its own).")
    if owner is not None and not callable(owner):
        raise XaiError(f"model must be an nn.Module or a callable; got {describe(owner)}.")
    b = x4.shape[0]
    runner = ModelRunner(owner if owner is not None else explainer, batch_size=batch_size, progress=progress,
                         name=name, sample=x4[0], device=x4.device)
    dev = runner.device
    xd = x4.detach().to(dev, copy=True)
    classes = tgt.classes.expand(b).to(dev) if tgt.classes is not None else None
    taps = _taps(owner, layers, name) if layers is not None else None
    clean_out: Optional[torch.Tensor] = None
    clean_rep: Optional[torch.Tensor] = None
    if isinstance(explainer, Explainer):
        res = explainer.explain(xd.clone(), target=target)
        clean = res.attributions
        if classes is None:
            assert res.targets is not None
            classes = res.targets.to(dev)
    else:
        if classes is None:
            classes = Scorer(owner, xd, None, score="logit", batch_size=batch_size, progress=False, name=name).classes
        clean = explainer(xd.clone(), target=_call_target(target, classes, None))
    clean = _check_attribution(clean, b, "the explainer's attribution of x").to(dev, torch.float64).flatten(1)
    assert classes is not None
    if need_outputs:
        clean_out, clean_rep = _outputs(runner, xd, name, taps)
    gen = make_generator(seed, dev)
    blocks = Blocks(lambda k: noise(xd[k], samples, gen), samples)
    n = b * samples
    values = torch.empty(n, dtype=torch.float64, device=dev)
    kept = torch.ones(n, dtype=torch.bool, device=dev)

    def chunk(start: int, stop: int) -> None:
        rows = torch.arange(start, stop, device=dev) // samples
        xr = xd[rows]
        if perturbation is None:
            noisy = (xr + blocks.rows(start, stop)).to(xr.dtype)
        else:
            noisy = check_perturbed(perturbation(xr.clone(), gen), xr, "the perturbed images").to(xr.dtype)
        out = explainer(noisy, target=_call_target(target, classes, rows))
        out = _check_attribution(out, stop - start, "the explainer's attribution of the noisy images")
        if out[0].numel() != clean.shape[1]:
            raise XaiError(f"the explainer returned attributions of shape {tuple(out.shape[1:])} per noisy image "
                           f"but {clean.shape[1]} values per clean image.")
        h: Optional[torch.Tensor] = None
        hn: Optional[torch.Tensor] = None
        if clean_out is not None:
            got, rep = _outputs(runner, noisy, name, taps)
            kept[start:stop] = got.argmax(1) == clean_out[rows].argmax(1)
            h, hn = (clean_out[rows], got) if clean_rep is None else (clean_rep[rows], rep)
        values[start:stop] = measure((rows, xr, noisy, clean[rows], out.to(dev, torch.float64).flatten(1), h, hn))

    runner.map(chunk, n)
    return values.view(b, samples), kept.view(b, samples)


def _taps(model: Any, layers: Sequence[str], name: str) -> list[nn.Module]:
    """The modules whose outputs form the representation: the named ones, or (an empty list of
    names) every module but the model itself and ``nn.Sequential`` containers, as Quantus."""
    if not isinstance(model, nn.Module):
        raise XaiError(f"{name} reads internal layers: the model must be an nn.Module; got {describe(model)}.")
    named = dict(model.named_modules())
    if not layers:
        return [m for m in named.values() if not isinstance(m, (type(model), nn.Sequential))]
    missing = [n for n in layers if n not in named or n == ""]
    if missing:
        raise XaiError(f"{name}: the model has no layer {missing[0]!r}; layers include {list(named)[1:8]}.")
    return [named[n] for n in layers]


def _outputs(runner: ModelRunner, z: torch.Tensor, name: str,
             taps: Optional[list[nn.Module]]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logits of ``z`` (no grad) and, with ``taps``, the flattened outputs of those modules in the
    order they ran, concatenated per image."""
    seen: list[torch.Tensor] = []

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            seen.append(output.detach().reshape(output.shape[0], -1).to(torch.float64, copy=True))

    with runner.session() as session:
        for m in taps or []:
            session.forward_hook(m, this_thread(record))
        out = class_output(runner.forward(z))
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise XaiError(f"{name} needs a model output of shape (B, num_classes); this model returned a {describe(out)}.")
    if taps is not None and not seen:
        raise XaiError(f"{name}: none of the chosen layers produced a tensor during the forward.")
    return out.detach().to(torch.float64), (torch.cat(seen, 1) if taps is not None else None)


def _gaussian(std: float) -> Noise:
    def draw(img: torch.Tensor, samples: int, gen: Optional[torch.Generator]) -> torch.Tensor:
        return torch.empty((samples, *img.shape), device=img.device, dtype=img.dtype).normal_(0.0, std, generator=gen)
    return draw


def local_lipschitz_estimate(explainer: Callable[..., Any], x: torch.Tensor, target: Any = None, *,
                             samples: int = 200, std: float = 0.1, normalise: bool = True,
                             perturbation: Optional[Callable[..., Any]] = None, model: Any = None,
                             seed: Optional[int] = 0, batch_size: Optional[int] = None,
                             progress: Optional[bool] = None) -> torch.Tensor:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018; Quantus ``LocalLipschitzEstimate``):
    ``max_j ||Phi(x) - Phi(x_j)||_2 / ||x - x_j||_2`` over ``samples`` noisy copies
    ``x_j = x + N(0, std^2)`` (Quantus' defaults: 200 samples, std 0.1, every copy counts).

    Differs from Quantus 0.6 in one point: with ``normalise`` each explanation is divided by
    its own largest ``|Phi|``; Quantus divides by the largest value of the whole batch (clean
    batch, then each noisy batch), so an image's estimate depends on the other images. The two
    agree on one image. Quantus also adds 1e-10 to the denominator (negligible).

    Args:
        explainer: an xai_torch explainer or a callable ``explainer(x, target=classes) -> attributions``.
        x, target, batch_size, progress: see :mod:`xai_torch.metrics._common`.
        samples: noisy copies per image (>= 1).
        std: the standard deviation of the Gaussian noise, in model-space units (> 0).
        normalise: divide every explanation by its largest absolute value (Quantus' default).
        perturbation: ``None`` (the Gaussian noise) or ``perturbation(x_rows, generator) -> noisy
            images``, called once per chunk on the repeated ``(m, C, H, W)`` images.
        model: the classifier, needed only for a plain callable with ``target=None`` (its argmax).
        seed: the noise's seed (``None``: torch's global generator).

    Returns:
        ``(B,)`` float64 on ``x.device``.

    Cost:
        ``B * (samples + 1)`` explained images (one call on ``x``, then chunks of noisy copies).

    Example:
        >>> xt.metrics.local_lipschitz_estimate(xt.Gradient(model), x, samples=20)
    """
    samples = check_positive_int(samples, "samples")
    std = check_positive(std, "std")
    if not isinstance(normalise, bool):
        raise XaiError(f"normalise must be True or False; got {describe(normalise)}.")

    def norm(e: torch.Tensor) -> torch.Tensor:
        if not normalise:
            return e
        top = e.abs().amax(1, keepdim=True)
        return e / torch.where(top == 0, torch.ones_like(top), top)

    def measure(c: Chunk) -> torch.Tensor:
        _, xr, noisy, e, en, _, _ = c
        num = torch.linalg.vector_norm(norm(e) - norm(en), dim=1)
        den = torch.linalg.vector_norm((xr - noisy).flatten(1).double(), dim=1)
        ratio: torch.Tensor = num / den
        return ratio

    values, _ = _run("local_lipschitz_estimate", explainer, x, target, samples=samples,
                     noise=_gaussian(std), perturbation=perturbation, model=model,
                     need_outputs=False, seed=seed, batch_size=batch_size, progress=progress, measure=measure)
    return to_result(values.amax(1), x)


def _uniform(low: float, high: float) -> Noise:
    def draw(img: torch.Tensor, samples: int, gen: Optional[torch.Generator]) -> torch.Tensor:
        return torch.empty((samples, *img.shape), device=img.device, dtype=img.dtype).uniform_(low, high,
                                                                                               generator=gen)
    return draw


def _check_range(noise: Any) -> tuple[float, float]:
    if (not isinstance(noise, (tuple, list)) or len(noise) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in noise)
            or not float(noise[0]) < float(noise[1])):
        raise XaiError(f"noise must be a range (low, high) with low < high (Quantus: (0.02, 0.2)); got {noise!r}.")
    return float(noise[0]), float(noise[1])


def _relative(name: str, explainer: Callable[..., Any], x: torch.Tensor, target: Any, samples: int,
              noise: Any, eps_min: float, perturbation: Optional[Callable[..., Any]], model: Any, seed: Optional[int],
              batch_size: Optional[int], progress: Optional[bool], kind: str,
              layers: Optional[Sequence[str]] = None) -> RelativeStability:
    samples = check_positive_int(samples, "samples")
    low, high = _check_range(noise)
    eps_min = check_positive(eps_min, "eps_min")

    def guard(v: torch.Tensor) -> torch.Tensor:
        return v + (v == 0) * eps_min

    def measure(c: Chunk) -> torch.Tensor:
        _, xr, noisy, e, en, h, hn = c
        num = torch.linalg.vector_norm((e - en) / guard(e), dim=1)
        if kind == "input":
            xf, nf = xr.flatten(1).double(), noisy.flatten(1).double()
            den = torch.linalg.vector_norm((xf - nf) / guard(xf), dim=1)
        elif kind == "output":
            assert h is not None and hn is not None
            den = torch.linalg.vector_norm(h - hn, dim=1)
        else:
            assert h is not None and hn is not None
            den = torch.linalg.vector_norm((h - hn) / guard(h), dim=1)
        ratio: torch.Tensor = num / den.clamp(min=eps_min)
        return ratio

    values, kept = _run(name, explainer, x, target, samples=samples, noise=_uniform(low, high),
                        perturbation=perturbation, model=model, need_outputs=True, seed=seed,
                        batch_size=batch_size, progress=progress, measure=measure, layers=layers)
    masked = torch.where(kept, values, torch.full_like(values, float("-inf"))).amax(1)
    count = kept.sum(1)
    score = torch.where(count > 0, masked, torch.full_like(masked, float("nan")))
    return RelativeStability(to_result(score, x), to_result(count.double(), x))


def relative_input_stability(explainer: Callable[..., Any], x: torch.Tensor, target: Any = None, *,
                             samples: int = 200, noise: tuple[float, float] = (0.02, 0.2), eps_min: float = 1e-6,
                             perturbation: Optional[Callable[..., Any]] = None, model: Any = None,
                             seed: Optional[int] = 0, batch_size: Optional[int] = None,
                             progress: Optional[bool] = None) -> RelativeStability:
    """Relative input stability (Agarwal et al. 2022; Quantus ``RelativeInputStability``):
    ``max_j ||(e_x - e_j) / e_x||_2 / max(||(x - x_j) / x||_2, eps_min)`` over the noisy copies
    ``x_j`` that keep the model's prediction (element-wise ratios; a zero denominator element
    counts as ``eps_min``, as Quantus). Quantus' default noise: ``x + U(low, high)`` with
    ``(low, high) = (0.02, 0.2)``, 200 copies.

    Differs from Quantus 0.6: Quantus marks a copy that changes the prediction NaN and then takes
    ``np.max``, so one such copy makes the image's score NaN; the paper (and this function) takes
    the maximum over the copies that keep the prediction (``kept`` says how many). Quantus adds
    ``eps_min`` to a zero denominator instead of the paper's ``max(., eps_min)`` (equal unless the
    norm is in (0, eps_min)).

    Args:
        explainer: an xai_torch explainer or a callable ``explainer(x, target=classes) -> attributions``.
        x, target, batch_size, progress: see :mod:`xai_torch.metrics._common`.
        samples: noisy copies per image (>= 1).
        noise: the range of the uniform noise added to every value.
        eps_min: the smallest denominator (> 0).
        perturbation: ``None`` (the uniform noise) or ``perturbation(x_rows, generator) -> noisy images``.
        model: the classifier; needed for a plain-callable explainer (the prediction check).
        seed: the noise's seed (``None``: torch's global generator).

    Returns:
        :class:`RelativeStability`.

    Cost:
        ``B * (samples + 1)`` explained images and ``B * (samples + 1)`` model forwards (no grad).

    Example:
        >>> xt.metrics.relative_input_stability(xt.Gradient(model), x, samples=20).stability
    """
    return _relative("relative_input_stability", explainer, x, target, samples, noise, eps_min, perturbation,
                     model, seed, batch_size, progress, kind="input")


def relative_output_stability(explainer: Callable[..., Any], x: torch.Tensor, target: Any = None, *,
                              samples: int = 200, noise: tuple[float, float] = (0.02, 0.2), eps_min: float = 1e-6,
                              perturbation: Optional[Callable[..., Any]] = None, model: Any = None,
                              seed: Optional[int] = 0, batch_size: Optional[int] = None,
                              progress: Optional[bool] = None) -> RelativeStability:
    """Relative output stability (Agarwal et al. 2022; Quantus ``RelativeOutputStability``):
    ``max_j ||(e_x - e_j) / e_x||_2 / max(||h(x) - h(x_j)||_2, eps_min)`` with ``h`` the model's
    logits, over the noisy copies that keep the prediction. Same noise, defaults and
    differences from Quantus as :func:`relative_input_stability`.

    Returns:
        :class:`RelativeStability`.

    Cost:
        ``B * (samples + 1)`` explained images and ``B * (samples + 1)`` model forwards (no grad).

    Example:
        >>> xt.metrics.relative_output_stability(xt.Gradient(model), x, samples=20).stability
    """
    return _relative("relative_output_stability", explainer, x, target, samples, noise, eps_min, perturbation,
                     model, seed, batch_size, progress, kind="output")


def relative_representation_stability(explainer: Callable[..., Any], x: torch.Tensor, target: Any = None, *,
                                      layers: Optional[Sequence[str]] = None, samples: int = 200,
                                      noise: tuple[float, float] = (0.02, 0.2), eps_min: float = 1e-6,
                                      perturbation: Optional[Callable[..., Any]] = None, model: Any = None,
                                      seed: Optional[int] = 0, batch_size: Optional[int] = None,
                                      progress: Optional[bool] = None) -> RelativeStability:
    """Relative representation stability (Agarwal et al. 2022; Quantus
    ``RelativeRepresentationStability``): ``max_j ||(e_x - e_j) / e_x||_2 /
    max(||(L_x - L_j) / L_x||_2, eps_min)`` with ``L`` the model's internal representation, over
    the noisy copies that keep the prediction. Same noise, defaults and differences from Quantus
    as :func:`relative_input_stability`.

    Args:
        layers: names of the modules (``model.named_modules()``) whose flattened outputs, in the
            order they run, form ``L``; ``None``: every module except the model itself and
            ``nn.Sequential`` containers (Quantus' default). A module that runs twice counts twice.
        Others: see :func:`relative_input_stability`.

    Returns:
        :class:`RelativeStability`.

    Cost:
        ``B * (samples + 1)`` explained images and ``B * (samples + 1)`` model forwards (no grad),
        with forward hooks on the chosen layers during those forwards only.

    Example:
        >>> xt.metrics.relative_representation_stability(xt.Gradient(model), x, layers=["layer4"]).stability
    """
    if layers is not None and (isinstance(layers, str) or not all(isinstance(n, str) for n in layers)):
        raise XaiError(f"layers must be a list of module names or None; got {describe(layers)}.")
    return _relative("relative_representation_stability", explainer, x, target, samples, noise, eps_min,
                     perturbation, model, seed, batch_size, progress, kind="representation",
                     layers=list(layers) if layers is not None else [])


__all__ = ["RelativeStability", "local_lipschitz_estimate", "relative_input_stability", "relative_output_stability",
           "relative_representation_stability"]
