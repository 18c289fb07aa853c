"""Models that take keyword inputs or return output objects, as explainers call models: ``model(x) -> (B, K)``.

Hugging Face models take ``pixel_values=`` and return an ``ImageClassifierOutput``; other models
want fixed keyword arguments or return dicts or tuples. :func:`adapt` wraps such a model in a
:class:`ModelAdapter`: ``adapter(x)`` calls ``model(**{input_name: x}, **fixed)`` and returns the
chosen output tensor. The adapter is a view of the model, not a copy and not a change:

* its submodules, parameters and buffers are the model's own objects under the model's own names
  (``named_modules()``, ``state_dict()`` and every ``layer="vit.layers.1"`` resolve as on
  the model itself);
* the model gets no attribute, hook or submodule from it; attributes the adapter does not have
  are read from the model (``adapter.config``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import torch
from torch import nn

from . import modelio
from .errors import XaiError, describe

OutputSpec = Union[str, int, Callable[[Any], torch.Tensor]]

__all__ = ["ModelAdapter", "adapt", "select_output"]


def select_output(out: Any, output: OutputSpec = "auto") -> torch.Tensor:
    """The tensor to explain from a model's output.

    Args:
        out: what the model returned.
        output: ``"auto"``: a tensor as is, else the ``logits`` key or attribute (Hugging Face's
            output objects, dicts), else the first element of a tuple / list; another string: that
            key or attribute; an int: that element of a tuple / list; a callable: ``output(out)``
            (those three as the explainers' ``select_output=``, :func:`xai_torch.modelio.select_output`).

    Returns:
        The selected tensor.

    Raises:
        XaiError: the key / attribute / element is missing (the message lists those there are),
        or the selection is not a tensor.

    Example:
        >>> select_output({"logits": torch.zeros(2, 10), "hidden": None}).shape
        torch.Size([2, 10])
    """
    if isinstance(output, bool) or not (callable(output) or isinstance(output, (str, int))):
        raise XaiError(f"output must be 'auto', a key / attribute name, an int or a callable; got {describe(output)}.")
    if isinstance(output, str) and output == "auto":
        if isinstance(out, torch.Tensor):
            return out
        picked = _field(out, "logits")
        if picked is _MISSING and isinstance(out, (tuple, list)) and out:
            picked = out[0]
        if picked is _MISSING:
            raise XaiError(f"the model returned a {describe(out)} with no 'logits' ({_fields(out)}); pass "
                           "output='NAME', an index or a callable that picks the class scores.")
    else:  # the explainers' select_output= rule (xai_torch.modelio), with its messages
        picked = modelio.select_output(out, output)
    if not isinstance(picked, torch.Tensor):
        raise XaiError(f"output={output!r} selects a {describe(picked)}, not a tensor of class scores.")
    return picked


_MISSING = object()


def _field(out: Any, name: str) -> Any:
    """``out[name]`` of a mapping, else ``out.name`` (named tuples, output objects); :data:`_MISSING` if none."""
    if isinstance(out, Mapping):
        return out.get(name, _MISSING)
    if isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and not hasattr(out, "_fields")):
        return _MISSING
    return getattr(out, name, _MISSING)


def _fields(out: Any) -> str:
    if isinstance(out, Mapping):
        names = list(out)
    elif hasattr(out, "_fields"):
        names = list(out._fields)
    else:
        names = list(vars(out)) if hasattr(out, "__dict__") else []
    return f"it has {', '.join(map(repr, names))}" if names else f"a {type(out).__name__}"


class ModelAdapter(nn.Module):
    """``adapter(x)``: the wrapped model called with ``x`` as its keyword input, its output narrowed
    to a tensor. Build it with :func:`adapt` (see there for the arguments).

    Attributes:
        wrapped: the user's model (not a submodule of the adapter: its submodules are the adapter's).
        input_name: the keyword the input goes to, or None (first positional argument).
        output: the output selector (:func:`select_output`).
        fixed: keyword arguments passed on every call.
    """

    wrapped: nn.Module
    input_name: Optional[str]
    output: OutputSpec
    fixed: dict[str, Any]

    def __init__(self, model: nn.Module, input_name: Optional[str] = None, output: OutputSpec = "auto",
                 **fixed: Any) -> None:
        if not isinstance(model, nn.Module):
            raise XaiError(f"adapt needs an nn.Module; got {describe(model)}.")
        if input_name is not None and (not isinstance(input_name, str) or not input_name.isidentifier()):
            raise XaiError(f"input_name must be None or a keyword name such as 'pixel_values'; got {input_name!r}.")
        if isinstance(output, bool) or not (callable(output) or isinstance(output, (str, int))):
            raise XaiError(f"output must be 'auto', a key / attribute name, an int or a callable; "
                           f"got {describe(output)}.")
        if input_name is not None and input_name in fixed:
            raise XaiError(f"{input_name!r} is the input keyword; it cannot also be a fixed keyword argument.")
        super().__init__()
        # a view: the model's own containers, so names, parameters and state dicts are the model's
        vars(self).update(_modules=model._modules, _parameters=model._parameters, _buffers=model._buffers,
                          _non_persistent_buffers_set=model._non_persistent_buffers_set,
                          wrapped=model, training=model.training,
                          # set past nn.Module's __setattr__: a module-valued selector must not land in the model
                          input_name=input_name, output=output, fixed=dict(fixed))

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``select_output(model(*args, **{input_name: x}, **fixed, **kwargs), output)``."""
        kw = {**self.fixed, **kwargs}
        if self.input_name is None:
            out = self.wrapped(x, *args, **kw)
        else:
            out = self.wrapped(*args, **{self.input_name: x}, **kw)
        return select_output(out, self.output)

    def train(self, mode: bool = True) -> ModelAdapter:
        """Set the wrapped model's mode (and the adapter's)."""
        self.wrapped.train(mode)
        vars(self)["training"] = bool(mode)
        return self

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            wrapped = vars(self).get("wrapped")
            if wrapped is None or name.startswith("__"):
                raise
            return getattr(wrapped, name)

    def extra_repr(self) -> str:
        return (f"wrapped={type(self.wrapped).__name__}, input_name={self.input_name!r}, output={self.output!r}"
                + "".join(f", {k}={v!r}" for k, v in self.fixed.items()))


