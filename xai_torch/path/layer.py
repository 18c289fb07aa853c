"""Path methods in a layer's space: IG and Expected Gradients with ``layer=``.

With ``layer=L`` the path runs between the activations of ``L`` (its output, or with
``layer_input=True`` its first input) for the baseline and for the image, ``a_b + alpha
(a_x - a_b)``, and the integrand is ``dF/dA`` at those points (Captum
``LayerIntegratedGradients``). Completeness holds in that space: the attributions, shaped like
``A``, sum to ``F(x) - F(b)`` up to the quadrature error, when every path from the input to the
score goes through ``A``.

The mechanism: one forward of the images and of the baselines records ``a_x`` and ``a_b``;
then every path sample is a forward of its image in which a hook of the call replaces ``A`` by
the path point, a fresh leaf that requires grad, and ``torch.autograd.grad`` stops at that
leaf. The model runs under ``torch.no_grad`` up to the layer (nothing before it is kept for the
backward). :class:`LayerRunner` is a :class:`~xai_torch.runner.ModelRunner` whose ``grad`` and
``scores`` take layer-space points, so the engine and the quadrature code of the input space run
unchanged on it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import torch
from torch import nn

from ..errors import XaiError, describe
from ..hooks import HookSession, check_hookable, this_thread
from ..layers import find_layers
from ..runner import Grad, ModelRunner, Scored
from ..targets import Target
from .line import baseline_scores

#: a layer found in the model: ``(dotted name, module)``
Layer = tuple[str, nn.Module]


def check_layers(model: Any, layer: Any, layer_input: Any, owner: str) -> Optional[list[Layer]]:
    """``(name, module)`` of each layer ``layer`` names (one, or a list; ``None`` for none);
    raises :class:`XaiError` for an unknown layer (the closest names listed) or a model that is
    not an ``nn.Module``."""
    if not isinstance(layer_input, bool):
        raise XaiError(f"layer_input must be True or False; got {describe(layer_input)}.")
    if layer is None:
        return None
    if not isinstance(model, nn.Module):
        raise XaiError(f"{owner}(layer=...) needs an nn.Module to find the layer in; got {type(model).__name__}.")
    return find_layers(model, layer)


class Swap:
    """A hook on one layer that records its output (or first input) or replaces it.

    Attributes:
        leaf: the replacement of the last forward, a leaf that requires grad (or ``None``).
    """

    def __init__(self, session: HookSession, model: nn.Module, name: str, module: nn.Module,
                 layer_input: bool) -> None:
        self.name, self.layer_input = name, layer_input
        self.records: list[torch.Tensor] = []
        self.recording = False
        self.value: Optional[torch.Tensor] = None
        self.grad = False
        self.leaf: Optional[torch.Tensor] = None
        self.fired = 0  # hits in the current forward of the model
        check_hookable(model, [(name, module)])
        # this thread's calls only (the model may serve other threads meanwhile); first among the
        # layer's hooks, so that later ones (a NeuronTarget at this layer) see the path point
        session.forward_pre_hook(model, this_thread(lambda m, args: self._start()))
        if layer_input:
            session.forward_pre_hook(module, this_thread(lambda m, args: self._pre(args)), prepend=True)
        else:
            session.forward_hook(module, this_thread(lambda m, args, out: self._hit(out)), prepend=True)

    def _start(self) -> None:
        self.fired = 0

    def _pre(self, args: tuple[Any, ...]) -> Any:
        new = self._hit(args[0] if args else None)
        return None if new is None else (new, *args[1:])

    def _hit(self, t: Any) -> Optional[torch.Tensor]:
        self.fired += 1
        where = "input" if self.layer_input else "output"
        if self.fired > 1:
            raise XaiError(f"layer {self.name!r} runs more than once per forward pass (a reused module); choose "
                           "a layer that runs once.")
        if not isinstance(t, torch.Tensor):
            raise XaiError(f"layer {self.name!r} has a {describe(t)} as its {where}, not a tensor; choose a layer "
                           f"whose {where} is one tensor.")
        if self.recording:
            self.records.append(t.detach().clone())
            return None
        if self.value is None:
            return None
        if t.shape != self.value.shape:
            raise XaiError(f"layer {self.name!r}: its {where} has shape {tuple(t.shape)} here but "
                           f"{tuple(self.value.shape)} on the recorded forward; the layer's shape must not vary.")
        if not self.grad:
            return self.value.clone()
        torch.set_grad_enabled(True)  # the model runs under no_grad up to here
        self.leaf = self.value.detach().clone().requires_grad_(True)
        return self.leaf.clone()  # in the graph: the model may modify it in place

    def taken(self) -> torch.Tensor:
        """The leaf of the last forward."""
        if self.leaf is None:
            raise XaiError(f"layer {self.name!r} was not called during the forward pass; choose a layer on the "
                           "path from the input to the output.")
        return self.leaf

    @contextmanager
    def replacing(self, value: torch.Tensor, grad: bool) -> Iterator[None]:
        """Replace the layer's tensor by ``value`` in the forwards inside the block."""
        self.value, self.grad, self.leaf = value, grad, None
        try:
            yield
        finally:
            self.value, self.grad = None, False

    def record(self, run: Callable[[], Any]) -> torch.Tensor:
        """The layer's tensors of the forwards ``run()`` makes, concatenated."""
        self.records, self.recording = [], True
        try:
            run()
        finally:
            self.recording = False
        if not self.records:
            raise XaiError(f"layer {self.name!r} was not called during the forward pass; choose a layer on the "
                           "path from the input to the output.")
        out, self.records = torch.cat(self.records), []
        return out


