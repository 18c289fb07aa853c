"""SmoothGrad and its variants, wrapping any explainer of the package.

SmoothGrad (Smilkov et al. 2017) averages an explanation over noisy copies of the input::

    a_k = E(x + e_k),  e_k ~ N(0, s^2),  s = noise * (max(x) - min(x))  (per image)
    mean: mean_k a_k        square: mean_k a_k^2 (SG-SQ)        var: mean_k a_k^2 - (mean_k a_k)^2

PAIR's default is ``square`` (its ``magnitude=True``) with ``noise=0.15`` and 25 samples;
Captum's ``NoiseTunnel`` takes an absolute ``stdevs=1.0`` with 5 samples. Here ``noise`` is a
fraction of each image's value range and ``variant="mean"`` is the default.

Draws (the result of image ``i`` depends only on ``(seed, i, x[i])``, never on the other images,
on ``B`` or on ``batch_size``):

* noise: image ``i`` has its own generator, seeded with :func:`derive_seed` ``(seed, NOISE, i)``
  on the image's device, from which its copies ``s = 0, 1, ...`` draw ``e_s`` in turn, one
  ``randn((C, H, W))`` each (torch's global RNG image after image, copy after copy, when
  ``seed`` is None);
* a stochastic wrapped explainer (seeded, or RISE, whose images share one set of masks per
  call) is called once per copy index ``s`` on the ``B`` noisy images of that index, with its
  seed replaced by :func:`derive_seed` ``(its seed, INNER, s)`` for ``s > 0`` (its own seed for
  ``s = 0``): every copy is a fresh draw of the wrapped explainer whatever the chunking, and
  image ``i`` follows the wrapped explainer's own per-image convention. Deterministic
  explainers see up to :data:`SAMPLES_PER_CALL` noisy copies per call.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .errors import XaiError, check_choice, check_positive_int, describe
from .explainer import Explainer, Explanation
from .hooks import HookSession
from .modelio import Packed
from .perturbation.rise import RISE
from .precision import check_precision
from .runner import result_dtype
from .seeding import check_seed, derive_seed, make_generator
from .targets import ClassTarget, Target

__all__ = ["SmoothGrad", "SmoothGradExplanation"]

VARIANTS = ("mean", "square", "var")
#: the most noisy samples handed to the wrapped explainer in one call (memory bound).
SAMPLES_PER_CALL = 256
#: :func:`derive_seed` streams: the noise of an image, the wrapped explainer's seed per copy.
NOISE, INNER = 1, 2


@dataclass
class SmoothGradExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` plus the noise used.

    Attributes:
        noise_std: ``(B,)`` standard deviation of the noise added to each image.
        draw_delta: ``(B, [K,] samples)`` completeness delta of every draw when the wrapped
            explainer reports one (path methods), else ``None``.
    """

    noise_std: Optional[torch.Tensor] = None
    draw_delta: Optional[torch.Tensor] = None


class _Repeated(Target):
    """The target of image ``i`` for each of its ``n`` noisy copies (rows ``i * n + s``)."""

    def __init__(self, inner: Target, n: int, first: int) -> None:
        self.inner, self.n, self.first, self.k = inner, n, first, inner.k

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        k = self.k or 1
        image = rows // (k * self.n) + self.first
        return self.inner.scores(output, image * k + rows % k)


