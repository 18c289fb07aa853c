"""The CAM engine: per-call capture and state, attached mode, the fusion of several layers.

:class:`LayerCAMBase` runs one forward pass with a :class:`~xai_torch.hooks.LayerTap` on each
target layer, then one ``torch.autograd.grad`` to the captured activations (no backward below
the layer). A variant is its channel-weight function (:meth:`LayerCAMBase.channel_weights`) or
its map function (:meth:`LayerCAMBase.layer_map`); see :mod:`xai_torch.cam` for the arguments.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from ..errors import XaiError, XaiWarning, describe
from ..explainer import Explainer, Explanation
from ..hooks import HookSession, LayerTap, check_hookable
from ..imageops import minmax
from ..layers import auto_reshape, find_layers
from ..rules import RectifierMode, wrapper_errors
from ..runner import ModelRunner, result_dtype
from ..targets import Target
from .options import CAMOptions
from .options import take as take  # re-exported: the other layer methods import it from here
from .smooth import AUGMENTATIONS, augmented_mean, first_component


@dataclass
class CAMExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` plus the layer-resolution results.

    Attributes:
        layer_maps: one raw map per layer after the ReLU, ``(B, [K,] 1, h, w)``.
        weights: per-layer channel weights ``(B, [K,] C)`` for weight-based variants, else None.
        layers: the dotted names of the layers.
    """

    layer_maps: list[torch.Tensor] = field(default_factory=list)
    weights: list[Optional[torch.Tensor]] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)


@dataclass
class ChunkMaps:
    """The results for one chunk of ``n`` samples.

    Attributes:
        maps: per layer, the map after the ReLU ``(n, 1, h, w)``.
        weights: per layer, the channel weights ``(n, C)`` or None (element-wise variants).
        scores: the target scores ``(n,)``, detached.
        classes: the class of each sample ``(n,)``, or None for callable targets.
        pixels: pixel attributions that replace the maps (Guided Grad-CAM), else None.
    """

    maps: list[torch.Tensor]
    weights: list[Optional[torch.Tensor]]
    scores: torch.Tensor
    classes: Optional[torch.Tensor]
    pixels: Optional[torch.Tensor] = None


@dataclass
class CAMState:
    """What the chunks of one call share.

    Attributes:
        run: the model runner of the call (every model call of the explainer goes through it).
        tap: the tap that records the target layers (the call's own, or the ``with`` block's).
        attached: the maps come from the user's forward: its graph is kept for them.
        mode: Guided Grad-CAM's rectifier interception of the chunk's forward.
        guided: Guided Grad-CAM's guided input gradient of the chunk.
    """

    run: ModelRunner
    tap: LayerTap
    attached: bool = False
    mode: Optional[RectifierMode] = None
    guided: Optional[torch.Tensor] = None


