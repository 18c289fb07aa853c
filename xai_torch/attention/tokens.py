"""Tokens to image: prefix tokens (CLS, distillation, registers), the patch grid, the blocks.

Pure functions on shapes and module trees, shared by the attention explainers.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from ..errors import XaiError, describe
from ..imageops import upsample_to

__all__ = ["MAX_PREFIX", "check_grid", "check_prefix", "find_blocks", "patch_layout", "tokens_to_maps"]

#: the most prefix tokens detection tries (CLS + distillation + up to 14 registers)
MAX_PREFIX = 16
_ATTENTION = re.compile(r"attention|attn", re.IGNORECASE)


def check_prefix(prefix_tokens: Any) -> Optional[int]:
    """``prefix_tokens`` as ``None`` (detect) or an int >= 0; else :class:`XaiError`."""
    if prefix_tokens is None:
        return None
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
        raise XaiError(f"prefix_tokens must be None (detected) or an int >= 0; got {describe(prefix_tokens)}.")
    return prefix_tokens


def check_grid(grid: Any) -> Optional[tuple[int, int]]:
    """``grid`` as ``None`` (detect) or ``(h, w)`` positive ints; else :class:`XaiError`."""
    if grid is None:
        return None
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2
            or any(isinstance(g, bool) or not isinstance(g, int) or g <= 0 for g in grid)):
        raise XaiError(f"grid must be None (detected) or (h, w), two positive ints; got {describe(grid)}.")
    return int(grid[0]), int(grid[1])


def _grid_for(n: int, size: Sequence[int]) -> Optional[tuple[int, int]]:
    """``(h, w)`` with ``h * w == n`` and ``h / w == H / W`` exactly, else None."""
    height, width = int(size[0]), int(size[1])
    h = round(math.sqrt(n * height / width))
    for hh in (h - 1, h, h + 1):
        if hh > 0 and n % hh == 0 and hh * width == (n // hh) * height:
            return hh, n // hh
    return None


def patch_layout(tokens: int, size: Sequence[int], prefix_tokens: Optional[int] = None,
                 grid: Optional[tuple[int, int]] = None) -> tuple[int, tuple[int, int]]:
    """How ``tokens`` split into prefix tokens and an ``(h, w)`` grid of patches.

    Given neither: the fewest prefix tokens ``p`` (0 to :data:`MAX_PREFIX`) that leave a grid
    with the image's aspect ratio (``h / w == H / W``): 197 tokens of a 224 px ViT-B/16 -> 1
    (CLS) and 14 x 14; 198 (DeiT distilled) -> 2; 201 (CLS + 4 registers) -> 5. Given one, the
    other follows.

    Args:
        tokens: the token count ``T``; size: the input's ``(H, W)``.
        prefix_tokens, grid: as given by the user (``None``: detected).

    Returns:
        ``(p, (h, w))`` with ``p + h * w == tokens``.

    Raises:
        XaiError: when they do not fit, naming the token count, the grid and the input size.
    """
    where = f"{tokens} tokens for a {int(size[0])}x{int(size[1])} input"
    if grid is not None:
        p = tokens - grid[0] * grid[1]
        if p < 0 or (prefix_tokens is not None and p != prefix_tokens):
            raise XaiError(f"{where}: prefix_tokens={prefix_tokens} and grid={grid} do not fit ({tokens} tokens "
                           f"!= {prefix_tokens if prefix_tokens is not None else 'p'} + {grid[0]} x {grid[1]}). "
                           "Give the grid of patch tokens and the count of the other tokens.")
        return p, grid
    if prefix_tokens is not None:
        n = tokens - prefix_tokens
        found = _grid_for(n, size) if n > 0 else None
        if found is None:
            raise XaiError(f"{where}: after prefix_tokens={prefix_tokens}, {n} patch tokens make no grid with the "
                           f"input's aspect ratio; give grid=(h, w) (h * w == {n}).")
        return prefix_tokens, found
    for p in range(min(MAX_PREFIX, tokens - 1) + 1):
        found = _grid_for(tokens - p, size)
        if found is not None:
            return p, found
    raise XaiError(f"{where}: no count of prefix tokens (0 to {MAX_PREFIX}) leaves a grid of patches with the "
                   "input's aspect ratio; give prefix_tokens= and grid=(h, w).")


def tokens_to_maps(values: torch.Tensor, grid: tuple[int, int], size: Optional[Sequence[int]]) -> torch.Tensor:
    """``(n, h * w)`` values on the patch tokens as ``(n, 1, h, w)`` maps, bilinearly upsampled
    to ``size`` (``None``: kept at the grid)."""
    maps = values.reshape(values.shape[0], 1, grid[0], grid[1])
    return maps if size is None else upsample_to(maps, size)


def _has_attention(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) or _ATTENTION.search(f"{n.rsplit('.', 1)[-1]} {type(m).__name__}")
               for n, m in module.named_modules() if n)


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks of ``model``: the children of the ``nn.Sequential`` /
    ``nn.ModuleList`` with the most children that each hold an attention module
    (``nn.MultiheadAttention``, or a module whose class or name says attention); the deepest
    such container on a tie. torchvision ViT: ``encoder.layers.encoder_layer_i``; timm:
    ``blocks.i``; Hugging Face: ``vit.encoder.layer.i``. ``[]`` when there is none."""
    best: list[tuple[str, nn.Module]] = []
    best_depth = -1
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Sequential, nn.ModuleList)):
            continue
        children = list(module.named_children())
        if not children or not all(_has_attention(c) for _, c in children):
            continue
        depth = name.count(".") + 1 if name else 0
        if len(children) > len(best) or (len(children) == len(best) and depth > best_depth):
            best = [(f"{name}.{n}" if name else n, c) for n, c in children]
            best_depth = depth
    return best
