"""What goes into and comes out of a model call, for the runner and the methods: the model's
device, the result dtype, the model's buffers kept across work in training mode, and model
outputs (the class scores picked from an object or a dict, a user's ``select_output=``, rows
repeated for ``K`` targets, class probabilities).

Model outputs: a classifier may return a tensor ``(B, num_classes)``, a dict or an object with
``logits`` (Hugging Face's ``ImageClassifierOutput``, a dataclass); class targets and the
probabilities read those ``logits`` by themselves (:func:`~xai_torch.targets.class_output`).
Any other output is reduced by the explainer's ``select_output=`` (:func:`select_output`) on
every model call before a target sees it, or scored by a callable target.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import nn

from .errors import XaiError, XaiWarning, describe
from .hooks import HookSession
from .targets import class_output, score_classes

_STOCHASTIC_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def model_device(model: Any, default: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer (``default`` if it has none)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return default


def result_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of results for input ``x``: float64 for float64 inputs, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def keep_buffers(model: nn.Module, session: HookSession) -> None:
    """Restore every buffer of ``model`` (BatchNorm running statistics...) when ``session``
    closes: a forward in training mode updates them, and the user's model keeps no trace."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]

    def restore() -> None:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)

    session.callback(restore)


def warn_if_training(model: Any, name: str, stacklevel: int = 4) -> bool:
    """Warn when the model is in training mode with BatchNorm / Dropout; return whether any
    module is in training mode (its buffers must then be restored after the work)."""
    if not isinstance(model, nn.Module):
        return False
    if model.training:
        kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _STOCHASTIC_LAYERS)})
        if kinds:
            warnings.warn(
                f"{name}: the model is in training mode and has {', '.join(kinds)}: each image's "
                "result then depends on the rest of the batch and on chance. Call model.eval() first "
                "(xai_torch never changes the mode for you).",
                XaiWarning,
                stacklevel=stacklevel,
            )
    return any(m.training for m in model.modules())


