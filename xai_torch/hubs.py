"""timm and Hugging Face models for the command line, built locally: nothing is downloaded.

* :func:`build_timm`: ``timm.create_model(NAME, pretrained=False)``, at 224 px where the
  architecture takes an image size, with timm's normalisation for that model.
* :func:`build_hf`: a Hugging Face image classifier from a local ``config.json`` (random weights)
  or a local folder holding one (its weights too, when the folder has them), wrapped by
  :func:`xai_torch.adapt` (``pixel_values=`` in, ``logits`` out).

Both packages are optional (the ``dev`` extra has them); without them the error says how to
install them. :mod:`xai_torch.models` turns the results into a ``LoadedModel``.
:func:`transformer_cam_layer` picks a transformer's default CAM layer.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .adapters import adapt
from .errors import XaiError, closest_names
from .hooks import HookSession
from .layers import AutoReshape, prefix_tokens

Normalize = tuple[tuple[float, ...], tuple[float, ...]]

#: the command line explains 224 x 224 crops
SIZE = 224
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def build_timm(name: str, num_classes: Optional[int] = None) -> tuple[nn.Module, Optional[Normalize]]:
    """``timm:NAME`` -> ``(model, (mean, std) or None)``: random weights (``pretrained=False``).

    Raises:
        XaiError: timm missing, or a name timm does not know (the closest names are listed).

    Example:
        >>> model, (mean, std) = build_timm("vit_tiny_patch16_224")
    """
    try:
        import timm  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise XaiError("--model timm:NAME needs timm: pip install timm (or pip install xai_torch[dev]).") from None
    available = timm.list_models()
    if name.split(".")[0] not in available:
        close = closest_names(name, available)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise XaiError(f"timm has no model {name!r}.{hint} List them with timm.list_models('PATTERN*').")
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    model: Any
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
        size = tuple(model.pretrained_cfg.get("input_size", (3, SIZE, SIZE)))[-2:]
        if size != (SIZE, SIZE):  # a ViT made for 384 px: the same architecture at 224 px
            try:
                model = timm.create_model(name, pretrained=False, img_size=SIZE, **kwargs)
            except TypeError:
                pass  # a CNN: it takes any size
    except (TypeError, ValueError, RuntimeError) as err:
        raise XaiError(f"could not build timm:{name} ({err}).") from None
    cfg: dict[str, Any] = dict(model.pretrained_cfg)
    mean, std = cfg.get("mean"), cfg.get("std")
    norm = (tuple(map(float, mean)), tuple(map(float, std))) if mean is not None and std is not None else None
    return model, norm


def build_hf(path: str, num_classes: Optional[int] = None) -> tuple[nn.Module, Optional[Normalize]]:
    """``hf:CONFIG_OR_PATH`` -> ``(adapter, (mean, std) or None)``.

    Args:
        path: a local ``config.json`` (random weights) or a folder with one; the folder's
            ``model.safetensors`` / ``pytorch_model.bin`` are loaded when present
            (``from_pretrained(..., local_files_only=True)``), and its
            ``preprocessor_config.json`` gives the normalisation.
        num_classes: replaces the config's ``num_labels``.

    Returns:
        ``xt.adapt(model, input_name="pixel_values", output="logits")`` (plus
        ``interpolate_pos_encoding=True`` when the config's image size is not 224 and the model
        takes it), and the normalisation or None.

    Raises:
        XaiError: transformers missing, a path that does not exist or has no ``config.json``, a
        config that is not JSON, has no known ``model_type`` or no image-classification model.

    Example:
        >>> model, norm = build_hf("my-vit/")          # my-vit/config.json (+ model.safetensors)
    """
    p = Path(path)
    config_file = p / "config.json" if p.is_dir() else p
    if not config_file.is_file():
        what = "folder has no config.json" if p.is_dir() else "file does not exist"
        raise XaiError(f"--model hf:{path}: the {what}. Give a local config.json or a folder holding one (with the "
                       "weights, model.safetensors, to load them); nothing is downloaded.")
    try:
        import transformers
    except ImportError:
        raise XaiError("--model hf:PATH needs transformers: pip install transformers (or pip install "
                       "xai_torch[dev]).") from None
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise XaiError(f"could not read {str(config_file)!r} as a JSON config ({err}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise XaiError(f"{str(config_file)!r} has no \"model_type\" (e.g. \"vit\"); it is not a Hugging Face config.")
    kind = data.pop("model_type")
    try:
        config = transformers.AutoConfig.for_model(kind, **data)
    except (ValueError, KeyError) as err:
        raise XaiError(f"transformers does not know model_type {kind!r} ({err}).") from None
    if num_classes is not None:
        config.num_labels = num_classes
    folder = config_file.parent
    auto: Any = transformers.AutoModelForImageClassification
    model: Any
    try:
        if any((folder / f).is_file() for f in _WEIGHT_FILES):
            model = auto.from_pretrained(str(folder), config=config, local_files_only=True)
        else:
            model = auto.from_config(config)
    except (ValueError, KeyError, OSError) as err:
        raise XaiError(f"could not build an image classifier from {str(config_file)!r} ({kind}): {err}") from None
    fixed: dict[str, Any] = {}
    size = getattr(config, "image_size", SIZE)
    if size not in (SIZE, [SIZE, SIZE], (SIZE, SIZE)) and "interpolate_pos_encoding" in inspect.signature(
            model.forward).parameters:
        fixed["interpolate_pos_encoding"] = True
    return adapt(model, input_name="pixel_values", output="logits", **fixed), _hf_normalize(folder)


def _hf_normalize(folder: Path) -> Optional[Normalize]:
    pre = folder / "preprocessor_config.json"
    if not pre.is_file():
        return None
    try:
        data = json.loads(pre.read_text(encoding="utf-8"))
        mean, std = data["image_mean"], data["image_std"]
        return tuple(map(float, mean)), tuple(map(float, std))
    except (OSError, ValueError, KeyError, TypeError):
        raise XaiError(f"{str(pre)!r} has no readable image_mean / image_std.") from None


def transformer_cam_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The CAM layer of a transformer, from one forward of one image of ``x``.

    * A model with a class token (ViT, DeiT, their timm and Hugging Face versions): the last
      LayerNorm before the last attention, the last block's input norm (``blocks.11.norm1``,
      ``encoder.layers.encoder_layer_11.ln_1``, ``vit.layers.11.layernorm_before``): its
      spatial tokens reach the class token through that attention; the block's output does not.
    * Swin, MaxViT and token models without one: the last module whose output is a map (either
      layout, :class:`~xai_torch.layers.AutoReshape`) larger than 1 x 1, before the pooling.

    Raises:
        XaiError: no such layer (pass ``--layer``).

    Example:
        >>> transformer_cam_layer(torchvision.models.vit_b_16(), torch.zeros(1, 3, 224, 224))
        'encoder.layers.encoder_layer_11.ln_1'
    """
    events: list[tuple[str, Any]] = []  # (name, output), or (name, None) when an attention starts
    modules = {n: m for n, m in model.named_modules() if n}

    def ended(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                events.append((name, output))
        return hook

    def started(name: str) -> Callable[[nn.Module, Any], None]:
        return lambda module, inputs: events.append((name, None))

    with HookSession() as session, torch.no_grad():
        for n, m in modules.items():
            session.forward_hook(m, ended(n))
            if has_attention_type(m):
                session.forward_pre_hook(m, started(n))
        model(x[:1])
    last_attention = max((i for i, (_, out) in enumerate(events) if out is None), default=-1)
    if prefix_tokens(model) > 0 and last_attention >= 0:
        norms = [n for n, out in events[:last_attention] if out is not None and out.ndim == 3
                 and isinstance(modules[n], nn.LayerNorm)]
        if norms:
            return norms[-1]
    for name, out in reversed(events):
        if out is not None and out.ndim == 4:
            dims = out.shape[1:3] if AutoReshape(model, [(name, modules[name])]).channels_last(out) else out.shape[2:]
            if min(dims) > 1:
                return str(name)
    raise XaiError("found no layer with a spatial map or a token grid for the CAM methods; pass --layer NAME (a "
                   "dotted module name, see model.named_modules()).")


def has_attention_type(module: nn.Module) -> bool:
    """Whether the module itself is an attention (``nn.MultiheadAttention`` or a class named ``...Attention``)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith(("Attention", "Attn"))