class LayerRunner(ModelRunner):
    """A runner whose samples are points in a layer's space: sample ``z_n`` with target row
    ``r_n`` is a forward of image ``x[r_n // k]`` with the layer's tensor replaced by ``z_n``.
    Its model calls are counted on ``base`` too."""

    def __init__(self, base: ModelRunner, swap: Swap, x: torch.Tensor, k: int) -> None:
        super().__init__(base.model, batch_size=base.batch_size, progress=base.progress, name=base.name,
                         target=base.target, device=base.device, select_output=base.select_output,
                         forward_args=base.forward_args)
        self.sample_numel, self.dtype, self.training = base.sample_numel, base.dtype, base.training
        self.clean_scores = base.clean_scores
        self.base, self.swap, self.x, self.k = base, swap, x, k
        self._pending: Optional[torch.Tensor] = None

    def _call(self, fn: Callable[[torch.Tensor], Any], z: torch.Tensor, images: Optional[torch.Tensor] = None) -> Any:
        out = super()._call(fn, z, images)
        self.base.calls += z.shape[0]
        return out

    def grad(self, z: torch.Tensor, rows: torch.Tensor, *, target: Optional[Target] = None,
             forward: Optional[Callable[[torch.Tensor], Any]] = None) -> Grad:
        swap = self.swap

        def run(leaf: torch.Tensor) -> Any:
            with torch.no_grad():
                out = self.model(leaf.detach())
            swap.taken()
            return out

        with swap.replacing(z, grad=True):
            try:
                g = self.layer_grad(self.x[rows // self.k], rows, lambda _: [swap.taken()], [swap.name],
                                    target=target, forward=run)
            except XaiError as err:
                if swap.leaf is None or "does not depend" not in str(err):
                    raise
                raise XaiError(f"{self.name}: the target score does not depend on layer {swap.name!r}; choose a "
                               "layer on the path from the input to the scored output.") from err
        return Grad(g.grads[0], g.scores, g.probs, g.classes)

    def forward(self, z: torch.Tensor, *, grad: bool = False, images: Optional[torch.Tensor] = None) -> Any:
        if self._pending is None:
            return super().forward(z, grad=grad, images=images)
        with self.swap.replacing(self._pending, grad=False):
            return super().forward(z, grad=grad, images=images)

    def scores(self, inputs: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], n: int, *,
               target: Optional[Target] = None, desc: Optional[str] = None) -> Scored:
        def images(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            z, rows = inputs(start, stop)
            self._pending = z  # forward() replaces the layer's tensor by it
            return self.x[rows // self.k], rows

        try:
            return super().scores(images, n, target=target, desc=desc)
        finally:
            self._pending = None


def record(runner: ModelRunner, swap: Swap, images: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """The layer's tensors for ``images`` ``(N, ...)``: one forward each (``per_image``: row
    ``i`` is image ``i`` of the call, for per-example ``additional_forward_args``)."""
    return swap.record(lambda: runner.map(lambda a, b: runner.forward(images[a:b], images=torch.arange(a, b)
                                                                      if per_image else None), images.shape[0]))


def record_baselines(runner: ModelRunner, swap: Swap, base: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a_b, F(b))``: the layer's tensors ``(J, B, ...)`` of the baselines ``base``
    ``(J, B, C, H, W)`` and their ``(R, J)`` target scores, from one forward each."""
    fb: list[torch.Tensor] = []
    acts = swap.record(lambda: fb.append(baseline_scores(runner, base, k)))
    j_count, b_count = base.shape[:2]
    return acts.view(b_count, j_count, *acts.shape[1:]).transpose(0, 1), fb[0]


@contextmanager
def layer_space(runner: ModelRunner, x: torch.Tensor, k: int, layer: Layer,
                layer_input: bool) -> Iterator[tuple[LayerRunner, torch.Tensor, Swap]]:
    """``(layer runner, a_x, swap)`` for images ``x`` on the model's device, the hook removed
    after the block."""
    with HookSession() as session:
        swap = Swap(session, runner.model, layer[0], layer[1], layer_input)
        a_x = record(runner, swap, x)
        yield LayerRunner(runner, swap, x, k), a_x, swap