def probability(out: Any, classes: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Probability of ``classes`` in a ``(n, num_classes)`` output (or its ``logits``), the
    sigmoid's for one column (else ``None``)."""
    out = class_output(out)
    if classes is None or not isinstance(out, torch.Tensor) or out.ndim != 2:
        return None
    return score_classes(out.detach(), classes.to(out.device), "softmax")


def repeat_rows(output: Any, k: int) -> Any:
    """Each row of a model output repeated ``k`` times (row ``i`` -> ``i*k .. i*k+k-1``), so the
    ``K`` targets of an image are scored from one forward. Tensors, dicts (Hugging Face outputs
    too), lists of per-image items, and dataclasses / objects with tensor ``logits`` (a shallow
    copy with their tensor fields repeated)."""
    if k == 1:
        return output
    if isinstance(output, torch.Tensor):
        return output.repeat_interleave(k, dim=0)
    if isinstance(output, dict):
        return {key: repeat_rows(v, k) if isinstance(v, torch.Tensor) else v for key, v in output.items()}
    if isinstance(output, list):
        return [o for o in output for _ in range(k)]
    fields = [f.name for f in dataclasses.fields(output)] if dataclasses.is_dataclass(output) else \
        ["logits"] if isinstance(getattr(output, "logits", None), torch.Tensor) else []
    if fields:
        rep = copy.copy(output)
        for name in fields:
            value = getattr(output, name)
            if isinstance(value, torch.Tensor):
                object.__setattr__(rep, name, value.repeat_interleave(k, dim=0))  # frozen dataclasses too
        return rep
    raise XaiError(f"(B, K) targets need a model output with one row per image; got a {describe(output)}.")


class ForwardArgs:
    """The ``additional_forward_args`` of one explainer call: inputs the model takes after the
    images, ``model(x, *args)``, that are not attributed (Captum's name and convention).

    A tensor whose first dim is the batch size ``B`` is per example: every model input row
    built from image ``i`` (a path point, a noisy copy, an occluded or masked image) gets its
    row ``i``. Anything else (a tensor of another first dim, a number, a string, a module...)
    is passed as it is to every call. The runner that makes a model call says which image each
    row comes from (:attr:`images`) while the call runs (:attr:`active`); :meth:`hook`, a
    forward pre-hook on the model, then appends the arguments to the call's inputs.

    Args:
        args: one object or a tuple / list of them.
        batch: ``B``, the number of images of the call.
        device: where per-example tensors go (the model's device).
        name: the explainer, for error messages.
    """

    def __init__(self, args: Any, batch: int, device: torch.device, name: str) -> None:
        items = tuple(args) if isinstance(args, (tuple, list)) else (args,)
        self.per_example = [isinstance(a, torch.Tensor) and a.ndim >= 1 and a.shape[0] == batch for a in items]
        self.args = tuple(a.detach().to(device) if per else a for a, per in zip(items, self.per_example))
        self.name = name
        self.active = False
        self.images: Optional[torch.Tensor] = None

    def rows(self) -> tuple[Any, ...]:
        """The arguments for the model call now running: per-example tensors at its rows' images."""
        if not any(self.per_example):
            return self.args
        if self.images is None:
            raise XaiError(f"{self.name} does not route per-example additional_forward_args (tensors with one row per "
                           "image) to its model calls yet; give objects that hold for every row, or use Gradient, "
                           "InputXGradient, IntegratedGradients, SmoothGrad, Occlusion, RISE, DeepLift or "
                           "DeepLiftShap.")
        idx = self.images
        return tuple(a[idx.to(a.device)] if per else a for a, per in zip(self.args, self.per_example))

    def hook(self, module: nn.Module, inputs: tuple[Any, ...]) -> Optional[tuple[Any, ...]]:
        """Forward pre-hook: the call's inputs followed by :meth:`rows` (only during a runner's call)."""
        return (*inputs, *self.rows()) if self.active else None


class Packed:
    """Tuple inputs ``x = (x_1, ..., x_m)`` (an image and metadata, two views) packed into one
    ``(B, 1, 1, D)`` tensor, each member flattened after the batch dim, so the engines run
    unchanged on it; :meth:`hook` (a forward pre-hook on the model) unpacks each model input
    into the members again, and :meth:`split` cuts attributions back into a tuple.

    Raises:
        XaiError: a member is not a tensor, or the members' batch sizes or dtypes differ.
    """

    def __init__(self, x: tuple[Any, ...], name: str) -> None:
        if not x or not all(isinstance(m, torch.Tensor) and m.ndim >= 1 for m in x):
            raise XaiError(f"{name}: a tuple x must hold tensors with a batch dim; got "
                           f"{[describe(m) for m in x]}.")
        sizes = [int(m.shape[0]) for m in x]
        if len(set(sizes)) > 1:
            raise XaiError(f"{name}: the members of x have batch sizes {sizes}; give each member one row per example.")
        if len({m.dtype for m in x}) > 1:
            raise XaiError(f"{name}: the members of x have dtypes {[str(m.dtype) for m in x]}; give them one dtype "
                           "(they are attributed together).")
        self.shapes = [tuple(m.shape[1:]) for m in x]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.batch = sizes[0]
        self.x = torch.cat([m.detach().reshape(self.batch, -1) for m in x], 1).view(self.batch, 1, 1, -1)

    def pack(self, value: Any, what: str) -> Any:
        """A per-member call argument (a tuple: one number or tensor per member, each
        broadcastable to its member with a batch dim of 1 or B) as one packed tensor;
        anything else as it is."""
        if not isinstance(value, tuple):
            return value
        if len(value) != len(self.shapes):
            raise XaiError(f"{what} has {len(value)} members but x has {len(self.shapes)}; give one per member.")
        parts = []
        for i, (v, shape) in enumerate(zip(value, self.shapes)):
            t = torch.as_tensor(v, dtype=self.x.dtype, device=self.x.device)
            full = (self.batch, *shape)
            ok = t.ndim <= len(shape) or (t.ndim == len(shape) + 1 and t.shape[0] in (1, self.batch))
            try:
                fitted: Optional[torch.Tensor] = t.expand(full) if ok else None
            except RuntimeError:
                fitted = None
            if fitted is None:
                raise XaiError(f"{what} member {i} of shape {tuple(torch.as_tensor(v).shape)} does not fit x member "
                               f"{i} of shape {full}; give a number, {shape}, or one per example {full}.")
            parts.append(fitted.reshape(self.batch, -1))
        return torch.cat(parts, 1).view(self.batch, 1, 1, -1)

    def check_rows(self, shapes: Optional[list[tuple[int, ...]]], what: str, name: str) -> None:
        """Raise unless ``shapes`` (of a tuple packed by :func:`pack_rows`, ``None`` for one
        tensor) are the members' shapes, naming the first member that does not fit."""
        if shapes is None:
            raise XaiError(f"{name}: x is a tuple of {len(self.shapes)} members but the {what} is one tensor; "
                           f"give a tuple {what} with one (N, ...) tensor per member.")
        if len(shapes) != len(self.shapes):
            raise XaiError(f"{name}: the {what} has {len(shapes)} members but x has {len(self.shapes)}; give one "
                           "(N, ...) tensor per member.")
        for i, (b, m) in enumerate(zip(shapes, self.shapes)):
            if b != m:
                raise XaiError(f"{name}: {what} member {i} has rows of shape {b} but x member {i} has rows of "
                               f"shape {m}; give (N, *{m}).")

    def members(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The members of packed rows ``z`` ``(n, 1, 1, D)`` (views)."""
        flat = z.reshape(z.shape[0], -1)
        parts = torch.split(flat, self.sizes, dim=1)
        return tuple(p.reshape(z.shape[0], *s) for p, s in zip(parts, self.shapes))

    def hook(self, module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        """Forward pre-hook: the packed first input replaced by the members."""
        return (*self.members(inputs[0]), *inputs[1:])

    def split(self, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Attributions ``(B, [K,] 1, 1, D)`` as a tuple ``(B, [K,] *member shape)``."""
        lead = a.shape[:-3]
        parts = torch.split(a.reshape(*lead, -1), self.sizes, dim=-1)
        return tuple(p.reshape(*lead, *s) for p, s in zip(parts, self.shapes))


def pack_rows(members: tuple[Any, ...], what: str) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """A tuple of ``(N, *shape_i)`` tensors (a background, one per member of a tuple ``x``) as
    one ``(N, 1, 1, D)`` tensor packed as :class:`Packed` packs ``x`` (row ``j`` of every member
    makes row ``j``), and the members' row shapes (for :meth:`Packed.check_rows`).

    Raises:
        XaiError: a member is not a non-empty float tensor, or the members' ``N`` or dtypes differ.
    """
    if not members or not all(isinstance(m, torch.Tensor) and m.is_floating_point() and m.ndim >= 1
                              and m.numel() > 0 for m in members):
        raise XaiError(f"a tuple {what} must hold non-empty float tensors (N, ...), one per member of x; got "
                       f"{[describe(m) for m in members]}.")
    rows = [int(m.shape[0]) for m in members]
    if len(set(rows)) > 1:
        raise XaiError(f"the {what} members have {rows} rows; give every member the same N rows (row j of each "
                       "member makes row j).")
    if len({m.dtype for m in members}) > 1:
        raise XaiError(f"the {what} members have dtypes {[str(m.dtype) for m in members]}; give them one dtype.")
    flat = torch.cat([m.detach().reshape(rows[0], -1) for m in members], 1)
    return flat.view(rows[0], 1, 1, -1), [tuple(m.shape[1:]) for m in members]


#: what ``select_output=`` accepts: a key or attribute name, a position, or a callable.
OutputSelector = Any


def check_select_output(select: OutputSelector) -> OutputSelector:
    """Validate a ``select_output=`` value (``None``, a str, an int, or a callable)."""
    if select is None or isinstance(select, str) or callable(select) or \
            (isinstance(select, int) and not isinstance(select, bool)):
        return select
    raise XaiError(f"select_output must be None, a key or attribute name (str), a position (int) or a callable "
                   f"output -> scores; got {describe(select)}.")


def select_output(output: Any, select: OutputSelector) -> Any:
    """The part of a model output that targets score, as ``select_output=`` says: ``None``: the
    output; a str: that key of a dict or attribute of an object; an int: that item of a tuple /
    list; a callable: ``select(output)``.

    Raises:
        XaiError: the key, attribute or position does not exist (the ones that do are named).

    Example:
        >>> select_output({"out": torch.zeros(2, 5)}, "out").shape
        torch.Size([2, 5])
    """
    if select is None:
        return output
    if callable(select):
        return select(output)
    if isinstance(select, str):
        if isinstance(output, Mapping):
            if select in output:
                return output[select]
            raise XaiError(f"select_output={select!r}: the model returns a dict with keys {sorted(map(str, output))}.")
        if hasattr(output, select):
            return getattr(output, select)
        raise XaiError(f"select_output={select!r}: the model returns a {describe(output)} with no such attribute.")
    if isinstance(output, (tuple, list)) and -len(output) <= select < len(output):
        return output[select]
    raise XaiError(f"select_output={select}: the model returns a {describe(output)}, not a tuple or list "
                   "with that position.")


__all__ = ["ForwardArgs", "OutputSelector", "Packed", "check_select_output", "keep_buffers", "model_device",
           "pack_rows", "probability", "repeat_rows", "result_dtype", "select_output", "warn_if_training"]
