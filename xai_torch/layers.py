"""Find layers of a model by dotted name or by module object."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from torch import nn

from .errors import XaiError, closest_names, describe

LayerSpec = Union[str, nn.Module]


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of ``model`` (dotted names, as ``model.named_modules()`` gives)."""
    return [name for name, _ in model.named_modules() if name]


def find_layer(model: nn.Module, layer: LayerSpec, name: str = "layer") -> tuple[str, nn.Module]:
    """Resolve ``layer`` to ``(dotted_name, module)``.

    Args:
        model: the model that owns the layer.
        layer: a dotted name such as ``"layer4.1.conv2"`` or ``"features.denseblock4"``, or a
            module object that is part of ``model``.
        name: the argument name used in error messages.

    Raises:
        XaiError: unknown name (the message lists the closest available names), or a module
        that is not part of ``model``.
    """
    if isinstance(layer, nn.Module):
        for dotted, module in model.named_modules():
            if module is layer:
                return dotted, module
        raise XaiError(
            f"{name}: the module {type(layer).__name__} is not part of the model "
            f"{type(model).__name__}; pass one of its submodules or a dotted name."
        )
    if not isinstance(layer, str):
        raise XaiError(f"{name} must be a dotted module name or an nn.Module; got {describe(layer)}.")
    modules = dict(model.named_modules())
    if layer in modules and layer != "":
        return layer, modules[layer]
    names = layer_names(model)
    close = closest_names(layer, names)
    hint = f" Closest names: {', '.join(repr(c) for c in close)}." if close else ""
    raise XaiError(
        f"{name}={layer!r} is not a submodule of {type(model).__name__}.{hint} "
        f"The model has {len(names)} named submodules; list them with "
        "[n for n, _ in model.named_modules()]."
    )


def find_layers(model: nn.Module, layers, name: str = "layer") -> list[tuple[str, nn.Module]]:
    """Resolve one layer spec or a non-empty list of them."""
    if isinstance(layers, (str, nn.Module)):
        return [find_layer(model, layers, name)]
    if isinstance(layers, Sequence) and len(layers) > 0:
        return [find_layer(model, spec, f"{name}[{i}]") for i, spec in enumerate(layers)]
    raise XaiError(f"{name} must be a name, a module or a non-empty list of them; got {describe(layers)}.")