class SmoothGrad(Explainer):
    """SmoothGrad / SG-SQ / VarGrad around any explainer (gradients, guided backprop, IG, CAMs...).

    Args:
        explainer: the explainer to smooth, e.g. ``xt.Gradient(model)``. Its call arguments
            (``baseline``...) are accepted and passed on; a per-image tensor is repeated for
            the noisy copies of its image. Its ``batch_size`` bounds every model call.
        samples: noisy copies per image.
        noise: noise standard deviation as a fraction of each image's value range
            (``max - min``); PAIR's ``stdev_spread``.
        variant: ``"mean"`` (SmoothGrad), ``"square"`` (SG-SQ, PAIR's default) or ``"var"``
            (VarGrad, population variance as Captum's NoiseTunnel).
        seed: the noise is repeatable bit-for-bit on the same device with a seed; ``None``
            draws from torch's global RNG. Image ``i``'s noise comes from its own generator
            seeded from ``(seed, i)``, so its result depends only on the seed, its index and
            the image itself, never on the rest of the batch or on ``batch_size`` (module doc).
            A seeded wrapped explainer draws afresh for every noisy copy.
        select_output, precision: taken from the wrapped explainer (give them there); another
            value here raises :class:`~xai_torch.XaiError`.

    Returns:
        The wrapped explainer's output shape, reduced over the noisy copies (a dict
        ``name -> tensor`` when it attributes to a list of layers); targets are resolved once
        on the clean images (argmax of ``model(x)``).

    Cost:
        ``samples`` times the wrapped explainer's, plus one forward per image.

    Example:
        >>> sg = xt.SmoothGrad(xt.Gradient(model), samples=25, noise=0.15, seed=0)
        >>> maps = sg(x, target=281)
        >>> sq_ig = xt.SmoothGrad(xt.IntegratedGradients(model, steps=16), variant="square")
    """

    def __init__(self, explainer: Explainer, *, samples: int = 25, noise: float = 0.15, variant: str = "mean",
                 seed: Optional[int] = None, progress: Optional[bool] = None, select_output: Any = None,
                 precision: Optional[str] = None) -> None:
        if not isinstance(explainer, Explainer):
            raise XaiError(f"SmoothGrad wraps an xai_torch explainer, e.g. xt.SmoothGrad(xt.Gradient(model)); "
                           f"got {describe(explainer)}.")
        if select_output is not None and select_output is not explainer.select_output:
            raise XaiError("SmoothGrad scores as the wrapped explainer does: give select_output= to it, e.g. "
                           "xt.SmoothGrad(xt.Gradient(model, select_output='logits')).")
        if precision is not None and check_precision(precision) != explainer.precision:
            raise XaiError("SmoothGrad runs the model as the wrapped explainer does: give precision= to it, e.g. "
                           f"xt.SmoothGrad(xt.Gradient(model, precision={precision!r})).")
        super().__init__(explainer.model, batch_size=explainer.batch_size, progress=progress,
                         select_output=explainer.select_output, precision=explainer.precision)
        self.explainer = explainer
        self.call_keywords = explainer.call_keywords
        self.samples = check_positive_int(samples, "samples")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float("inf"):
            raise XaiError(f"noise must be a finite number >= 0 (a fraction of the value range); "
                           f"got {describe(noise)}.")
        self.noise = float(noise)
        self.variant = check_choice(variant, "variant", VARIANTS)
        self.seed = check_seed(seed)

    def _config(self) -> dict[str, Any]:
        return {"explainer": self.explainer, "samples": self.samples, "noise": self.noise,
                "variant": self.variant, "seed": self.seed, "progress": self.progress}

    def __repr__(self) -> str:
        return f"SmoothGrad({', '.join(f'{k}={v!r}' for k, v in self._config().items())})"

    def _open(self, session: HookSession) -> None:
        session.enter(self.explainer)

    def _warn_if_training(self) -> bool:
        # the wrapped explainer warns; our own clean forward still needs the buffers restored
        return isinstance(self.model, nn.Module) and any(m.training for m in self.model.modules())

    def _packed(self, x: Any) -> Packed:
        return self.explainer._packed(x)  # tuple inputs when the wrapped explainer takes them

    def _coerce_target(self, target: Any, batch: int) -> Target:
        return self.explainer._coerce_target(target, batch)  # e.g. RISE and LIME score probabilities

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 **kwargs: Any) -> SmoothGradExplanation:
        run = self.runner(x, target)
        device = run.device
        xd = run.place(x)
        scores = classes = None
        if details or (isinstance(target, ClassTarget) and target.classes is None):
            target, scores, classes, _ = run.pin(xd, target)
        b = x.shape[0]
        flat = xd.flatten(1)
        std = self.noise * (flat.max(1).values - flat.min(1).values)
        # one generator per image: its noise does not depend on the other images (module doc)
        generators = [None if self.seed is None else make_generator(derive_seed(self.seed, NOISE, i), device)
                      for i in range(b)]

        def noise(first: int, last: int, c: int) -> torch.Tensor:
            """The next ``c`` copies of images ``first..last-1``, image-major, ``(last-first) * c`` rows."""
            eps = [torch.randn(xd.shape[1:], generator=generators[i], device=device, dtype=xd.dtype)
                   for i in range(first, last) for _ in range(c)]
            clean = xd[first:last].repeat_interleave(c, 0)
            return clean + torch.stack(eps) * std[first:last].repeat_interleave(c).view(-1, 1, 1, 1)

        dtype = result_dtype(x)
        k_shape = (b, target.k) if target.k is not None else (b,)
        layout: dict[str, torch.Size] = {}  # a list of layers' attributions, packed (see _packed)
        fa = self.current_forward_args()
        if fa is not None:  # the wrapped explainer's calls get them, per-example rows repeated per copy
            kwargs = {**kwargs, "additional_forward_args": fa.args}
        if _draws_per_call(self.explainer):
            attributions, draw_delta = self._per_copy(noise, b, target, kwargs, details, layout)
        else:
            attributions, draw_delta = self._grouped(noise, b, target, kwargs, details, layout)
        return SmoothGradExplanation(
            attributions=_unpacked(attributions.to(device=x.device, dtype=dtype), len(k_shape), layout),
            targets=None if classes is None else classes.view(k_shape).to(x.device),
            scores=None if scores is None else scores.view(k_shape).to(device=x.device, dtype=dtype),
            noise_std=std.to(device=x.device, dtype=dtype),
            draw_delta=None if draw_delta is None else draw_delta.to(x.device),
        )

    def _grouped(self, noise: Callable[[int, int, int], torch.Tensor], b: int, target: Target, kwargs: dict[str, Any],
                 details: bool, layout: dict[str, torch.Size]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """A deterministic wrapped explainer: at most SAMPLES_PER_CALL noisy copies per wrapped
        call, several images with all their copies or one image's copies in parts; reduced as
        running float64 sums, so memory does not grow with ``samples``."""
        n = self.samples
        per_call = max(1, SAMPLES_PER_CALL // n)
        part = min(n, SAMPLES_PER_CALL)
        results: list[torch.Tensor] = []
        deltas: list[torch.Tensor] = []
        for first in range(0, b, per_call):
            last = min(b, first + per_call)
            total: Optional[torch.Tensor] = None
            square: Optional[torch.Tensor] = None
            draw: list[torch.Tensor] = []
            for done in range(0, n, part):
                c = min(part, n - done)
                noisy = noise(first, last, c)
                call = {key: _repeat(value, b, first, last, c, key) for key, value in kwargs.items()}
                res = self.explainer._run(noisy, _Repeated(target, c, first), call, details=details)
                a = _packed(res.attributions, 2 if target.k is not None else 1, layout).to(noisy.device)
                a = a.view(last - first, c, *a.shape[1:]).to(torch.float64)
                total = a.sum(1) if total is None else total + a.sum(1)
                if self.variant != "mean":
                    square = (a * a).sum(1) if square is None else square + (a * a).sum(1)
                delta = getattr(res, "delta", None)
                if isinstance(delta, torch.Tensor):
                    draw.append(delta.view(last - first, c, *delta.shape[1:]).movedim(1, -1))
            assert total is not None
            results.append(self._reduce(total / n, None if square is None else square / n))
            if draw:
                deltas.append(torch.cat(draw, -1))
        return torch.cat(results), torch.cat(deltas) if deltas else None

    def _per_copy(self, noise: Callable[[int, int, int], torch.Tensor], b: int, target: Target, kwargs: dict[str, Any],
                  details: bool, layout: dict[str, torch.Size]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """A stochastic wrapped explainer: one call per copy index on the ``B`` noisy images of
        that index, with a seed per index (module doc), so no two copies share a draw."""
        inner = self.explainer
        seed = getattr(inner, "seed", None)
        call = {key: _repeat(value, b, 0, b, 1, key) for key, value in kwargs.items()}
        total: Optional[torch.Tensor] = None
        square: Optional[torch.Tensor] = None
        draw: list[torch.Tensor] = []
        for s in range(self.samples):
            if seed is not None and s > 0:
                inner = copy.copy(self.explainer)  # the user's explainer keeps its seed
                inner.seed = derive_seed(seed, INNER, s)  # type: ignore[attr-defined]
            noisy = noise(0, b, 1)
            res = inner._run(noisy, target, call, details=details)
            a = _packed(res.attributions, 2 if target.k is not None else 1, layout)
            a = a.to(device=noisy.device, dtype=torch.float64)
            total = a if total is None else total + a
            if self.variant != "mean":
                square = a * a if square is None else square + a * a
            delta = getattr(res, "delta", None)
            if isinstance(delta, torch.Tensor):
                draw.append(delta)
        assert total is not None
        n = self.samples
        return self._reduce(total / n, None if square is None else square / n), torch.stack(draw, -1) if draw else None

    def _reduce(self, mean: torch.Tensor, mean_square: Optional[torch.Tensor]) -> torch.Tensor:
        """The variant from the float64 mean and mean square over the noisy copies."""
        if self.variant == "mean":
            return mean
        assert mean_square is not None
        if self.variant == "square":
            return mean_square
        return (mean_square - mean * mean).clamp_min(0)  # population variance, as NoiseTunnel


def _packed(a: Any, lead: int, layout: dict[str, torch.Size]) -> torch.Tensor:
    """A dict ``name -> (n, [K,] ...)`` of a list of layers as one ``(n, [K,] total)`` tensor,
    the shapes recorded in ``layout``; a tensor as it is."""
    if not isinstance(a, dict):
        return a  # type: ignore[no-any-return]
    layout.update({name: t.shape[lead:] for name, t in a.items()})
    return torch.cat([t.flatten(lead) for t in a.values()], -1)


def _unpacked(t: torch.Tensor, lead: int, layout: dict[str, torch.Size]) -> Any:
    """The inverse of :func:`_packed` (the tensor as it is when ``layout`` is empty)."""
    if not layout:
        return t
    out, start = {}, 0
    for name, shape in layout.items():
        part = t.narrow(-1, start, shape.numel())
        out[name], start = part.reshape(*part.shape[:lead], *shape), start + shape.numel()
    return out


def _draws_per_call(explainer: Explainer) -> bool:
    """Whether ``explainer`` draws random numbers that a call shares or repeats: a seeded one
    restarts its generator per call, and RISE gives all the images of a call the same masks."""
    return getattr(explainer, "seed", None) is not None or isinstance(explainer, RISE)


def _repeat(value: Any, batch: int, first: int, last: int, n: int, key: str = "") -> Any:
    """Per-image call arguments for the noisy copies of images ``first..last-1``: a
    ``(B, C, H, W)`` tensor (baselines, base attributions, pixel images), a ``(B, H, W)`` label
    map (``segments``), or a list of such tensors, and the ``B``-row tensors of
    ``additional_forward_args``; anything else is passed as it is."""
    if key == "additional_forward_args":
        return tuple(v[first:last].repeat_interleave(n, 0) if isinstance(v, torch.Tensor) and v.ndim >= 1
                     and v.shape[0] == batch else v for v in value)
    if isinstance(value, (list, tuple)):
        return type(value)(_repeat(v, batch, first, last, n, key) for v in value)
    if not isinstance(value, torch.Tensor) or value.ndim != (3 if key == "segments" else 4):
        return value
    if value.shape[0] == batch:
        return value[first:last].repeat_interleave(n, 0)
    if value.shape[0] != 1:
        raise XaiError(f"a per-image tensor argument has {value.shape[0]} images but x has {batch}.")
    return value

