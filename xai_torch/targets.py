"""What to explain: the ``target`` argument and the one function that coerces it.

``target`` semantics (DESIGN.md):

* ``None``: per-image argmax of ``model(x)``.
* ``int``: that class for every image.
* sequence or 1-D integer tensor of length B: one class per image.
* 2-D ``(B, K)``: K classes per image; outputs gain a target dim right after the batch dim.
* an ``xt.Target`` or any callable ``output -> (n,)`` scores, for outputs that are not class
  logits (segmentation masks, boxes, embeddings).

A length or range mismatch raises :class:`XaiError`; nothing is truncated.
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional

import torch

from .errors import XaiError, describe

_SCORES = ("logit", "softmax", "log_softmax")


class Target:
    """Base class of targets: turns model outputs into one scalar score per row.

    Subclass it and implement :meth:`scores` when a target needs per-image data (a mask per
    image, a box per image): ``rows`` tells which images of the batch the output rows belong
    to, because long jobs evaluate the batch in chunks.

    Attributes:
        k: targets per image, or ``None`` for one target per image without a target dim.
    """

    k: Optional[int] = None

    def bind(self, batch: int) -> "Target":
        """Check the target against the batch size; return the target to use."""
        return self

    def scores(self, output, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Scores ``(n,)`` of the ``n`` output rows, and the class index of each row (or None).

        Args:
            output: the model output for ``n`` samples.
            rows: ``(n,)`` long tensor, the sample index of each row (image index times
                ``k`` plus target column when ``k`` is set).
        """
        raise NotImplementedError

    def __call__(self, output, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        if rows is None:
            rows = torch.arange(_rows_of(output))
        return self.scores(output, rows)[0]


def _rows_of(output) -> int:
    if isinstance(output, torch.Tensor) and output.ndim >= 1:
        return output.shape[0]
    raise XaiError(f"cannot tell the batch size of a model output that is a {describe(output)}")


class ClassTarget(Target):
    """Score of a class of a classifier that returns ``(B, num_classes)`` scores.

    Args:
        classes: ``None`` (argmax per image), an int, a sequence / 1-D tensor of length B, or
            a ``(B, K)`` tensor / nested list.
        score: ``"logit"`` (the raw output, the default of Captum and PAIR), ``"softmax"``
            (probability) or ``"log_softmax"``.

    Example:
        >>> xt.Gradient(model)(x, target=xt.ClassTarget([3, 7], score="softmax"))
    """

    def __init__(self, classes=None, score: str = "logit") -> None:
        if score not in _SCORES:
            raise XaiError(f"score must be one of {list(_SCORES)}; got {score!r}.")
        self.score = score
        self.classes = None if classes is None else _class_tensor(classes)
        self.k = int(self.classes.shape[1]) if self.classes is not None and self.classes.ndim == 2 else None
        self._flat: Optional[torch.Tensor] = None

    def __repr__(self) -> str:
        c = "argmax" if self.classes is None else self.classes.tolist()
        return f"ClassTarget(classes={c}, score={self.score!r})"

    def bind(self, batch: int) -> "ClassTarget":
        bound = ClassTarget(None, self.score)
        if self.classes is None:
            return bound
        c = self.classes
        if c.ndim == 0:
            c = c.expand(batch)
        if c.shape[0] != batch:
            raise XaiError(
                f"target has {c.shape[0]} entries but x has {batch} images; give one class per "
                f"image (length {batch}), a single int, or a ({batch}, K) tensor."
            )
        if c.ndim == 2 and c.shape[1] == 0:
            raise XaiError("target of shape (B, 0) asks for no class; give at least one per image.")
        bound.classes = c
        bound.k = self.k
        bound._flat = c.reshape(-1)
        return bound

    def scores(self, output, rows):
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            raise XaiError(
                "a class target needs a model output of shape (B, num_classes); this model "
                f"returned a {describe(output)}. Pass target=callable(output) -> (B,) scores "
                "(or an xt.Target subclass) that reduces the output to one score per image."
            )
        n, num_classes = output.shape
        if self._flat is None:
            idx = output.detach().argmax(dim=1)
        else:
            idx = self._flat.to(output.device)[rows.to(output.device)]
            bad = (idx < 0) | (idx >= num_classes)
            if bool(bad.any()):
                values = sorted(set(idx[bad].tolist()))[:5]
                raise XaiError(
                    f"target class(es) {values} out of range: the model returns {num_classes} "
                    f"classes, so targets must lie in [0, {num_classes - 1}]."
                )
        if self.score == "softmax":
            output = output.softmax(dim=1)
        elif self.score == "log_softmax":
            output = output.log_softmax(dim=1)
        return output.gather(1, idx[:, None])[:, 0], idx


class FunctionTarget(Target):
    """Wraps a plain callable ``output -> (n,)`` scores (one per row of the output)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionTarget({getattr(self.fn, '__name__', type(self.fn).__name__)})"

    def scores(self, output, rows):
        n = rows.shape[0]
        s = self.fn(output)
        if not isinstance(s, torch.Tensor):
            raise XaiError(f"the target callable must return a tensor of {n} scores; it returned a {describe(s)}.")
        if s.ndim == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if s.shape != (n,):
            raise XaiError(
                f"the target callable must return one score per image, shape ({n},); it returned "
                f"shape {tuple(s.shape)}. Reduce the output per image, e.g. out[:, c] or "
                "out.flatten(1).sum(1)."
            )
        if not s.is_floating_point():
            raise XaiError(f"the target callable must return float scores; got dtype {s.dtype}.")
        return s, None


def _class_tensor(classes) -> torch.Tensor:
    if isinstance(classes, bool):
        raise XaiError(f"target must be a class index, not a bool ({classes!r}).")
    if isinstance(classes, numbers.Integral):
        if classes < 0:
            raise XaiError(f"target class indices must be >= 0; got {int(classes)}.")
        return torch.tensor(int(classes), dtype=torch.long)
    if isinstance(classes, torch.Tensor):
        t = classes.detach()
    else:
        try:
            t = torch.as_tensor(classes)
        except (TypeError, ValueError, RuntimeError) as err:
            raise XaiError(
                "target must be None, an int, a sequence of ints (one per image), a (B, K) "
                f"array of ints, or a callable; got {describe(classes)} ({err})."
            ) from None
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise XaiError(f"target class indices must be integers; got a {describe(t)}.")
    if t.ndim > 2:
        raise XaiError(f"target must be 0-, 1- or 2-D (B or (B, K)); got a {describe(t)}.")
    if t.numel() and int(t.min()) < 0:
        raise XaiError(f"target class indices must be >= 0; got {int(t.min())}.")
    return t.to(device="cpu", dtype=torch.long)


def as_target(target, batch: int) -> Target:
    """Coerce any accepted ``target`` value to a :class:`Target` bound to ``batch`` images.

    Raises:
        XaiError: wrong type, non-integer classes, negative classes, or a length that is not
        the batch size. The class range is checked once the model output is known.
    """
    if target is None:
        return ClassTarget(None)
    if isinstance(target, Target):
        return target.bind(batch)
    if callable(target) and not isinstance(target, torch.Tensor):
        return FunctionTarget(target)
    return ClassTarget(target).bind(batch)
