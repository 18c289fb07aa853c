"""Plain gradient explainers: :class:`Gradient` and :class:`InputXGradient`.

Both are one forward + one backward per sample chunk, with gradients from
``torch.autograd.grad`` on a private copy of the input (never ``.backward()``, so no
parameter's ``.grad`` changes). :class:`InputGradientExplainer` is the shared engine that the
rectifier-rule explainers in :mod:`xai_torch.backprop` reuse.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .explainer import Explainer, Explanation
from .hooks import HookSession
from .runner import Grad, result_dtype
from .targets import Target

__all__ = ["Gradient", "InputGradientExplainer", "InputXGradient"]


class InputGradientExplainer(Explainer):
    """Engine for attributions built from ``dF_c/dx``: override :meth:`_attribute` (how the
    gradient becomes an attribution) and/or :meth:`_forward` (how the model is run)."""

    def _forward(self, x: torch.Tensor, state: dict[str, Any]) -> Any:
        """Run the model on ``x`` (which requires grad). ``state`` is shared by the chunks of
        one call."""
        return self.model(x)

    def _attribute(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad

    def _make_result(self, attributions: torch.Tensor, targets: Optional[torch.Tensor], scores: torch.Tensor,
                     state: dict[str, Any]) -> Explanation:
        return Explanation(attributions, targets, scores)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 **kwargs: Any) -> Explanation:
        state: dict[str, Any] = {}
        run = self.runner(x, target)
        k = target.k or 1
        xd = run.place(x)  # the runner copies chunks of it before the model sees them

        def chunk(start: int, stop: int) -> tuple[torch.Tensor, Grad]:
            rows = torch.arange(start, stop, device=run.device)
            xc = xd[rows // k] if k > 1 else xd[start:stop]
            g = run.grad(xc, rows, forward=lambda z: self._forward(z, state))
            return self._attribute(xc, g.grad).detach(), g

        parts = run.map(chunk, x.shape[0] * k)
        dtype = result_dtype(x)
        classes = [p[1].classes for p in parts]
        targets = None if classes[0] is None else self._per_image([c for c in classes if c is not None], x, target)
        return self._make_result(self._per_image([p[0] for p in parts], x, target, dtype), targets,
                                 self._per_image([p[1].scores for p in parts], x, target, dtype), state)


class Gradient(InputGradientExplainer):
    """Vanilla gradient saliency (Simonyan et al. 2013): ``dF_c/dx``, signed.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        abs: return ``|dF_c/dx|`` (Captum ``Saliency``'s default; the paper's map is the
            max over channels of that).

    Returns:
        ``(B, C, H, W)`` attributions (``(B, K, C, H, W)`` for ``(B, K)`` targets).

    Cost:
        One forward and one backward per sample.

    Example:
        >>> grads = xt.Gradient(model)(x, target=281)
    """

    def __init__(self, model: Any, *, abs: bool = False, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.abs = bool(abs)

    def _config(self) -> dict[str, Any]:
        return {"abs": self.abs, **super()._config()}

    def _attribute(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.abs() if self.abs else grad


class InputXGradient(InputGradientExplainer):
    """Gradient x input (Shrikumar et al. 2016): ``x * dF_c/dx``, signed.

    Depends on the input parametrisation (normalisation changes it); equals Integrated
    Gradients with a zero baseline for bias-free piecewise-linear models.

    Example:
        >>> attr = xt.InputXGradient(model)(x)      # (B, C, H, W)
    """

    def _attribute(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return x * grad
