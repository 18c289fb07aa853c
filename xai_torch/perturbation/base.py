"""What the perturbation methods share: the result type, scoring the K targets of a perturbed
image from one forward, and the clean scores."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..explainer import Explainer, Explanation
from ..runner import ModelRunner, repeat_rows
from ..targets import Target


@dataclass
class PerturbationExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` of a perturbation method.

    Attributes:
        model_calls: images the model evaluated (clean and perturbed).
    """

    model_calls: int = 0


def score_columns(target: Target, output: Any, images: torch.Tensor,
                  k: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scores ``(n, k)`` of the ``n`` output rows (image index ``images``) for every target
    column, and the class of each (or None): the K targets of an image share its forward."""
    rows = (images[:, None] * k + torch.arange(k, device=images.device)).reshape(-1) if k > 1 else images
    s, classes = target.scores(repeat_rows(output, k), rows)
    n = images.shape[0]
    return s.detach().reshape(n, k), None if classes is None else classes.reshape(n, k)


class PerturbationExplainer(Explainer):
    """Forward-only explainer: scores the clean images, then streams perturbed ones."""

    @staticmethod
    def _clean(run: ModelRunner, x: torch.Tensor, target: Target,
               k: int) -> tuple[torch.Tensor, Optional[torch.Tensor], Target]:
        """``(F(x) (B, k), classes (B, k) or None, pinned target)``; one forward per image."""
        pinned = run.pin(x, target)
        b = x.shape[0]
        classes = pinned.classes
        return pinned.scores.view(b, k), None if classes is None else classes.view(b, k), pinned.target

    @staticmethod
    def _shape(x: torch.Tensor, target: Target, t: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """``(B, k, ...)`` per-image results as ``(B, [K,] ...)`` on ``x.device``."""
        t = t.to(device=x.device, dtype=dtype)
        return t if target.k is not None else t[:, 0]

    @classmethod
    def _shape_or_none(cls, x: torch.Tensor, target: Target, t: Optional[torch.Tensor],
                       dtype: Optional[torch.dtype] = None) -> Optional[torch.Tensor]:
        """:meth:`_shape`, or ``None`` for ``None``."""
        return None if t is None else cls._shape(x, target, t, dtype)
