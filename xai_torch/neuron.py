"""Explain one neuron of an internal layer: :class:`NeuronTarget`.

A target that scores a unit of a layer's output instead of a class of the model's output. It
reads the layer during the explainer's own forward passes: every explainer call attaches it
(:meth:`NeuronTarget.attach`, once per call, before the first forward), which puts a
:class:`~xai_torch.hooks.LayerTap` on the layer in the call's :class:`~xai_torch.hooks.HookSession`;
:meth:`NeuronTarget.scores` then reads the captured activation of the rows being scored. The
hook-up is duck-typed: any target with an ``attach(model, session)`` method gets the same call.

Gradient explainers (Gradient, InputXGradient, GuidedBackprop, Deconvnet, the path methods,
SmoothGrad) attribute the neuron's value to the input (Captum ``NeuronGradient``,
``NeuronGuidedBackprop``, ``NeuronDeconvolution``, ``NeuronIntegratedGradients``); the CAMs
weigh the layer they look at by the neuron's gradient; the forward-only methods (Occlusion,
RISE, LIME, KernelSHAP) score the neuron's value on the perturbed inputs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import torch
from torch import nn

from .errors import XaiError, describe
from .hooks import HookSession, LayerTap
from .layers import LayerSpec, find_layer
from .targets import Target

__all__ = ["NeuronTarget"]

Index = Union[int, tuple[int, ...], Callable[[torch.Tensor], torch.Tensor], list[Any]]


def _index_tensor(index: Any) -> torch.Tensor:
    """An int -> ``()``, a tuple -> ``(d,)``, a list -> per image (recursively), as long."""
    if isinstance(index, bool):
        raise XaiError(f"a neuron index is an int, a tuple of ints or a list of them; got {index!r}.")
    if isinstance(index, int):
        return torch.tensor(index, dtype=torch.long)
    if isinstance(index, tuple):
        if not index or not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
            raise XaiError(f"a neuron index tuple holds ints, one per layer dim after the batch; got {index!r}.")
        return torch.tensor(index, dtype=torch.long)
    if isinstance(index, list) and index:
        items = [_index_tensor(i) for i in index]
        if len({tuple(t.shape) for t in items}) != 1:
            raise XaiError("the entries of a neuron index list must all be ints, or all tuples of one length "
                           "(or all lists of the same number of them).")
        return torch.stack(items)
    raise XaiError("index must be an int (a channel), a tuple (one neuron, e.g. (c, h, w) or (token, d)), a "
                   f"callable layer_output -> (B,), or a list of ints / tuples per image; got {describe(index)}.")


class _CopyTap(LayerTap):
    """A :class:`~xai_torch.hooks.LayerTap` that records a copy of the layer's output (in the
    graph) and lets the network go on with the output itself: a later in-place op cannot change
    the record, and an explainer's own tap on the same layer (``layer=``, a CAM) sees the tensor
    the neuron is read from, so the neuron's gradient reaches it."""

    def _recorder(self, i: int) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if self._active():
                self.outputs[i].append(output.clone() if isinstance(output, torch.Tensor) else output)

        return hook


