"""Ablation-CAM: each channel weighted by the relative drop of the score when it is zeroed.

By default the whole model runs on each ablated copy and a forward hook swaps the layer's output
for the ablated one (pytorch-grad-cam's way). With ``tail=True`` the ablated forwards run from
the layer on: the model is traced with ``torch.fx`` (on a copy), and the graph after the layer is
replayed on the ablated activations, with the values it needs from before the layer (skip
connections) taken from the clean forward.
"""
from __future__ import annotations

import threading
from copy import deepcopy
from typing import Any, ClassVar, Optional

import torch
from torch import fx, nn

from ..errors import XaiError
from ..hooks import strip_session_hooks
from ..runner import ModelRunner
from ..targets import ClassTarget, Target
from .base import CAMState, ChunkMaps
from .cam import ForwardOnlyCAM
from .options import take

_TRACING = threading.Lock()


class _Tail:
    """The part of a traced model after one layer: ``run(acts, images)`` gives the model's output
    for activations ``acts`` of the layer, the values from before it taken from images
    ``images`` (indices into the batch cached by :meth:`cache`)."""

    def __init__(self, model: nn.Module, layer: str, target_module: nn.Module) -> None:
        class Tracer(fx.Tracer):
            def is_leaf_module(self, m: nn.Module, name: str) -> bool:
                return m is target_module or super().is_leaf_module(m, name)

        graph = Tracer().trace(model)
        self.module = fx.GraphModule(model, graph)
        nodes = list(graph.nodes)
        calls = [n for n in nodes if n.op == "call_module" and n.target == layer]
        if len(calls) != 1:
            raise ValueError("the layer is not called exactly once in the traced graph")
        self.layer = calls[0]
        inputs = {n for n in nodes if n.op == "placeholder"}
        after: set[fx.Node] = {self.layer}
        fed: set[fx.Node] = set(inputs)
        for n in nodes:
            if any(a in after for a in n.all_input_nodes):
                after.add(n)
            if n in fed or any(a in fed for a in n.all_input_nodes):
                fed.add(n)
        self.tail = [n for n in nodes if n in after and n is not self.layer]
        # values from before the layer that the tail reads: per image (from the input) or constant
        used = {a for n in self.tail for a in n.all_input_nodes if a not in after}
        self.per_image = [n for n in used if n in fed]
        self.constant = [n for n in used if n not in fed]
        self.cached: dict[fx.Node, Any] = {}

    def cache(self, x: torch.Tensor) -> None:
        """Run the front of the graph on the clean images and keep what the tail reads."""
        interp = fx.Interpreter(self.module)
        env: dict[fx.Node, Any] = {}
        interp.env = env
        args = iter([x])
        keep = set(self.per_image) | set(self.constant)
        for n in self.module.graph.nodes:
            if n is self.layer or n in self.tail:
                continue
            env[n] = next(args) if n.op == "placeholder" else interp.run_node(n)
            if n in keep:
                self.cached[n] = env[n]
        for n in self.per_image:
            v = self.cached[n]
            if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != x.shape[0]:
                raise ValueError("a value before the layer is not per image")

    def run(self, acts: torch.Tensor, images: torch.Tensor) -> Any:
        interp = fx.Interpreter(self.module)
        env: dict[fx.Node, Any] = {n: self.cached[n] for n in self.constant}
        env.update({n: self.cached[n][images] for n in self.per_image})
        env[self.layer] = acts
        interp.env = env
        out: Any = None
        for n in self.tail:
            if n.op == "output":
                out = interp.fetch_args_kwargs_from_env(n)[0][0]
                break
            env[n] = interp.run_node(n)
        return out


