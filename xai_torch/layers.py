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
        f"{name}={layer!r} is not a submodule of {type(unwrap(model)).__name__}.{hint} "
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


# --- the automatic choice (CAM's default when reshape= is not given) --------------------------
#: the last part of the names of the parameters that hold leading non-spatial tokens (class,
#: distillation, register) in torchvision, timm and Hugging Face vision transformers
PREFIX_PARAMS = ("cls_token", "class_token", "dist_token", "distillation_token", "reg_token", "register_tokens")
_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside an :func:`xai_torch.adapt` adapter (the model itself otherwise)."""
    inner = getattr(model, "wrapped", None)
    return inner if isinstance(inner, nn.Module) else model


def has_attention(model: nn.Module) -> bool:
    """Whether the model has an attention module (``nn.MultiheadAttention``, or a class whose name
    has ``Attention`` / ``Attn``: timm's, Hugging Face's, torchvision's Swin and MaxViT ones)."""
    return any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ or "Attn" in type(m).__name__
               for m in model.modules())


def prefix_tokens(model: nn.Module) -> int:
    """Leading non-spatial tokens of a ViT-style model: timm's ``num_prefix_tokens``, else the
    tokens of its class / distillation / register token parameters (:data:`PREFIX_PARAMS`; 1 for
    torchvision's ViT and Hugging Face's ViT, 2 for DeiT with distillation, 0 for Swin)."""
    inner = unwrap(model)
    n = getattr(inner, "num_prefix_tokens", None)
    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        return n
    return sum((int(p.shape[-2]) if p.ndim >= 2 else 1) for name, p in inner.named_parameters()
               if name.rsplit(".", 1)[-1] in PREFIX_PARAMS)


def _pair(v: Any) -> Optional[tuple[int, int]]:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return int(v[0]), int(v[1])
    return None


def patch_grid(model: nn.Module) -> Optional[tuple[int, int]]:
    """The model's patch grid ``(h, w)`` at its configured image size, when it says: timm's
    ``patch_embed.grid_size``, torchvision's ``image_size // patch_size``, a Hugging Face
    ``config``'s ``image_size // patch_size``; else None."""
    inner = unwrap(model)
    grid = _pair(getattr(getattr(inner, "patch_embed", None), "grid_size", None))
    if grid is not None:
        return grid
    for owner in (inner, getattr(inner, "config", None)):
        size, patch = _pair(getattr(owner, "image_size", None)), _pair(getattr(owner, "patch_size", None))
        if size is not None and patch is not None and min(patch) > 0:
            return size[0] // patch[0], size[1] // patch[1]
    return None


def _evidence(layer: nn.Module) -> list[tuple[int, bool]]:
    """``(channels, channels_last)`` of the layer's modules, last registered first: a Linear /
    LayerNorm acts on the last dimension, a convolution / batch norm / ``LayerNorm2d`` on dim 1."""
    found: list[tuple[int, bool]] = []
    for m in reversed(list(layer.modules())):
        if isinstance(m, nn.Linear):
            found.append((m.out_features, True))
        elif isinstance(m, nn.LayerNorm) and m.normalized_shape:
            found.append((int(m.normalized_shape[-1]), "2d" not in type(m).__name__.lower()))
        elif isinstance(m, _FIRST):
            size = next(getattr(m, a) for a in ("out_channels", "num_features", "num_channels") if hasattr(m, a))
            found.append((int(size), False))
    return found


class AutoReshape:
    """The default ``reshape=`` of the CAM family: each layer output laid on its grid by its shape
    and the model.

    * ``(B, C, h, w)`` (a CNN's maps): unchanged. In a model with attention modules a 4-D output
      may be channels-last ``(B, h, w, C)`` (Swin's stages, timm's and torchvision's alike): the
      layer's own last Linear / LayerNorm / convolution says which dimension holds the channels;
      when the shape cannot tell (``C == w``) MaxViT keeps channels first and Swin last.
    * ``(B, T, C)`` tokens: the model's prefix tokens (:func:`prefix_tokens`: class, distillation,
      register) dropped, the rest on the model's patch grid (:func:`patch_grid`) or a square;
      a layer without prefix tokens (the patch embedding) fits with none.

    Args:
        model: the model (an :func:`xai_torch.adapt` adapter is looked through).
        layers: the target layers ``(name, module)``.

    Raises (when called):
        XaiError: tokens that fit no grid (the token count, prefix and grid are named; pass
        ``reshape=xt.vit_reshape(prefix_tokens=..., height=..., width=...)``), or an output that
        is neither 3-D nor 4-D (a pooled layer).

    Example:
        >>> AutoReshape(vit, [("encoder.layers.encoder_layer_10", block)])(torch.zeros(2, 197, 768)).shape
        torch.Size([2, 768, 14, 14])
    """

    def __init__(self, model: nn.Module, layers: Sequence[tuple[str, nn.Module]]) -> None:
        self.names = [n for n, _ in layers]
        self.prefix = prefix_tokens(model)
        self.grid = patch_grid(model)
        self.attention = has_attention(model)
        self.evidence = [e for _, m in layers for e in _evidence(m)]
        kinds = " ".join(type(m).__name__ for m in unwrap(model).modules())
        self.tie_last: Optional[bool] = False if "MaxVit" in kinds or "MaxxVit" in kinds else (
            True if "Swin" in kinds else None)

    def channels_last(self, t: torch.Tensor) -> bool:
        """Whether a 4-D output ``t`` of the layer is ``(B, h, w, C)``."""
        if not self.attention:
            return False
        _, a, b, c = t.shape
        if a == c:
            if self.tie_last is not None:
                return self.tie_last
            return next((last for size, last in self.evidence if size == c), False)
        for size, _ in self.evidence:
            if size in (a, c):
                return size == c
        return a == b != c

    def tokens(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` tokens -> ``(B, C, h, w)``."""
        n = t.shape[1]
        for p in dict.fromkeys((self.prefix, 0)):
            if self.grid is not None and self.grid[0] * self.grid[1] == n - p:
                return tokens_to_grid(t, p, *self.grid)
            side = int(round(max(n - p, 0) ** 0.5))
            if n - p > 0 and side * side == n - p:
                return tokens_to_grid(t, p)
        grid = f"the model's {self.grid[0]} x {self.grid[1]} patch grid" if self.grid else "no patch grid known"
        raise XaiError(
            f"the output of layer {', '.join(map(repr, self.names))} has {n} tokens; with {self.prefix} prefix "
            f"token(s) (class / distillation / register) {n - self.prefix} are left, which fill neither "
            f"{grid} nor a square. Pass reshape=xt.vit_reshape(prefix_tokens=..., height=..., width=...).")

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.ndim not in (3, 4):
            raise XaiError(
                f"the output of layer {', '.join(map(repr, self.names))} is a {describe(t)}: CAMs need a map "
                "(B, C, h, w), channels-last (B, h, w, C) or tokens (B, T, C); choose a layer before the pooling "
                "(or pass reshape=).")
        if t.ndim == 3:
            return self.tokens(t)
        return t.permute(0, 3, 1, 2) if self.channels_last(t) else t


def auto_reshape(model: nn.Module, layers: Sequence[tuple[str, nn.Module]]) -> AutoReshape:
    """The default ``reshape=`` for ``layers`` of ``model``: :class:`AutoReshape`."""
    return AutoReshape(model, layers)