def adapt(model: nn.Module, input_name: Optional[str] = None, output: OutputSpec = "auto",
          **fixed: Any) -> ModelAdapter:
    """Wrap a keyword-input or output-object model so that explainers can call it as ``model(x)``.

    Args:
        model: the model; nothing in it is changed and the adapter holds no copy of it.
        input_name: the keyword the images go to (``"pixel_values"`` for Hugging Face vision
            models); None passes them as the first positional argument.
        output: which tensor of the output to explain (:func:`select_output`): ``"auto"`` (a
            tensor as is, else ``logits``, else the first element of a tuple), a key /
            attribute name, a tuple index or a callable.
        **fixed: keyword arguments for every call (``interpolate_pos_encoding=True``...).

    Returns:
        :class:`ModelAdapter`, an ``nn.Module`` whose submodules, parameters and layer names are
        the model's (``layer="vit.layers.1"`` works on it as on the model).

    Shape:
        ``adapter(x)``: ``x`` as the model takes it, ``(B, 3, H, W)``; the selected output, ``(B, K)``.

    Raises:
        XaiError: a model that is not an ``nn.Module``, a bad ``input_name`` or ``output``; when
        called, an output that has no such field (its fields are listed).

    Example:
        >>> hf = transformers.ViTForImageClassification(config)
        >>> model = xt.adapt(hf, input_name="pixel_values", output="logits")
        >>> xt.GradCAM(model, layer="vit.layers.10.layernorm_before")(x)   # transformers 5 names
    """
    return ModelAdapter(model, input_name, output, **fixed)
