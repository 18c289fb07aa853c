"""Find layers of a model by dotted name or by module object; lay token layers on their grid."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
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


def find_layers(model: nn.Module, layers: Any, name: str = "layer") -> list[tuple[str, nn.Module]]:
    """Resolve one layer spec or a non-empty list of them."""
    if isinstance(layers, (str, nn.Module)):
        return [find_layer(model, layers, name)]
    if isinstance(layers, Sequence) and len(layers) > 0:
        return [find_layer(model, spec, f"{name}[{i}]") for i, spec in enumerate(layers)]
    raise XaiError(f"{name} must be a name, a module or a non-empty list of them; got {describe(layers)}.")


# --- token layers (transformers) ------------------------------------------------------------
def tokens_to_grid(tokens: torch.Tensor, prefix_tokens: int = 1, height: Optional[int] = None,
                   width: Optional[int] = None) -> torch.Tensor:
    """Lay ViT-style tokens on their spatial grid.

    Args:
        tokens: ``(B, T, C)`` layer output.
        prefix_tokens: leading tokens to drop (class / register tokens).
        height, width: the grid; square when neither is given, the other one derived when
            one is.

    Returns:
        ``(B, C, h, w)`` with ``h * w = T - prefix_tokens``.

    Raises:
        XaiError: when ``tokens`` is not 3-D or the tokens do not fill the grid.

    Example:
        >>> tokens_to_grid(torch.zeros(2, 197, 768)).shape      # ViT-B/16 at 224 px
        torch.Size([2, 768, 14, 14])
    """
    if tokens.ndim != 3:
        raise XaiError(f"token layers must output (B, tokens, channels); got {describe(tokens)}.")
    b, t, c = tokens.shape
    n = t - prefix_tokens
    if height is None and width is None:
        height = int(round(max(n, 0) ** 0.5))
        width = n // max(height, 1)
    elif height is None:
        assert width is not None
        height = n // width
    elif width is None:
        width = n // height
    if height * width != n or n <= 0:
        raise XaiError(
            f"{t} tokens minus {prefix_tokens} prefix token(s) do not fill a {height} x {width} grid; "
            "give height= and width= (or the right prefix_tokens) to vit_reshape."
        )
    return tokens[:, prefix_tokens:].transpose(1, 2).reshape(b, c, height, width)


def vit_reshape(prefix_tokens: int = 1, height: Optional[int] = None,
                width: Optional[int] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``reshape=`` for ViT-style ``(B, T, C)`` layers with class/register tokens first
    (see :func:`tokens_to_grid` for the arguments).

    Example:
        >>> xt.GradCAM(vit, layer="encoder.layers.encoder_layer_10", reshape=xt.vit_reshape())
    """
    return lambda t: tokens_to_grid(t, prefix_tokens, height, width)


def swin_reshape() -> Callable[[torch.Tensor], torch.Tensor]:
    """``reshape=`` for Swin-style channels-last ``(B, h, w, C)`` layers.

    Example:
        >>> xt.GradCAM(swin, layer="features.5", reshape=xt.swin_reshape())
    """
    def reshape(t: torch.Tensor) -> torch.Tensor:
        if t.ndim != 4:
            raise XaiError(f"swin_reshape expects (B, h, w, C); got {describe(t)}.")
        return t.permute(0, 3, 1, 2)
    return reshape
