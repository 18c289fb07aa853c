"""What every metric shares: batched no-grad scoring of perturbed images, attribution coercion,
channel reduction and pixel orders.

Common arguments of every metric, documented here once:

Args:
    model: the classifier (``nn.Module`` or callable ``x -> (B, num_classes)``). Never modified:
        metrics only run forwards under ``torch.no_grad``; a model in training mode gets its
        buffers (BatchNorm statistics) restored afterwards, and a warning.
    x: float tensor ``(B, C, H, W)`` (or ``(C, H, W)``) in the model's input space, in the
        model's dtype and channel count: nothing is cast, a mismatch raises ``XaiError`` naming
        both (see :mod:`xai_torch.explainer`).
    attribution: a tensor or array ``(B, C, H, W)``, ``(B, 1, H, W)`` or ``(B, H, W)`` (``(H, W)``
        when B = 1) of the same height and width as ``x``, or an explainer (any callable
        ``explainer(x, target=classes) -> attributions``), which is then called once on ``x``
        with the clean classes.
    target: ``None`` (the clean argmax of each image), an int, or one class per image. One
        target per image: ``(B, K)`` targets are refused. Metrics that only read class scores
        also take an ``xt.Target`` / callable ``output -> (B,)`` scores.
    reduce: how pixel attributions become one value per pixel: ``"sum"`` (signed sum over
        channels, the default), ``"abs"`` (sum of absolute values, PAIR's grayscale),
        ``"max_abs"`` (Simonyan), ``"max"`` (signed max, XRAI), ``"l2"`` or ``"mean"``.
    batch_size: the most perturbed images one model call may see (``None``: automatic).
    progress: tqdm progress bar (``None``: shown on long work on a terminal).

Results are dataclasses of per-image float64 tensors on ``x.device``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import torch

from ..errors import XaiError, check_choice, describe
from ..runner import ModelRunner, warn_if_training
from ..targets import SCORES, ClassTarget, Target, as_target, class_output, score_classes

# what a class target is scored by (targets.SCORES): the softmax probability (RISE's
# deletion/insertion, SIC), the logit (ROAD in pytorch-grad-cam, infidelity), its
# log-probability, or correctness (1.0 when the model's top-1 is the target class: AIC, ROAD).
# A one-logit model is scored by the sigmoid of its logit (see targets.SCORES).
REDUCTIONS = ("sum", "abs", "max_abs", "max", "l2", "mean")


def reduce_channels(attr: torch.Tensor, how: str = "sum") -> torch.Tensor:
    """``(B, C, H, W)`` attributions -> ``(B, H, W)`` pixel relevance (see ``reduce`` above).

    Raises:
        XaiError: ``attr`` is not a real ``(B, C, H, W)`` tensor, or ``how`` is unknown.
    """
    if not isinstance(attr, torch.Tensor) or attr.ndim != 4 or attr.is_complex():
        raise XaiError(f"reduce_channels takes real attributions of shape (B, C, H, W); got {describe(attr)}.")
    check_choice(how, "reduce", REDUCTIONS)
    if how == "sum":
        return attr.sum(1)
    if how == "abs":
        return attr.abs().sum(1)
    if how == "max_abs":
        return attr.abs().amax(1)
    if how == "max":
        return attr.amax(1)
    if how == "l2":
        return attr.pow(2).sum(1).sqrt()
    return attr.mean(1)


def descending_order(relevance: torch.Tensor) -> torch.Tensor:
    """Pixel indices ``(B, H*W)`` from most to least relevant. The sort is stable, so ties keep
    raster order (row by row): the same map always gives the same order, on every device.

    Args:
        relevance: real pixel relevance ``(B, H, W)`` or ``(B, 1, H, W)`` (one value per pixel;
            reduce channels first with :func:`reduce_channels`).

    Raises:
        XaiError: ``relevance`` is not a real tensor of one of those shapes.
    """
    if (not isinstance(relevance, torch.Tensor) or relevance.is_complex()
            or not (relevance.ndim == 3 or (relevance.ndim == 4 and relevance.shape[1] == 1))):
        raise XaiError("descending_order takes real pixel relevance of shape (B, H, W) or (B, 1, H, W) (reduce "
                       f"channels first with reduce_channels); got {describe(relevance)}.")
    return torch.sort(relevance.flatten(1), dim=1, descending=True, stable=True).indices


def correlation(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim``; NaN where either is constant."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    den = (a.pow(2).sum(dim) * b.pow(2).sum(dim)).sqrt()
    r = (a * b).sum(dim) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan")))


def check_fraction(value: Any, name: str, *, low_open: bool = False, high_open: bool = False) -> float:
    """A number in [0, 1] (ends excluded where asked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise XaiError(f"{name} must be a number in [0, 1]; got {describe(value)}.")
    v = float(value)
    if not (0.0 <= v <= 1.0) or (low_open and v == 0.0) or (high_open and v == 1.0):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise XaiError(f"{name} must lie in {lo}0, 1{hi}; got {value!r}.")
    return v


class Scorer:
    """Scores images for one fixed target per image, batched, under ``torch.no_grad``, through
    a :class:`~xai_torch.runner.ModelRunner`.

    The clean images are scored once on construction; argmax targets are pinned to the clean
    prediction (perturbed images are scored for the class of ``x``, not their own argmax).

    Attributes:
        x: the ``(B, C, H, W)`` images on the model's device (a copy, never the user's tensor).
        device: the model's device.
        classes: ``(B,)`` long, the class of each image, or ``None`` for a callable target.
        clean: ``(B,)`` float64, the score of each clean image.
        clean_top1: ``(B,)`` long, the model's top-1 class on each clean image (class outputs).
        calls: images forwarded so far (the model-call count in samples).
    """

    def __init__(self, model: Any, x: torch.Tensor, target: Any = None, *, score: str = "softmax",
                 batch_size: Optional[int] = None, progress: Optional[bool] = None,
                 name: str = "metric") -> None:
        if not callable(model):
            raise XaiError(f"model must be an nn.Module or a callable; got {type(model).__name__}.")
        check_choice(score, "score", SCORES)
        self.runner = ModelRunner(model, batch_size=batch_size, progress=progress, name=name, sample=x[0],
                                  device=x.device)
        self.model = model
        self.name = name
        self.score = score
        self.batch_size = self.runner.batch_size
        self.progress = progress
        self.device = self.runner.device
        self.x = x.detach().to(self.device, copy=True)
        self.training = warn_if_training(model, name, stacklevel=5)
        tgt = as_target(target, x.shape[0])
        if tgt.k is not None:
            raise XaiError(
                f"{name} takes one target per image; got a ({x.shape[0]}, {tgt.k}) target. "
                "Call it once per target column."
            )
        self._custom: Optional[Target] = None if isinstance(tgt, ClassTarget) else tgt
        if self._custom is not None and score not in ("softmax", "logit"):
            raise XaiError(f"score={score!r} needs class targets; a callable target gives its own scores.")
        self.classes: Optional[torch.Tensor] = None
        self.clean_top1: Optional[torch.Tensor] = None
        self._pin = isinstance(tgt, ClassTarget) and tgt.classes is None
        if isinstance(tgt, ClassTarget):
            b = x.shape[0]
            self.classes = (torch.empty(b, dtype=torch.long, device=self.device) if self._pin or tgt.classes is None
                            else tgt.classes.to(self.device))
            self.clean_top1 = torch.empty(b, dtype=torch.long, device=self.device)
        self.clean = self.evaluate(x.shape[0], lambda a, b: (self.x[a:b].clone(), torch.arange(a, b)), first=True)

    @property
    def calls(self) -> int:
        """Images forwarded so far."""
        return self.runner.calls

    def _scores(self, out: Any, rows: torch.Tensor, first: bool) -> torch.Tensor:
        if self._custom is not None:
            return self._custom.scores(out, rows)[0].detach().double()
        out = class_output(out)  # a dict or an object with `logits` (Hugging Face outputs): those
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise XaiError(
                f"{self.name} needs a model output of shape (B, num_classes); this model returned a "
                f"{describe(out)}. Pass target=callable(output) -> (B,) scores."
            )
        assert self.classes is not None and self.clean_top1 is not None
        out = out.detach()
        if first:
            top1 = out.argmax(1)
            self.clean_top1[rows] = top1
            if self._pin:
                self.classes[rows] = top1
        c = self.classes[rows]
        if bool(((c < 0) | (c >= out.shape[1])).any()):
            raise XaiError(f"target classes must lie in [0, {out.shape[1] - 1}] for this model; "
                           f"got {sorted(set(c.tolist()))[:5]}.")
        return score_classes(out.double(), c, self.score)

    def chunk_size(self) -> int:
        """Images per model call."""
        return self.runner.chunk

    def evaluate(self, n: int, make: Callable[[int, int], tuple[torch.Tensor, Any]], *, first: bool = False,
                 desc: Optional[str] = None) -> torch.Tensor:
        """Scores of ``n`` perturbed images, in chunks of at most ``batch_size``.

        Args:
            make: ``make(start, stop) -> (z, rows)``: the ``stop - start`` images to score
                ``(m, C, H, W)`` on the model's device, and the image each one belongs to
                ``(m,)`` (its target is that image's).

        Returns:
            ``(n,)`` float64 scores on the model's device.
        """
        out = torch.empty(n, dtype=torch.float64, device=self.device)

        def chunk(start: int, stop: int) -> None:
            z, rows = make(start, stop)
            rows = torch.as_tensor(rows, device=self.device)
            out[start:stop] = self._scores(self.runner.forward(z), rows, first)

        with self.runner.session():
            self.runner.map(chunk, n, desc=desc)
        return out

    def attributions(self, attribution: Any, reduce: Optional[str] = "sum") -> torch.Tensor:
        """``attribution`` (a tensor, an array or an explainer) as float64 on the model's device:
        ``(B, H, W)`` relevance when ``reduce`` is given, else ``(B, C', H, W)``. Check tensors
        with :func:`coerce_attribution` before building the scorer to fail before any model call."""
        return coerce_attribution(attribution, self.x, self.classes, reduce=reduce, name=self.name)


def is_explainer(attribution: Any) -> bool:
    """Whether ``attribution`` is an explainer to call rather than attributions to check."""
    return callable(attribution) and not isinstance(attribution, (torch.Tensor, np.ndarray))


def coerce_attribution(attribution: Any, x: torch.Tensor, classes: Optional[torch.Tensor] = None, *,
                       reduce: Optional[str] = "sum", name: str = "attribution") -> torch.Tensor:
    """Check an attribution against ``x`` ``(B, C, H, W)`` (or call the explainer that makes
    it) and return it as float64 on ``x.device``: ``(B, H, W)`` if ``reduce`` else
    ``(B, C', H, W)`` with ``C'`` = 1 or C.

    Raises:
        XaiError: ``x`` is not a ``(B, C, H, W)`` tensor, or the attribution does not match it.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise XaiError(f"coerce_attribution needs the images x as a (B, C, H, W) tensor; got {describe(x)}.")
    b, c, h, w = x.shape
    if is_explainer(attribution):
        target = classes.cpu() if classes is not None else None
        attribution = attribution(x.clone(), target=target)
    if isinstance(attribution, np.ndarray):
        attribution = torch.from_numpy(np.ascontiguousarray(attribution))
    if not isinstance(attribution, torch.Tensor):
        raise XaiError(f"attribution must be a tensor, an array or an explainer; got {describe(attribution)}.")
    a = attribution.detach()
    if a.is_complex() or a.dtype == torch.bool:
        raise XaiError(f"attribution must hold real numbers; got {describe(attribution)}.")
    if a.ndim == 2 and b == 1:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] != b or a.shape[2:] != (h, w) or a.shape[1] not in (1, c):
        raise XaiError(
            f"attribution must have shape ({b}, {c}, {h}, {w}), ({b}, 1, {h}, {w}) or ({b}, {h}, {w}) to "
            f"match x of shape {tuple(x.shape)}; got {describe(attribution)}. CAMs at layer resolution "
            "must be upsampled first (explain(...).attributions is already at input size)."
        )
    a = a.to(x.device, torch.float64)
    if not bool(torch.isfinite(a).all()):
        raise XaiError(f"{name}: the attribution has NaN or infinite values.")
    return reduce_channels(a, reduce) if reduce is not None else a


def to_result(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A result tensor as float64 on the user's device."""
    return t.to(like.device, torch.float64)


__all__ = ["Scorer", "SCORES", "REDUCTIONS", "reduce_channels", "descending_order", "coerce_attribution",
           "is_explainer", "check_fraction", "correlation", "to_result"]
