"""LeGrad (Bousselham et al. 2024, "LeGrad: an explainability method for vision transformers
via feature formation sensitivity").

For every chosen block ``l``, the block's tokens are scored by the model's own head,
``s_l = head(norm(mean_tokens(z_l)))[c]``, and differentiated with respect to the block's
attention probabilities ``A_l``; the map is ``mean_l mean_{h, q} (dF_l/dA_l)^+`` over the patch
keys. Attention values are not multiplied in. torch-cam 0.5's ``LeGrad`` computes the same
(torchvision ``VisionTransformer`` only, one image per class index, hooks on
``nn.MultiheadAttention`` modules that force ``need_weights=True``); here the attention comes
from the capture, so fused SDPA models (timm, Hugging Face) work too, batched over images and
``(B, K)`` targets.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import nn

from ..errors import XaiError, describe
from ..hooks import HookSession, this_thread
from ..layers import find_layers
from ..targets import ClassTarget, score_classes
from .base import AttentionExplainer, Chunk
from .tokens import find_blocks

__all__ = ["LeGrad", "default_head"]

Head = Callable[[torch.Tensor], torch.Tensor]


def default_head(model: nn.Module) -> Optional[Head]:
    """The function ``tokens (n, T, D) -> logits (n, classes)`` LeGrad scores a block with:
    the model's final norm and classifier on the mean token (torch-cam's choice, after the
    LeGrad authors' code). Known: torchvision ``VisionTransformer`` (``heads(encoder.ln(.))``),
    timm ``VisionTransformer`` (``head(fc_norm(norm(.)))``), Hugging Face
    ``ViTForImageClassification`` (``classifier(vit.layernorm(.))``). Else ``None``."""
    encoder, heads = getattr(model, "encoder", None), getattr(model, "heads", None)
    if isinstance(getattr(encoder, "ln", None), nn.Module) and isinstance(heads, nn.Module):
        ln = encoder.ln  # type: ignore[union-attr]
        return lambda t: heads(ln(t.mean(dim=1)))
    norm, fc_norm, head = (getattr(model, n, None) for n in ("norm", "fc_norm", "head"))
    if all(isinstance(m, nn.Module) for m in (norm, fc_norm, head)):
        return lambda t: head(fc_norm(norm(t.mean(dim=1))))  # type: ignore[misc]
    vit, classifier = getattr(model, "vit", None), getattr(model, "classifier", None)
    if isinstance(getattr(vit, "layernorm", None), nn.Module) and isinstance(classifier, nn.Module):
        layernorm = vit.layernorm  # type: ignore[union-attr]
        return lambda t: classifier(layernorm(t.mean(dim=1)))
    return None


class LeGrad(AttentionExplainer):
    """LeGrad (Bousselham et al. 2024): per block, the positive gradient of the block's own class
    score with respect to its attention probabilities, averaged over heads, queries and blocks.

    Args:
        model: an ``nn.Module`` with transformer blocks (found by
            :func:`~xai_torch.attention.tokens.find_blocks`: torchvision ``encoder.layers``, timm
            ``blocks``, Hugging Face ``vit.encoder.layer``).
        blocks: ``None`` (every block), a list of block indices (``[-4, -3, -2, -1]``: the last
            four, torch-cam's example), or block module names / modules.
        head: ``tokens (n, T, D) -> logits (n, classes)`` scoring a block's output; ``None``
            picks the model's own (see :func:`default_head`), else it must be given.
        prefix_tokens, grid, upsample, batch_size, progress: see :mod:`xai_torch.attention.base`.

    Returns:
        ``(B, [K,] 1, H, W)`` raw maps (torch-cam min-max normalises them; ``xt.viz`` does that
        here). One forward and one backward (per block, over that block only) per image x target.

    Example:
        >>> maps = xt.LeGrad(vit, blocks=[-4, -3, -2, -1])(x, target=[3, 7])
    """

    needs_grad = True

    def __init__(self, model: nn.Module, *, blocks: Any = None, head: Optional[Head] = None,
                 prefix_tokens: Optional[int] = None, grid: Optional[tuple[int, int]] = None, upsample: bool = True,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, prefix_tokens=prefix_tokens, grid=grid, upsample=upsample, batch_size=batch_size,
                         progress=progress)
        if not isinstance(model, nn.Module):
            raise XaiError(f"LeGrad needs an nn.Module to find the transformer blocks in; got {type(model).__name__}.")
        found = find_blocks(model)
        self.blocks = blocks
        #: why the model cannot be explained, said at the call (the registry builds every method on any model)
        self._unusable: Optional[str] = None
        chosen: list[tuple[str, nn.Module]] = []
        if blocks is None or (isinstance(blocks, (list, tuple)) and blocks
                              and all(isinstance(b, int) and not isinstance(b, bool) for b in blocks)):
            if not found:
                self._unusable = (f"LeGrad found no transformer blocks in {type(model).__name__} (an nn.Sequential / "
                                  "nn.ModuleList whose children each hold an attention module); give blocks= as "
                                  "module names.")
        else:
            chosen = find_layers(model, blocks, name="blocks")
        if found and not chosen:
            index = list(range(len(found))) if blocks is None else [int(b) for b in blocks]
            bad = [i for i in index if not -len(found) <= i < len(found)]
            if bad:
                raise XaiError(f"LeGrad: blocks={list(blocks or [])} names blocks {bad} that do not exist: the model "
                               f"has {len(found)} blocks ({found[0][0]} ... {found[-1][0]}).")
            chosen = [found[i] for i in index]
        self._names: list[str] = [n for n, _ in chosen]
        self._block_names = self._names
        self._modules = [m for _, m in chosen]
        if head is not None and not callable(head):
            raise XaiError(f"head must be a callable tokens -> logits; got {describe(head)}.")
        self.head = head if head is not None else default_head(model)
        if self.head is None and self._unusable is None:
            self._unusable = (f"LeGrad does not know how {type(model).__name__} turns tokens into class scores; give "
                              "head=lambda tokens: ... (tokens (n, T, D) -> logits (n, classes)).")

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "blocks": self._names}

    def _before(self, session: HookSession) -> dict[str, Any]:
        if self._unusable is not None:
            raise XaiError(self._unusable)
        outs: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, out: Any) -> None:
                outs[name] = out[0] if isinstance(out, (tuple, list)) else out
            return hook

        for name, module in zip(self._names, self._modules):
            session.forward_hook(module, this_thread(keep(name)))
        return {"outs": outs}

    def _relevance(self, chunk: Chunk) -> torch.Tensor:
        assert self.head is not None and chunk.modules is not None
        outs: dict[str, torch.Tensor] = chunk.state["outs"]
        maps = []
        for name in self._names:
            inside = [a for a, mods in zip(chunk.calls, chunk.modules) if name in mods]
            tokens = outs.get(name)
            if not inside or tokens is None:
                raise XaiError(f"LeGrad: block {name!r} ran no attention call or returned no tokens in the forward.")
            if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
                raise XaiError(f"LeGrad: block {name!r} must return tokens (B, T, D); got {describe(tokens)}.")
            logits = self.head(tokens)
            if chunk.classes is not None:
                score = getattr(chunk.target, "score", "logit") if isinstance(chunk.target, ClassTarget) else "logit"
                s = score_classes(logits, chunk.classes.to(logits.device), score)
            else:
                s = chunk.target.scores(logits, chunk.rows)[0]
            (g,) = torch.autograd.grad(s.sum(), inside[-1], retain_graph=True, allow_unused=True)
            if g is None:
                raise XaiError(f"LeGrad: the score of block {name!r} does not depend on its attention.")
            maps.append(g.detach().clamp(min=0).mean(dim=(1, 2)))
        return torch.stack(maps).mean(dim=0)
