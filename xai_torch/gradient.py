"""Plain gradient explainers: :class:`Gradient` and :class:`InputXGradient`.

Both are one forward + one backward per sample chunk, with gradients from
``torch.autograd.grad`` on a private copy of the input (never ``.backward()``, so no
parameter's ``.grad`` changes). :class:`InputGradientExplainer` is the shared engine that the
rectifier-rule explainers in :mod:`xai_torch.backprop` reuse.
"""
from __future__ import annotations

from typing import Optional

import torch

from .errors import XaiError
from .explainer import Explainer, Explanation, result_dtype
from .hooks import HookSession
from .targets import Target


class InputGradientExplainer(Explainer):
    """Engine for attributions built from ``dF_c/dx``: override :meth:`_attribute` (how the
    gradient becomes an attribution) and/or :meth:`_forward` (how the model is run)."""

    def _forward(self, x: torch.Tensor, state: dict):
        """Run the model on ``x`` (which requires grad). ``state`` is shared by the chunks of
        one call."""
        return self.model(x)

    def _attribute(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad

    def _make_result(self, attributions, targets, scores, state: dict) -> Explanation:
        return Explanation(attributions, targets, scores)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession) -> Explanation:
        state: dict = {}

        def chunk(xc: torch.Tensor, rows: torch.Tensor):
            with torch.inference_mode(False), torch.enable_grad():
                xg = xc.detach().clone().requires_grad_(True)
                out = self._forward(xg, state)
                scores, classes = target.scores(out, rows)
                if not scores.requires_grad:
                    raise XaiError(
                        f"{type(self).__name__}: the target score does not depend on x through "
                        "autograd (the model or the target callable detaches it, or runs under "
                        "torch.no_grad), so it has no gradient."
                    )
                (grad,) = torch.autograd.grad(scores.sum(), xg)
                attr = self._attribute(xg.detach(), grad)
            return attr.detach(), scores.detach(), classes

        parts = self._map_samples(x, target, chunk)
        dtype = result_dtype(x)
        classes = None if parts[0][2] is None else self._per_image([p[2] for p in parts], x, target)
        return self._make_result(self._per_image([p[0] for p in parts], x, target, dtype), classes,
                                 self._per_image([p[1] for p in parts], x, target, dtype), state)


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

    def __init__(self, model, *, abs: bool = False, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.abs = bool(abs)

    def _config(self) -> dict:
        return {"abs": self.abs, **super()._config()}

    def _attribute(self, x, grad):
        return grad.abs() if self.abs else grad


class InputXGradient(InputGradientExplainer):
    """Gradient x input (Shrikumar et al. 2016): ``x * dF_c/dx``, signed.

    Depends on the input parametrisation (normalisation changes it); equals Integrated
    Gradients with a zero baseline for bias-free piecewise-linear models.

    Example:
        >>> attr = xt.InputXGradient(model)(x)      # (B, C, H, W)
    """

    def _attribute(self, x, grad):
        return x * grad