def _gather(items: Sequence[Optional[torch.Tensor]], batch: int, target: Target, device: torch.device,
            dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
    """Per-sample chunk results as ``(B, [K,] ...)`` on ``device``."""
    if items[0] is None:
        return None
    t = torch.cat([i for i in items if i is not None]).to(device=device, dtype=dtype)
    return t.reshape(batch, target.k, *t.shape[1:]) if target.k is not None else t


def _interleave(cols: list[ChunkMaps]) -> ChunkMaps:
    """K per-column results of B images -> one result of B * K samples (image-major)."""
    def mix(ts: Sequence[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
        if ts[0] is None:
            return None
        return torch.stack([t for t in ts if t is not None], 1).flatten(0, 1)

    if len(cols) == 1:
        return cols[0]
    first = cols[0]
    maps = [mix([c.maps[i] for c in cols]) for i in range(len(first.maps))]
    weights = [mix([c.weights[i] for c in cols]) for i in range(len(first.weights))]
    scores = mix([c.scores for c in cols])
    assert scores is not None
    return ChunkMaps([m for m in maps if m is not None], weights, scores, mix([c.classes for c in cols]),
                     mix([c.pixels for c in cols]))


class LayerCAMBase(Explainer):
    """Base of the CAM family. A variant overrides :meth:`channel_weights` (Grad-CAM style:
    map = ReLU(sum_k w_k A_k)) or :meth:`layer_map` (element-wise variants)."""

    #: whether the variant needs dScore/dA (CAM and Score-CAM do not)
    needs_gradient: ClassVar[bool] = True
    #: whether ``from_output`` can explain the user's own forward (see :meth:`from_output`)
    attachable: ClassVar[bool] = True
    #: whether attached mode keeps a copy of the model's input (Score-CAM's masked forwards)
    keeps_input: ClassVar[bool] = False

    def __init__(self, model: nn.Module, layer: Any, *, upsample: bool = True, call: Optional[int] = None,
                 reshape: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None, relu: bool = True,
                 interpolation: str = "bilinear", layer_input: bool = False, output_index: Optional[int] = None,
                 unreachable: str = "raise", eigen_smooth: bool = False, aug_smooth: bool = False) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        for name, flag in (("eigen_smooth", eigen_smooth), ("aug_smooth", aug_smooth)):
            if not isinstance(flag, bool):
                raise XaiError(f"{name} must be True or False; got {describe(flag)}.")
        self.eigen_smooth, self.aug_smooth = eigen_smooth, aug_smooth
        self.options = CAMOptions(relu=relu, interpolation=interpolation, layer_input=layer_input,
                                  output_index=output_index, unreachable=unreachable)
        if not isinstance(model, nn.Module):
            raise XaiError(f"{type(self).__name__} needs an nn.Module to find layer(s) in; got {type(model).__name__}.")
        self.model: nn.Module = model
        self.layer = layer
        self.layers = find_layers(model, layer)
        check_hookable(model, self.layers)
        self.upsample = bool(upsample)
        if call is not None and (isinstance(call, bool) or not isinstance(call, int)):
            raise XaiError(f"call must be None or an int; got {describe(call)}.")
        self.call = call
        if reshape is not None and not callable(reshape):
            raise XaiError(f"reshape must be a callable (B, ...) -> (B, C, h, w); got {describe(reshape)}.")
        self.reshape = reshape if reshape is not None else auto_reshape(model, self.layers)
        if len(self.layers) > 1 and not self.upsample:
            raise XaiError("several layers are fused at the input resolution: use upsample=True.")
        # one per open ``with`` block, of any thread: read through list() copies (other threads add and remove)
        self._taps: list[LayerTap] = []

    def _config(self) -> dict[str, Any]:
        names = [n for n, _ in self.layers]
        return {"layer": names[0] if len(names) == 1 else names, "upsample": self.upsample,
                **({"call": self.call} if self.call is not None else {}), **self.options.config(),
                **({"eigen_smooth": True} if self.eigen_smooth else {}),
                **({"aug_smooth": True} if self.aug_smooth else {}),
                **super()._config()}

    # -- what a variant overrides --------------------------------------------------------
    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``(n, C)`` channel weights from activations and gradients ``(n, C, h, w)``."""
        raise NotImplementedError

    def layer_map(self, acts: torch.Tensor,
                  grads: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Map before the ReLU ``(n, 1, h, w)`` and the channel weights (or None)."""
        if grads is None:
            raise TypeError(f"{type(self).__name__}.layer_map needs gradients")
        w = self.channel_weights(acts, grads)
        return self.combine(w[:, :, None, None] * acts), w

    def combine(self, weighted: torch.Tensor) -> torch.Tensor:
        """``(n, C, h, w)`` weighted activations -> the map before the ReLU ``(n, 1, h, w)``: their
        sum over channels, or their first principal component with ``eigen_smooth``."""
        return first_component(weighted) if self.eigen_smooth else weighted.sum(1, keepdim=True)

    # -- one call ----------------------------------------------------------------------------
    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, details: bool = True,
                 **kwargs: Any) -> CAMExplanation:
        if not self.aug_smooth:
            return self._explain_once(x, target, session, details, **kwargs)
        runs: dict[int, CAMExplanation] = {}

        def once(z: torch.Tensor) -> torch.Tensor:
            runs[len(runs)] = res = self._explain_once(z, target, session, details, **kwargs)
            return res.attributions

        mean = augmented_mean(once, x)
        plain = runs[AUGMENTATIONS.index((False, 1.0))]
        plain.attributions = mean
        return plain

    def _explain_once(self, x: torch.Tensor, target: Target, session: HookSession, details: bool = True,
                      **kwargs: Any) -> CAMExplanation:
        run = self.runner(x, target)
        state = CAMState(run, LayerTap(session, self.model, self.layers, layer_inputs=self.options.layer_input))
        k = target.k or 1
        xd = run.place(x)  # the runner copies chunks of it before the model sees them

        def chunk(start: int, stop: int) -> ChunkMaps:
            rows = torch.arange(start, stop, device=run.device)
            return self._chunk(xd[rows // k] if k > 1 else xd[start:stop], rows, target, state)

        with contextlib.ExitStack() as stack:
            for tap in list(self._taps):  # the call's own forwards are not the user's
                if tap.thread == threading.get_ident():
                    stack.enter_context(tap.paused())
            parts = run.map(chunk, x.shape[0] * k)
        return self._assemble(parts, x.shape[0], x.shape[-2:], x.device, result_dtype(x), target)

    def _grid(self, t: torch.Tensor) -> torch.Tensor:
        g = self.reshape(t) if self.reshape is not None else t
        if not isinstance(g, torch.Tensor) or g.ndim != 4:
            hint = " (token layers need reshape=xt.vit_reshape() or xt.swin_reshape())" if self.reshape is None else ""
            raise XaiError(f"the layer output must be (B, C, h, w) after reshape; got a {describe(g)}{hint}.")
        return g

    def _forward(self, x: torch.Tensor, state: CAMState) -> Any:
        return state.run.forward(x, grad=True)

    def _chunk(self, xc: torch.Tensor, rows: torch.Tensor, target: Target, state: CAMState) -> ChunkMaps:
        """Maps for the samples ``rows`` (input chunk ``xc``)."""
        with torch.inference_mode(False), torch.enable_grad():
            xg = xc.detach().clone().requires_grad_(True)
            out = self._forward(xg, state)
            return self._maps(out, take(state.tap, self.call, self.options), rows, target, xg, state)

    def _maps(self, out: Any, acts: list[torch.Tensor], rows: torch.Tensor, target: Target,
              x: Optional[torch.Tensor], state: CAMState) -> ChunkMaps:
        """Maps from a forward's output and captured activations (runs with gradients on)."""
        scores, classes = target.scores(out, rows)
        grads: Optional[Sequence[torch.Tensor]] = None
        if self.needs_gradient:
            if not scores.requires_grad:
                hint = (" Run the forward inside the `with` block with gradients enabled (not under "
                        "torch.no_grad() or torch.inference_mode()); with frozen parameters, call "
                        "x.requires_grad_() first.") if state.attached else " (it is detached)."
                raise XaiError(f"{type(self).__name__}: the target score has no gradient.{hint}")
            self._check_graph(acts, state)
            grads = self._gradients(scores, acts, x, state)
        maps: list[torch.Tensor] = []
        weights: list[Optional[torch.Tensor]] = []
        for i, a in enumerate(acts):
            g = None
            if grads is not None:
                g = self._grid(grads[i].detach())
                if self.reshape is not None:
                    self._warn_unreachable(i, grads[i], g)
            m, w = self.layer_map(self._grid(a.detach()), g)
            maps.append(self.options.rectify(m))
            weights.append(w)
        return ChunkMaps(maps, weights, scores.detach(), classes, self._pixels(x, maps, state))

    def _check_graph(self, acts: list[torch.Tensor], state: CAMState) -> None:
        """Raise when a layer's output has no gradient while the score has one: the model runs
        the layer under ``torch.no_grad()`` (``torch.utils.checkpoint(use_reentrant=True)``
        does) or detaches its input; in attached mode, the parameters below it may be frozen."""
        for (name, _), a in zip(self.layers, acts):
            if not a.requires_grad:
                frozen = ("its parameters and those before it are frozen and x does not require grad (call "
                          "x.requires_grad_() before your forward), or ") if state.attached else ""
                raise XaiError(
                    f"{type(self).__name__}: the output of layer {name!r} has no gradient although the target "
                    f"score has one: {frozen}the model runs the layer under torch.no_grad() or detaches its "
                    "input, as torch.utils.checkpoint(..., use_reentrant=True) does. Use use_reentrant=False in "
                    "the model, or choose a layer outside that part.")

    def _gradients(self, scores: torch.Tensor, acts: list[torch.Tensor], x: Optional[torch.Tensor],
                   state: CAMState) -> Sequence[torch.Tensor]:
        grads = torch.autograd.grad(scores.sum(), acts, retain_graph=state.attached, allow_unused=True)
        return self.options.fill_unreachable(type(self).__name__, [n for n, _ in self.layers], grads, acts)

    def _pixels(self, x: Optional[torch.Tensor], maps: list[torch.Tensor], state: CAMState) -> Optional[torch.Tensor]:
        """Pixel attributions that replace the maps (Guided Grad-CAM), else None."""
        return None

    def _warn_unreachable(self, i: int, tokens_grad: torch.Tensor, grid_grad: torch.Tensor) -> None:
        if not bool(grid_grad.any()) and bool(tokens_grad.any()):
            warnings.warn(
                f"{type(self).__name__}: the spatial tokens of layer {self.layers[i][0]!r} do not reach "
                "the output (only the class token does, as in the last block of a ViT); its map is "
                "empty. Choose an earlier block.", XaiWarning, stacklevel=7)

    def _assemble(self, parts: list[ChunkMaps], batch: int, size: Sequence[int], device: torch.device,
                  dtype: torch.dtype, target: Target) -> CAMExplanation:
        """Chunk results -> the explanation: layer maps upsampled (one layer) or fused (several)."""
        def cat(items: Sequence[Optional[torch.Tensor]], dt: Optional[torch.dtype] = dtype) -> Optional[torch.Tensor]:
            return _gather(items, batch, target, device, dt)

        layer_maps = [cat([p.maps[j] for p in parts]) for j in range(len(self.layers))]
        weights = [cat([p.weights[j] for p in parts]) for j in range(len(self.layers))]
        lm = [m for m in layer_maps if m is not None]
        size = (int(size[0]), int(size[1]))
        if len(lm) == 1:
            m = lm[0]
            maps = self.options.resize(m.flatten(0, -4), size).reshape(*m.shape[:-2], *size) if self.upsample else m
        else:  # pytorch-grad-cam's fusion: min-max at layer resolution, resize, mean, min-max
            ups = [self.options.resize(minmax(m.flatten(0, -4), eps=1e-7), size) for m in lm]
            maps = minmax(torch.stack(ups).mean(0), eps=1e-7).reshape(*lm[0].shape[:-2], *size)
        pixels = cat([p.pixels for p in parts])
        scores = cat([p.scores for p in parts])
        assert scores is not None
        return CAMExplanation(maps if pixels is None else pixels, cat([p.classes for p in parts], None), scores,
                              lm, weights, [n for n, _ in self.layers])

    # -- attached mode -----------------------------------------------------------------------
    def _open(self, session: HookSession) -> None:
        """Inside ``with``: keep a tap on the layers for the user's own forwards."""
        if not self.attachable:
            return
        tap = LayerTap(session, self.model, self.layers, keep_input=self.keeps_input,
                       layer_inputs=self.options.layer_input)
        self._taps.append(tap)
        session.callback(lambda: self._taps.remove(tap))

    def from_output(self, output: Any, target: Any = None) -> CAMExplanation:
        """Explain the forward you just ran inside the ``with`` block, without a second forward.

        Inside ``with explainer:`` the capture hooks stay on the layers and record your own
        forward passes of the model (from this thread; the last forward wins). Pass the output
        of the last one, unchanged. The result equals ``explainer.explain(x, target)``.

        Args:
            output: what ``model(x)`` returned in the last forward inside the block. Gradient
                variants need that forward to run with gradients enabled (not under
                ``torch.no_grad()``); CAM and Score-CAM do not. Its graph is kept, so you can
                still backpropagate through ``output`` afterwards.
            target: as for a call (None: the argmax of ``out``).

        Returns:
            :class:`CAMExplanation`, as ``explainer.explain(x, target)`` gives it (on the device
            of ``x``); ``.attributions`` are the maps.

        Raises:
            XaiError: outside a ``with`` block (or from another thread), before any forward in
            it, for an ``output`` that is not the last forward's output, and for Guided Grad-CAM
            (it needs its own forward with the guided rule).

        Example:
            >>> with xt.GradCAM(model, layer="layer4") as cam:
            ...     for x, y in loader:
            ...         out = model(x)                      # your forward, the only one
            ...         maps = cam.from_output(out, y).attributions   # (B, 1, H, W)
        """
        name = type(self).__name__
        tap = self._attached_tap()
        if tap.output is None:
            raise XaiError(f"{name}.from_output: the model has not run inside this `with` block yet (or its "
                           "last forward raised); run out = model(x) inside the block first, then pass that out.")
        if output is not tap.output:
            raise XaiError(f"{name}.from_output: output is not the output of the model's last forward in this "
                           "`with` block; pass the value model(x) returned, unchanged, before the next forward "
                           "(each forward replaces the captured activations).")
        shape, device = tap.input_shape, tap.input_device
        if shape is None or device is None or len(shape) != 4 or (self.keeps_input and tap.input is None):
            raise XaiError(f"{name}.from_output needs the images as the model's first positional argument, "
                           "(B, C, H, W) tensor; call model(x) with x so.")
        batch = shape[0]
        tgt = self._coerce_target(target, batch)
        run = ModelRunner(self.model, batch_size=self.batch_size, progress=self.progress, name=name,
                          sample=tap.input, target=tgt, device=device)
        state = CAMState(run, tap, attached=True)
        acts = take(tap, self.call, self.options)
        base = torch.arange(batch, device=device) * (tgt.k or 1)
        with torch.enable_grad(), tap.paused(), wrapper_errors(name):
            cols = [self._maps(output, acts, base + j, tgt, tap.input, state) for j in range(tgt.k or 1)]
        dtype = torch.float64 if tap.input_dtype == torch.float64 else torch.float32
        return self._assemble([_interleave(cols)], batch, shape[-2:], device, dtype, tgt)

    def _attached_tap(self) -> LayerTap:
        name = type(self).__name__
        if self.aug_smooth:
            raise XaiError(f"{name}(aug_smooth=True) explains six augmented copies of the images, not your forward: "
                           "call it on the images, cam(x, target).")
        if not self.attachable:
            raise XaiError(f"{name} has no attached mode: its guided backward needs a forward pass of its own "
                           "with the rectifier rule, which your forward did not have. Call it on the images: "
                           "cam(x, target).")
        mine = [t for t in list(self._taps) if t.thread == threading.get_ident()]
        if not mine:
            raise XaiError(
                f"{name}.from_output needs the capture hooks of a `with` block opened on this thread: "
                f"`with xt.{name}(model, layer=...) as cam: out = model(x); maps = cam.from_output(out)`. "
                "Outside a `with` block, call cam(x, target) instead.")
        return mine[-1]

