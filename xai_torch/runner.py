"""The one model runner: every model call of every explainer and metric goes through it.

A :class:`ModelRunner` holds the model, its device, the chunk size (``batch_size``, or an
automatic size from one input image), the progress setting and the model-call count of one
call. It

* runs work in chunks (:meth:`ModelRunner.map`, CUDA out-of-memory back-off included),
* scores the clean images once and pins argmax targets (:meth:`ModelRunner.pin`),
* scores samples forward-only (:meth:`ModelRunner.scores`) and takes input gradients with one
  forward + ``torch.autograd.grad`` on a private leaf (:meth:`ModelRunner.grad`).

It never hands the model a view of the user's input (inputs sharing memory with a protected
tensor are copied first), counts the samples the model saw, and works under the user's
``torch.inference_mode()``. A ``RuntimeError`` that the model raises in its first layer on the
first call (the input does not fit: channel count, size, or a dtype not the layer's: nothing
is cast) comes back as an :class:`~xai_torch.errors.XaiError` naming both sides, the original
chained; any other error, and ``KeyboardInterrupt``, propagates unchanged.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Optional, TypeVar

import torch
from torch import nn

from .batching import auto_batch_size, check_batch_size, is_oom, map_chunks
from .errors import XaiError
from .hooks import HookSession, this_thread
from .modelio import (
    ForwardArgs,
    OutputSelector,
    check_select_output,
    keep_buffers,
    model_device,
    probability,
    repeat_rows,
    result_dtype,
    select_output,
    warn_if_training,
)
from .precision import autocast, check_precision, widen
from .targets import ClassTarget, Target, TopK

T = TypeVar("T")

class Pinned(NamedTuple):
    """What :meth:`ModelRunner.pin` returns: the pinned target, then per row (image x target
    column) the clean score ``F(x)`` (in the images' dtype), the class (or ``None``) and its
    softmax probability (or ``None``)."""

    target: Target
    scores: torch.Tensor
    classes: Optional[torch.Tensor]
    probs: Optional[torch.Tensor]


class Scored(NamedTuple):
    """What :meth:`ModelRunner.scores` returns, per sample: score, class (or ``None``) and
    softmax probability of the class (or ``None``)."""

    scores: torch.Tensor
    classes: Optional[torch.Tensor]
    probs: Optional[torch.Tensor]


class Grad(NamedTuple):
    """What :meth:`ModelRunner.grad` returns, per sample: ``dF/dz``, the score ``F(z)``, the
    softmax probability of the class (or ``None``) and the class (or ``None``)."""

    grad: torch.Tensor
    scores: torch.Tensor
    probs: Optional[torch.Tensor]
    classes: Optional[torch.Tensor]


class LayerGrad(NamedTuple):
    """What :meth:`ModelRunner.layer_grad` returns: as :class:`Grad`, with ``dF/dA`` and ``A``
    for each captured tensor ``A``."""

    grads: list[torch.Tensor]
    acts: list[torch.Tensor]
    scores: torch.Tensor
    probs: Optional[torch.Tensor]
    classes: Optional[torch.Tensor]


def _leaves(model: nn.Module) -> dict[nn.Module, str]:
    return {m: name for name, m in model.named_modules() if name and next(m.children(), None) is None}


class ModelRunner:
    """Chunked model evaluation for one call of an explainer or metric.

    Args:
        model: the ``nn.Module`` or callable ``x -> output``.
        batch_size: the most samples one model call may see; ``None``: automatic, from the
            size of ``sample``.
        progress: tqdm progress bar (``None``: shown on long work on a terminal).
        name: names the work in progress bars and error messages.
        sample: one input image ``(C, H, W)`` (or a batch; its first image is used): sets the
            automatic chunk size and the dtype of pinned scores.
        target: the bound target that ``rows`` index (:meth:`pin` replaces it).
        device: the device for a model without parameters (default: ``sample``'s, else CPU).
        select_output: what of each model output the targets score (see
            :func:`~xai_torch.modelio.select_output`; ``None``: the output itself).
        forward_args: the call's ``additional_forward_args``; each model call tells it which
            image each input row comes from (the ``images=`` of :meth:`forward`, else from the
            target rows of :meth:`grad` / :meth:`scores`).
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: every model call runs
            under ``torch.autocast(device, dtype)`` (its backward follows autocast's casts); a
            half-precision output is widened to the input's dtype before it is scored, so targets,
            gradients with respect to the input and everything built from them stay float32 /
            float64.

    Attributes:
        calls: samples the model has evaluated (forward, or forward + backward).
        clean_scores: ``F(x)`` per row once :meth:`pin` ran, else ``None``.
        training: whether any module of the model is in training mode.

    Example:
        >>> runner = ModelRunner(model, batch_size=64, sample=x[0], name="Occlusion")
        >>> pinned = runner.pin(x, xt.as_target(None, len(x)))   # one forward per image
        >>> scored = runner.scores(lambda a, b: (z[a:b], rows[a:b]), len(z))
    """

    def __init__(self, model: Any, *, batch_size: Optional[int] = None, progress: Optional[bool] = None,
                 name: str = "", sample: Optional[torch.Tensor] = None, target: Optional[Target] = None,
                 device: Optional[torch.device] = None, select_output: OutputSelector = None,
                 forward_args: Optional[ForwardArgs] = None, precision: str = "float32") -> None:
        if not callable(model):
            raise XaiError(f"model must be an nn.Module or a callable; got {type(model).__name__}.")
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        self.progress = progress
        self.name = name or type(model).__name__
        fallback = device if device is not None else sample.device if sample is not None else torch.device("cpu")
        self.device = model_device(model, fallback)
        self.sample_numel = 0 if sample is None else int(sample[0].numel() if sample.ndim == 4 else sample.numel())
        self.dtype = torch.float32 if sample is None else sample.dtype
        self.target = target
        self.select_output = check_select_output(select_output)
        self.forward_args = forward_args
        self.precision = check_precision(precision)
        autocast(self.precision, self.device, self.name)  # an unsupported one fails before any model call
        self.calls = 0
        self.clean_scores: Optional[torch.Tensor] = None
        self.training = isinstance(model, nn.Module) and any(m.training for m in model.modules())
        self._protected: set[int] = set()
        self._ok = False  # whether a model call succeeded (the input fits the model)

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def chunk(self) -> int:
        """Samples per model call."""
        if self.batch_size is not None:
            return self.batch_size
        if not self.sample_numel:
            raise XaiError(f"{self.name}: batch_size=None needs a sample image to size the chunks.")
        return auto_batch_size(self.sample_numel, self.device)

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` detached on the model's device, protected: the model never sees its memory."""
        xd = x.detach().to(self.device)
        self.protect(x, xd)
        return xd

    def protect(self, *tensors: torch.Tensor) -> None:
        """Model inputs that share memory with these tensors are copied before each call."""
        for t in tensors:
            self._protected.add(t.untyped_storage().data_ptr())

    def session(self) -> HookSession:
        """A :class:`HookSession` that restores the model's buffers on close when the model is
        in training mode (use it as ``with runner.session():`` around work outside an explainer)."""
        session = HookSession()
        if self.training:
            keep_buffers(self.model, session)
        return session

    def map(self, fn: Callable[[int, int], T], n: int, *, desc: Optional[str] = None) -> list[T]:
        """``fn(start, stop)`` over ``[0, n)`` in chunks of at most :attr:`chunk` samples, with
        the progress bar and CUDA out-of-memory back-off of :func:`~xai_torch.batching.map_chunks`."""
        return map_chunks(fn, n, self.chunk, device=self.device, progress=self.progress, desc=desc or self.name)

    def forward(self, z: torch.Tensor, *, grad: bool = False, images: Optional[torch.Tensor] = None) -> Any:
        """``model(z)``, counted, under ``torch.no_grad`` unless ``grad``; ``images``: the image
        each row of ``z`` comes from (for per-example ``additional_forward_args``)."""
        if grad:
            return self._call(self.model, z, images)
        with torch.no_grad():
            return self._call(self.model, z, images)

    def _call(self, fn: Callable[[torch.Tensor], Any], z: torch.Tensor, images: Optional[torch.Tensor] = None) -> Any:
        if self._protected and z.untyped_storage().data_ptr() in self._protected:
            z = z.clone()
        fa = self.forward_args
        state = None if fa is None else (fa.active, fa.images)
        try:
            if fa is not None:
                fa.active, fa.images = True, images
            if self.precision == "float32":
                out = fn(z)
            else:
                with autocast(self.precision, self.device):
                    out = fn(z)
        except RuntimeError as err:
            if fa is not None and images is not None:
                fa.images = images[:1]  # the probe runs one image
            problem = None if self._ok or is_oom(err) else self._input_problem(z)
            if problem is not None:
                raise XaiError(
                    f"{self.name}: the model {type(self.model).__name__} cannot take x with images of shape "
                    f"{tuple(z.shape[1:])} and dtype {z.dtype} (model input {tuple(z.shape)}): {problem}. Give x as "
                    f"(B, C, H, W) with the channel count, size and dtype the model expects ({str(err).rstrip('. ')})."
                ) from err
            self._precision_error(err)
            raise
        finally:
            if fa is not None and state is not None:
                fa.active, fa.images = state
        self._ok = True
        self.calls += z.shape[0]
        out = select_output(out, self.select_output)
        return out if self.precision == "float32" else widen(out, z)  # scored at full precision

    def _precision_error(self, err: RuntimeError) -> None:
        """Raise :class:`XaiError` for a dtype clash of a pass under ``precision`` (autocast)."""
        text = str(err)
        if self.precision != "float32" and not is_oom(err) and any(w in text for w in ("dtype", "BFloat16", "Half")):
            raise XaiError(f"{self.name}: the model's pass failed under precision={self.precision!r} (torch.autocast):"
                           f" {text.rstrip('. ')}. This method or model does not run in mixed precision; use "
                           "precision='float32'.") from err

    def _input_problem(self, z: torch.Tensor) -> Optional[str]:
        """Why ``z`` does not fit the model, after an error on the first call: one image runs again
        with hooks recording which leaf layers start and finish. A failure inside the leaf entered
        last, before any layer with parameters finished (or, no leaf run, a model whose parameters
        are not ``z``'s dtype), is the input's: name it and the misfit. Else ``None``."""
        if not isinstance(self.model, nn.Module):
            return None
        leaves, entered, finished = _leaves(self.model), [], []
        with HookSession() as session, torch.no_grad():
            if self.training:
                keep_buffers(self.model, session)
            for m in leaves:
                session.forward_pre_hook(m, this_thread(lambda mod, args: entered.append(mod)))
                session.forward_hook(m, this_thread(lambda mod, args, out: finished.append(mod)))
            try:
                self.model(z[:1].clone())
            except Exception:  # the probe never replaces the model's own error
                pass
            else:
                return None
        if (entered and entered[-1] in finished) or any(next(f.parameters(), None) is not None for f in finished):
            return None
        w = next((m := entered[-1] if entered else self.model).parameters(), None)  # no leaf ran: the model's
        what = f"its first layer '{leaves[m]}' ({type(m).__name__})" if entered else "it"
        if w is not None and w.is_floating_point() and w.dtype != z.dtype:
            return f"{what} computes in {w.dtype} but x is {z.dtype}; pass x.to({w.dtype}) or convert the model"
        if isinstance(m, nn.modules.conv._ConvNd) and m.in_channels != z.shape[1]:
            return f"{what} takes {m.in_channels} channels but x has {z.shape[1]}"
        return f"{what} failed" if entered else None

    # -- scoring ----------------------------------------------------------------------------
    def _target(self, target: Optional[Target]) -> Target:
        t = target if target is not None else self.target
        if t is None:
            raise XaiError(f"{self.name}: the runner has no target; pin one or pass target=.")
        return t

    def pin(self, x: torch.Tensor, target: Target) -> Pinned:
        """Score the clean images ``x`` (on the model's device) once, one forward per image
        whatever K is, and pin argmax targets to the class found there (perturbed or path points
        are scored for the class of ``x``, not their own argmax). Sets :attr:`target` and
        :attr:`clean_scores`.

        Returns:
            :class:`Pinned`, per row (image x target column).
        """
        self.protect(x)
        if not self.sample_numel:
            self.sample_numel, self.dtype = int(x[0].numel()), x.dtype
        k = target.k or 1
        b = x.shape[0]
        record = torch.full((3, b * k), float("nan"), dtype=torch.float64, device=self.device)
        found: list[bool] = []

        def chunk(start: int, stop: int) -> None:
            out = repeat_rows(self.forward(x[start:stop], images=torch.arange(start, stop)), k)
            rows = torch.arange(start * k, stop * k, device=self.device)
            s, classes = target.scores(out, rows)
            record[0, start * k:stop * k] = s.detach()
            if classes is not None:
                record[1, start * k:stop * k] = classes
                p = probability(out, classes)
                if p is not None:
                    record[2, start * k:stop * k] = p
                found.append(p is not None)

        self.map(chunk, b)
        scores = record[0].to(self.dtype)
        classes = record[1].long() if found else None
        probs = record[2].to(self.dtype) if found and all(found) else None
        self.clean_scores = scores
        if isinstance(target, ClassTarget) and target.classes is None and classes is not None:
            target = ClassTarget(classes.cpu(), target.score).bind(b)
        self.target = target
        return Pinned(target, scores, classes, probs)

    def top_classes(self, x: torch.Tensor, top: TopK) -> torch.Tensor:
        """``(B, k)`` the top-``k`` classes of each clean image ``x`` (one forward per image,
        on the model's device), on the CPU."""
        xd = self.place(x)
        return torch.cat(self.map(lambda a, b: top.classes(self.forward(xd[a:b], images=torch.arange(a, b))).cpu(),
                                  x.shape[0]))

    def scores(self, inputs: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], n: int, *,
               target: Optional[Target] = None, desc: Optional[str] = None) -> Scored:
        """Forward only, under ``torch.no_grad``: :class:`Scored` of ``n`` samples, where
        ``inputs(start, stop) -> (z, rows)`` gives the model inputs and their target rows."""
        tgt = self._target(target)

        def chunk(start: int, stop: int) -> Scored:
            z, rows = inputs(start, stop)
            out = self.forward(z, images=rows // (tgt.k or 1))
            s, classes = tgt.scores(out, rows)
            return Scored(s.detach(), classes, probability(out, classes))

        parts = self.map(chunk, n, desc=desc)
        classes = None if parts[0].classes is None else torch.cat([p.classes for p in parts if p.classes is not None])
        probs = None if parts[0].probs is None else torch.cat([p.probs for p in parts if p.probs is not None])
        return Scored(torch.cat([p.scores for p in parts]), classes, probs)

    def grad(self, z: torch.Tensor, rows: torch.Tensor, *, target: Optional[Target] = None,
             forward: Optional[Callable[[torch.Tensor], Any]] = None) -> Grad:
        """One forward and ``torch.autograd.grad`` of the summed target scores with respect to a
        private leaf copy of ``z`` (one chunk; never ``.backward()``, so no parameter's
        ``.grad`` changes).

        Args:
            z: ``(n, ...)`` model inputs; rows: ``(n,)`` their target rows.
            forward: runs the model on the leaf (default: the model itself), e.g. under a
                rectifier rule.

        Raises:
            XaiError: when the score does not depend on ``z`` through autograd.
        """
        g = self.layer_grad(z, rows, lambda leaf: [leaf], ["x"], target=target, forward=forward)
        return Grad(g.grads[0], g.scores, g.probs, g.classes)

    def layer_grad(self, z: torch.Tensor, rows: torch.Tensor, taken: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                   names: Sequence[str], *, target: Optional[Target] = None,
                   forward: Optional[Callable[[torch.Tensor], Any]] = None) -> LayerGrad:
        """As :meth:`grad`, with respect to tensors ``taken(leaf)`` returns after the forward
        (layer outputs or inputs that a :class:`~xai_torch.hooks.LayerTap` captured, named
        ``names``), all in one ``torch.autograd.grad`` that stops at them; raises
        :class:`XaiError` when the score does not depend on ``z`` or on one of them."""
        tgt = self._target(target)
        fn = self.model if forward is None else forward
        with torch.inference_mode(False), torch.enable_grad():
            # a leaf requiring grad (the model cannot modify it in place); out of inference mode
            shared = bool(self._protected) and z.untyped_storage().data_ptr() in self._protected
            zg = (z.detach().clone() if shared or z.is_inference() else z.detach()).requires_grad_(True)
            out = self._call(fn, zg, rows // (tgt.k or 1))
            s, classes = tgt.scores(out, rows)
            if not s.requires_grad:
                raise XaiError(
                    f"{self.name}: the target score does not depend on x through autograd (the model or "
                    "the target callable detaches it, or runs under torch.no_grad), so it has no gradient."
                )
            acts = list(taken(zg))
            try:
                grads = torch.autograd.grad(s.sum(), acts, allow_unused=True)
            except RuntimeError as err:
                self._precision_error(err)
                raise
        for name, g in zip(names, grads):
            if g is None:
                raise XaiError(f"{self.name}: the target score does not depend on {name!r}; choose a layer "
                               "on the path from the input to the scored output.")
        return LayerGrad([g.detach() for g in grads], [a.detach() for a in acts], s.detach(),
                         probability(out, classes), classes)

    def gradients(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dF/dz, F(z))`` for every row of ``z``, chunked (all gradients are kept)."""
        parts = self.map(lambda a, b: self.grad(z[a:b], rows[a:b]), z.shape[0])
        return torch.cat([p.grad for p in parts]), torch.cat([p.scores for p in parts])


__all__ = ["Grad", "LayerGrad", "ModelRunner", "Pinned", "Scored", "autocast", "check_precision", "keep_buffers",
           "model_device", "probability", "repeat_rows", "result_dtype", "warn_if_training"]