class AblationCAM(ForwardOnlyCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020): ``w_k = (S - S_k) / S`` with ``S_k`` the target
    score when channel ``k`` of the layer's output is set to zero, map ``ReLU(sum_k w_k A_k)``.

    ``1 + C`` forwards per image, all (image, channel) pairs in chunks of ``batch_size``, with the
    layer's output swapped for the ablated one.

    pytorch-grad-cam's ``AblationCAM`` equals it on layers after a ReLU. On layers with negative
    values it ablates with ``min - 1e7`` instead of 0 (and its minimum shifts from one ablated
    copy to the next); this class keeps the paper's zero.

    Args:
        tail: replay only the graph after the layer (``torch.fx``): much faster for a late layer.
            Off by default: tracing runs the model's Python ``forward`` with proxies (on a deep
            copy) and patches ``nn.Module.__call__`` process-wide while it runs, so other
            threads must not run models meanwhile. The traced tail is used only when it
            reproduces the clean output; otherwise, or where the model does not trace, the
            whole model runs.

    Example:
        >>> maps = xt.AblationCAM(model, layer="layer4", batch_size=64)(x)
    """

    keeps_input: ClassVar[bool] = True  # attached mode: the ablated forwards need the images

    def __init__(self, model: nn.Module, layer: Any, *, tail: bool = False, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        if len(self.layers) > 1:
            raise XaiError("AblationCAM explains one layer at a time.")
        if self.options.layer_input:
            raise XaiError("AblationCAM ablates channels of the layer's output: layer_input=True is not supported.")
        if not isinstance(tail, bool):
            raise XaiError(f"tail must be True or False; got {tail!r}.")
        self.tail = tail

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), **({"tail": True} if self.tail else {})}

    def _tail(self, x: torch.Tensor, acts: torch.Tensor, clean: Optional[torch.Tensor]) -> Optional[_Tail]:
        """The traced tail, when the model traces (on a copy: tracing runs its Python forward) and
        the tail replays the clean output; else None (the whole model runs)."""
        if not self.tail or self.call is not None or clean is None:
            return None
        try:
            with _TRACING:  # one trace at a time (fx patches torch globally while tracing)
                copy = deepcopy(self.model)
                strip_session_hooks(copy)
                name = self.layers[0][0]
                t = _Tail(copy, name, copy.get_submodule(name))
            t.cache(x)
            again = t.run(acts, torch.arange(x.shape[0], device=x.device))
        except Exception:  # not traceable / not per image: the whole model runs instead
            return None
        scale = float(clean.abs().max()) if clean.numel() else 0.0
        same = isinstance(again, torch.Tensor) and again.shape == clean.shape and \
            bool(torch.allclose(again, clean, rtol=1e-4, atol=1e-5 * scale + 1e-12))
        return t if same else None

    def _maps(self, out: Any, acts: list[torch.Tensor], rows: torch.Tensor, target: Target,
              x: Optional[torch.Tensor], state: CAMState) -> ChunkMaps:
        state.guided = out.detach() if isinstance(out, torch.Tensor) else None  # the clean output, for _tail
        return super()._maps(out, acts, rows, target, x, state)

    def _weights(self, x: Optional[torch.Tensor], rows: torch.Tensor, acts: torch.Tensor, target: Target,
                 classes: Optional[torch.Tensor], state: CAMState) -> torch.Tensor:
        assert x is not None
        raw = take(state.tap, self.call, self.options)[0]
        if raw.shape != acts.shape:
            raise XaiError(f"AblationCAM ablates channels of a (B, C, h, w) layer output; layer {self.layers[0][0]!r} "
                           f"gives {tuple(raw.shape)} (tokens?). Choose a convolutional layer.")
        n, c = acts.shape[:2]
        chosen: Optional[Target] = None if classes is None else ClassTarget(
            classes, score=target.score if isinstance(target, ClassTarget) else "logit").bind(n)

        def score(out: Any, img: torch.Tensor) -> torch.Tensor:
            return chosen.scores(out, img)[0] if chosen is not None else target.scores(out, rows[img])[0]

        layer = self.layers[0][1]
        with torch.no_grad(), state.tap.paused():  # the ablated forwards are not explained
            tail = self._tail(x, acts, state.guided)
            every = torch.arange(n, device=acts.device)
            clean = score(tail.run(acts, every) if tail is not None else state.run.forward(x), every)

            def ablated(start: int, stop: int) -> torch.Tensor:
                pair = torch.arange(start, stop, device=acts.device)
                img, ch = pair // c, pair % c
                a = acts[img].clone()
                a[torch.arange(len(img), device=a.device), ch] = 0
                out = tail.run(a, img) if tail is not None else _swapped_forward(state.run, x[img], layer, a)
                return score(out, img)

            parts = state.run.map(ablated, n * c)
        s = torch.cat(parts).view(n, c).to(acts.dtype)
        base = clean.to(acts.dtype)[:, None]
        return (base - s) / base


def _swapped_forward(run: ModelRunner, x: torch.Tensor, layer: nn.Module, acts: torch.Tensor) -> Any:
    """The model on ``x`` with ``layer``'s output replaced by ``acts`` (a hook of this thread's
    forwards only, removed after: other threads may run the same model meanwhile)."""
    mine = threading.get_ident()

    def swap(module: nn.Module, inputs: Any, output: Any) -> Any:
        return acts if threading.get_ident() == mine else None

    handle = layer.register_forward_hook(swap)
    try:
        return run.forward(x)
    finally:
        handle.remove()
