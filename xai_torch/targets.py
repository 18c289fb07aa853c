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
from collections.abc import Callable, Mapping
from typing import Any, Optional

import torch

from .errors import XaiError, describe

#: every way a class is scored from ``(n, num_classes)`` outputs: the raw logit (Captum's and
#: PAIR's default), the softmax probability, its logarithm, or correctness (1.0 when the
#: model's top-1 is the class; not differentiable, for metrics only).
#:
#: **One-output models** (``(n, 1)`` outputs: a binary classifier with one logit ``z``) are
#: scored as the two-class model with logits ``(0, z)``, whose class is the positive one: the
#: probability kinds become the sigmoid's, ``"softmax"`` -> ``sigmoid(z)``, ``"log_softmax"``
#: -> ``logsigmoid(z)``, ``"accuracy"`` -> ``1.0`` when ``z > 0`` (``sigmoid(z) > 0.5``), and
#: ``"logit"`` stays ``z``. (A softmax over one column is always 1: LIME, KernelSHAP, RISE and
#: the deletion / insertion / PIC / ROAD curves would see a constant score and return empty
#: maps and flat curves.) Every explainer and metric whose default score is a probability
#: therefore explains ``P(positive) = sigmoid(z)`` of a one-logit model.
SCORES = ("logit", "softmax", "log_softmax", "accuracy")
#: the differentiable kinds, which :class:`ClassTarget` accepts.
CLASS_SCORES = SCORES[:3]


