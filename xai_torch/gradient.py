"""Plain gradient explainers: :class:`Gradient` and :class:`InputXGradient`.

Both are one forward + one backward per sample chunk, with gradients from
``torch.autograd.grad`` on a private copy of the input (never ``.backward()``, so no
parameter's ``.grad`` changes). :class:`InputGradientExplainer` is the shared engine that the
rectifier-rule explainers in :mod:`xai_torch.backprop` reuse.

Layer attribution (every explainer of the engine): with ``layer=`` the gradient is taken with
respect to that layer's output (``layer_input=True``: its first input), captured by a
:class:`~xai_torch.hooks.LayerTap` during the same forward; the backward stops there.

Args (of every explainer built on the engine):
    layer: ``None`` (attribute to the input ``x``), a dotted module name, a module of the
        model, or a list of them. A list gives a dict ``name -> attributions``, all from one
        backward pass per chunk.
    layer_input: attribute to the layer's input instead of its output (shap
        ``GradientExplainer((model, layer))``'s convention, Captum's
        ``attribute_to_layer_input=True``).
    call: which call of a layer that runs several times per forward (a reused module).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .cam.base import take
from .errors import XaiError, describe
from .explainer import Explainer, Explanation
from .hooks import HookSession, LayerTap
from .layers import find_layers
from .runner import result_dtype
from .targets import Target

__all__ = ["Gradient", "InputGradientExplainer", "InputXGradient"]


class InputGradientExplainer(Explainer):
    """Engine for attributions built from ``dF_c/dx``: override :meth:`_attribute` (how the
    gradient becomes an attribution) and/or :meth:`_forward` (how the model is run).
    ``layer``, ``layer_input``, ``call``: see the module doc. For :class:`Gradient`,
    :class:`InputXGradient`, guided backprop and DeconvNet, ``x`` may be a tuple of tensors (an
    image and metadata...): the attributions are then a tuple, one per member (not with
    ``layer=``)."""

    def __init__(self, model: Any, *, layer: Any = None, layer_input: bool = False, call: Optional[int] = None,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.layer = layer
        self.layers: Optional[list[tuple[str, nn.Module]]] = None
        if layer is not None:
            if not isinstance(model, nn.Module):
                raise XaiError(f"{type(self).__name__}(layer=...) needs an nn.Module to find the layer in; "
                               f"got {type(model).__name__}.")
            self.layers = find_layers(model, layer)
        if not isinstance(layer_input, bool):
            raise XaiError(f"layer_input must be True or False; got {describe(layer_input)}.")
        self.layer_input = layer_input
        if call is not None and (isinstance(call, bool) or not isinstance(call, int)):
            raise XaiError(f"call must be None or an int; got {describe(call)}.")
        self.call = call

    def _config(self) -> dict[str, Any]:
        if self.layers is None:
            return super()._config()
        names = [n for n, _ in self.layers]
        return {"layer": names if not isinstance(self.layer, (str, nn.Module)) else names[0],
                **({"layer_input": True} if self.layer_input else {}),
                **({"call": self.call} if self.call is not None else {}), **super()._config()}

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
        layers = self.layers or []
        tap = LayerTap(session, self.model, layers, layer_inputs=self.layer_input) if layers else None
        names = [n for n, _ in layers] or ["x"]

        def taken(leaf: torch.Tensor) -> list[torch.Tensor]:
            return [leaf] if tap is None else take(tap, self.call)

        def chunk(start: int, stop: int) -> tuple[list[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
            rows = torch.arange(start, stop, device=run.device)
            xc = xd[rows // k] if k > 1 else xd[start:stop]
            g = run.layer_grad(xc, rows, taken, names, forward=lambda z: self._forward(z, state))
            return [self._attribute(a, d).detach() for a, d in zip(g.acts, g.grads)], g.scores, g.classes

        parts = run.map(chunk, x.shape[0] * k)
        dtype = result_dtype(x)
        classes = [p[2] for p in parts]
        targets = None if classes[0] is None else self._per_image([c for c in classes if c is not None], x, target)
        maps = [self._per_image([p[0][j] for p in parts], x, target, dtype) for j in range(len(names))]
        attributions: Any = maps[0] if tap is None or isinstance(self.layer, (str, nn.Module)) \
            else dict(zip(names, maps))
        return self._make_result(attributions, targets, self._per_image([p[1] for p in parts], x, target, dtype),
                                 state)


class Gradient(InputGradientExplainer):
    """Vanilla gradient saliency (Simonyan et al. 2013): ``dF_c/dx``, signed.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        abs: return ``|dF_c/dx|`` (Captum ``Saliency``'s default; the paper's map is the
            max over channels of that).
        layer, layer_input, call: attribute to a layer (see :mod:`xai_torch.gradient`):
            ``dF_c/dA`` for the layer's output ``A`` (Captum ``LayerGradientXActivation``
            without the activation factor).

    Returns:
        ``(B, C, H, W)`` attributions (``(B, K, C, H, W)`` for ``(B, K)`` targets); with
        ``layer=``, shaped like the layer's output ``(B, [K,] ...)``, or a dict
        ``name -> tensor`` for a list of layers.

    Cost:
        One forward and one backward per sample.

    Example:
        >>> grads = xt.Gradient(model)(x, target=281)
        >>> xt.Gradient(model, layer="layer4")(x).shape        # resnet18 at 224 px
        torch.Size([8, 512, 7, 7])
    """

    def __init__(self, model: Any, *, abs: bool = False, layer: Any = None, layer_input: bool = False,
                 call: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, layer=layer, layer_input=layer_input, call=call, batch_size=batch_size,
                         progress=progress)
        self.abs = bool(abs)

    tuple_inputs = True

    def _config(self) -> dict[str, Any]:
        return {"abs": self.abs, **super()._config()}

    def _attribute(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.abs() if self.abs else grad


class InputXGradient(InputGradientExplainer):
    """Gradient x input (Shrikumar et al. 2016): ``x * dF_c/dx``, signed.

    Depends on the input parametrisation (normalisation changes it); equals Integrated
    Gradients with a zero baseline for bias-free piecewise-linear models. With ``layer=``
    (see :mod:`xai_torch.gradient`) it is activation x gradient at the layer, ``A * dF_c/dA``
    (Captum ``LayerGradientXActivation``), shaped like ``A``.

    Example:
        >>> attr = xt.InputXGradient(model)(x)      # (B, C, H, W)
        >>> acts = xt.InputXGradient(model, layer=["layer3", "layer4"])(x)   # dict name -> tensor
    """

    tuple_inputs = True

    def _attribute(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return x * grad