class NeuronTarget(Target):
    """The value of one neuron (or channel) of an internal layer's output, as ``target=``.

    Args:
        layer: a dotted module name or a module of the model.
        index: which unit of the layer output ``A`` ``(B, ...)``:

            * a tuple ``(c, h, w)`` (or ``(token, d)``, ``(d,)``...): the neuron ``A[:, c, h, w]``;
            * an int ``c``: the channel's mean over the remaining dims, ``A[:, c].mean()``
              (``A[:, c]`` for a ``(B, D)`` layer);
            * a callable ``A -> (B,)``: any reduction of the layer output;
            * a list with one such int or tuple per image, or per image a list of ``K`` of
              them (``K`` results per image, like ``(B, K)`` class targets).
        call: which call of a layer that runs several times per forward (a reused module).

    Returns (as a target):
        one score per row; no class (``targets`` of the explanation is ``None``).

    Raises:
        XaiError: an unknown layer (the closest names listed), a layer that did not run or
        returned no tensor, an index out of range for the layer's shape (the shape printed), a
        list whose length is not the batch size, or use outside an explainer call.

    Example:
        >>> gbp = xt.GuidedBackprop(model)(x, target=xt.NeuronTarget("layer3", 17))  # a filter
        >>> xt.Gradient(model)(x, target=xt.NeuronTarget("layer4.1.conv2", (3, 2, 2)))
        >>> xt.Occlusion(model)(x, target=xt.NeuronTarget("layer4", [[0, 5], [1, 7]]))  # (B, K)
    """

    def __init__(self, layer: LayerSpec, index: Index, *, call: Optional[int] = None) -> None:
        if not isinstance(layer, (str, nn.Module)):
            raise XaiError(f"layer must be a dotted module name or an nn.Module; got {describe(layer)}.")
        if call is not None and (isinstance(call, bool) or not isinstance(call, int)):
            raise XaiError(f"call must be None or an int; got {describe(call)}.")
        self.layer, self.call, self.index = layer, call, index
        self.fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
        self.idx: Optional[torch.Tensor] = None
        self.per_image = False
        if callable(index):
            self.fn = index
        else:
            self.idx = _index_tensor(index)
            self.per_image = isinstance(index, list)
        self.k: Optional[int] = None
        self.name = layer if isinstance(layer, str) else ""
        self._tap: Optional[LayerTap] = None

    def __repr__(self) -> str:
        index = getattr(self.index, "__name__", None) or (self.idx.tolist() if self.idx is not None else self.index)
        return f"NeuronTarget({self.name or type(self.layer).__name__!r}, {index!r})"

    # -- a call's copy ----------------------------------------------------------------------
    def bind(self, batch: int) -> NeuronTarget:
        """A copy for one call on ``batch`` images (its own tap), the per-image list checked."""
        bound = NeuronTarget.__new__(NeuronTarget)
        bound.__dict__.update(self.__dict__)
        bound._tap = None
        if self.per_image and self.idx is not None:
            if self.idx.shape[0] != batch:
                raise XaiError(f"NeuronTarget has {self.idx.shape[0]} per-image indices but x has {batch} "
                               "images; give one entry per image, or one int / tuple for all of them.")
            # per image: an int channel or a tuple neuron; or a list of K of them
            if isinstance(self.index, list) and isinstance(self.index[0], list):
                bound.k = int(self.idx.shape[1])
        return bound

    def attach(self, model: Any, session: HookSession) -> None:
        """Put a tap on the layer of ``model`` in ``session`` (one explainer call). Called by
        the explainer base before the call's first forward."""
        if not isinstance(model, nn.Module):
            raise XaiError(f"NeuronTarget needs an nn.Module to find its layer in; got {type(model).__name__}.")
        self.name, module = find_layer(model, self.layer, "NeuronTarget layer")
        self._tap = _CopyTap(session, model, [(self.name, module)])

    # -- scoring ------------------------------------------------------------------------------
    def activation(self, n: int) -> torch.Tensor:
        """The layer's output in the last forward, ``(n, ...)`` (rows repeated when a forward
        served ``K`` targets per image)."""
        if self._tap is None:
            raise XaiError("NeuronTarget reads a layer during an explainer's own forward passes: pass it as "
                           "target= of an xai_torch explainer call (it cannot score a bare output).")
        outs = self._tap.outputs[0]
        if not outs:
            raise XaiError(f"NeuronTarget: layer {self.name!r} was not called during the forward pass; choose a "
                           "layer on the path from the input to the output.")
        if self.call is None and len(outs) > 1:
            raise XaiError(f"NeuronTarget: layer {self.name!r} runs {len(outs)} times per forward pass; pass "
                           f"call=0..{len(outs) - 1} to say which call.")
        c = 0 if self.call is None else self.call
        if not -len(outs) <= c < len(outs):
            raise XaiError(f"NeuronTarget: call={c} but layer {self.name!r} runs {len(outs)} times per forward.")
        act = outs[c]
        if not isinstance(act, torch.Tensor) or act.ndim < 2:
            raise XaiError(f"NeuronTarget: layer {self.name!r} returns a {describe(act)}, not a (B, ...) tensor.")
        if act.shape[0] != n:
            if n % act.shape[0]:
                raise XaiError(f"NeuronTarget: {n} rows to score but layer {self.name!r} saw {act.shape[0]} samples.")
            act = act.repeat_interleave(n // act.shape[0], 0)
        return act

    def scores(self, output: Any, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        n = rows.shape[0]
        act = self.activation(n)
        if self.fn is not None:
            s = self.fn(act)
            if not isinstance(s, torch.Tensor) or s.shape != (n,):
                raise XaiError(f"the NeuronTarget callable must return ({n},) scores from the layer output "
                               f"{tuple(act.shape)}; it returned a {describe(s)}.")
            return s, None
        assert self.idx is not None
        idx = self.idx
        if self.per_image:
            idx = idx.flatten(0, 1) if self.k is not None else idx
            idx = idx.to(rows.device)[rows]
        else:
            idx = idx.expand(n, *idx.shape).to(act.device)
        idx = idx.to(act.device)
        dims = act.shape[1:]
        if idx.ndim == 1:  # a channel: its mean over the other dims
            self._check(idx[:, None], dims[:1], act)
            return act[torch.arange(n, device=act.device), idx].reshape(n, -1).mean(1), None
        if idx.shape[1] != len(dims):
            raise XaiError(f"NeuronTarget index {tuple(idx[0].tolist())} has {idx.shape[1]} entries but layer "
                           f"{self.name!r} outputs shape {tuple(act.shape)}: give one index per dim after the batch "
                           f"({len(dims)}), or an int channel.")
        self._check(idx, dims, act)
        return act[(torch.arange(n, device=act.device),) + tuple(idx.T)], None

    def _check(self, idx: torch.Tensor, dims: Any, act: torch.Tensor) -> None:
        size = torch.tensor(list(dims), device=idx.device)[: idx.shape[1]]
        bad = (idx < 0) | (idx >= size)
        if bool(bad.any()):
            row = int(bad.any(1).nonzero()[0, 0])
            raise XaiError(f"NeuronTarget index {tuple(idx[row].tolist())} is out of range for layer "
                           f"{self.name!r}, whose output has shape {tuple(act.shape)} (batch first).")