def score_classes(output: torch.Tensor, classes: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """The ``score`` (one of :data:`SCORES`) of class ``classes[i]`` in row ``i`` of
    ``(n, num_classes)`` outputs, ``(n,)`` in the output's dtype. A one-column output (one
    logit ``z``, class 0) is scored as the two-class logits ``(0, z)``: sigmoid, logsigmoid,
    ``z > 0`` (see :data:`SCORES`).

    Example:
        >>> score_classes(torch.tensor([[0.0], [2.0]]), torch.tensor([0, 0]), "softmax")
        tensor([0.5000, 0.8808])
    """
    if output.shape[1] == 1 and score != "logit":  # one logit: its probability is the sigmoid's
        z = output[:, 0]
        if score == "accuracy":
            return (z > 0).to(output.dtype)
        return torch.nn.functional.logsigmoid(z) if score == "log_softmax" else z.sigmoid()
    if score == "accuracy":
        return (output.argmax(1) == classes).to(output.dtype)
    if score == "softmax":
        output = output.softmax(dim=1)
    elif score == "log_softmax":
        output = output.log_softmax(dim=1)
    return output.gather(1, classes[:, None])[:, 0]


def class_output(output: Any) -> Any:
    """The class scores in a model output: the output itself when it is a tensor, else its
    ``"logits"`` entry (a dict, Hugging Face's ``ImageClassifierOutput``) or ``logits`` attribute
    (a dataclass or any object); the output unchanged when it has neither.

    Example:
        >>> class_output({"logits": torch.zeros(2, 5), "hidden": None}).shape
        torch.Size([2, 5])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        found = output.get("logits")
    else:
        found = getattr(output, "logits", None)
    return found if isinstance(found, torch.Tensor) else output


class Target:
    """Base class of targets: turns model outputs into one scalar score per row.

    Subclass it and implement :meth:`scores` when a target needs per-image data (a mask per
    image, a box per image): ``rows`` tells which images of the batch the output rows belong
    to, because long jobs evaluate the batch in chunks.

    Attributes:
        k: targets per image, or ``None`` for one target per image without a target dim.
    """

    k: Optional[int] = None

    def bind(self, batch: int) -> Target:
        """Check the target against the batch size; return the target to use."""
        return self

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Scores ``(n,)`` of the ``n`` output rows, and the class index of each row (or None).

        Args:
            output: the model output for ``n`` samples.
            rows: ``(n,)`` long tensor, the sample index of each row (image index times
                ``k`` plus target column when ``k`` is set).
        """
        raise NotImplementedError

    def __call__(self, output: Any, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        if rows is None:
            rows = torch.arange(_rows_of(output))
        return self.scores(output, rows)[0]


def _rows_of(output: Any) -> int:
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

    def __init__(self, classes: Any = None, score: str = "logit") -> None:
        if score not in CLASS_SCORES:
            raise XaiError(f"score must be one of {list(CLASS_SCORES)}; got {score!r}.")
        self.score = score
        self.classes = None if classes is None else _class_tensor(classes)
        self.k = int(self.classes.shape[1]) if self.classes is not None and self.classes.ndim == 2 else None
        self._flat: Optional[torch.Tensor] = None

    def __repr__(self) -> str:
        c = "argmax" if self.classes is None else self.classes.tolist()
        return f"ClassTarget(classes={c}, score={self.score!r})"

    def bind(self, batch: int) -> ClassTarget:
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
            raise XaiError(f"target of shape ({batch}, 0) asks for no class: give at least one target per image "
                           f"(a ({batch}, K) array with K >= 1).")
        bound.classes = c
        bound.k = self.k
        bound._flat = c.reshape(-1)
        return bound

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        output = class_output(output)  # a dict or an object with `logits`: those
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            raise XaiError(
                "a class target needs a model output of shape (B, num_classes) (or a dict / object with "
                f"such `logits`); this model returned a {describe(output)}. Pick the scores with the "
                "explainer's select_output= (a key, an attribute name, an index or a callable), or pass "
                "target=callable(output) -> (B,) scores (or an xt.Target subclass)."
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
        return score_classes(output, idx, self.score), idx


class TopK(Target):
    """The ``k`` classes with the highest scores on each image's clean output, explained as a
    ``(B, k)`` class target: explainers resolve it before their work with one forward per image
    (results gain a target dim of size ``k``, column ``j`` the ``j``-th best class).

    Args:
        k: classes per image (at most the model's class count).
        score: ``None`` (as the explainer scores class indices: the logit, or the probability
            for RISE / LIME / KernelSHAP...), or one of ``"logit"``, ``"softmax"``,
            ``"log_softmax"`` (as :class:`ClassTarget`).

    Example:
        >>> res = xt.IntegratedGradients(model).explain(x, target=xt.TopK(4))
        >>> res.attributions.shape, res.targets.shape        # (B, 4, C, H, W), (B, 4)
    """

    def __init__(self, k: int, score: Optional[str] = None) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise XaiError(f"TopK(k) needs an int k >= 1 (classes per image); got {describe(k)}.")
        if score is not None and score not in CLASS_SCORES:
            raise XaiError(f"score must be None or one of {list(CLASS_SCORES)}; got {score!r}.")
        self.top: int = int(k)
        self.k = self.top
        self.score: Optional[str] = score

    def __repr__(self) -> str:
        return f"TopK({self.top}" + (f", score={self.score!r})" if self.score is not None else ")")

    def classes(self, output: Any) -> torch.Tensor:
        """``(n, k)`` the top-``k`` classes of each row of a clean output (best first; ties by
        ``torch.topk``)."""
        out = class_output(output)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise XaiError(f"TopK needs a model output of shape (B, num_classes) (or a dict / object with such "
                           f"`logits`); this model returned a {describe(out)}. Pick the scores with select_output=.")
        if self.top > out.shape[1]:
            raise XaiError(f"TopK({self.top}) asks for more classes than the model's {out.shape[1]}.")
        return out.detach().topk(self.top, dim=1).indices

    def resolved(self, classes: torch.Tensor) -> Any:
        """What the explainer binds in its place: the ``(B, k)`` classes, or a
        :class:`ClassTarget` of them with ``score``."""
        return classes if self.score is None else ClassTarget(classes, self.score)

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise XaiError("TopK is resolved by the explainers (one forward on the clean images); elsewhere (metrics, "
                       "attached mode) pass the classes: target=model(x).topk(k, dim=1).indices.")


class FunctionTarget(Target):
    """Wraps a plain callable ``output -> (n,)`` scores (one per row of the output)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __repr__(self) -> str:
        return f"FunctionTarget({getattr(self.fn, '__name__', type(self.fn).__name__)})"

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
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


def _class_tensor(classes: Any) -> torch.Tensor:
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
    if t.numel() == 0 and t.ndim <= 2:  # [] or [[], []] has no values, hence no dtype: bind names what is missing
        return t.to(device="cpu", dtype=torch.long)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise XaiError(f"target class indices must be integers; got a {describe(t)}.")
    if t.ndim > 2:
        raise XaiError(f"target must be 0-, 1- or 2-D (B or (B, K)); got a {describe(t)}.")
    if t.numel() and int(t.min()) < 0:
        raise XaiError(f"target class indices must be >= 0; got {int(t.min())}.")
    return t.to(device="cpu", dtype=torch.long)


def as_target(target: Any, batch: int) -> Target:
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
