"""Gradient-weighted attention relevance (Chefer, Gur & Wolf, ICCV 2021, "Generic
attention-model explainability for interpreting bi-modal and encoder-decoder transformers").

For self-attention: ``R = I``; for every block in order, ``Ā = mean_h((∇A ⊙ A)^+)`` and
``R = R + Ā R``. The CLS row of ``R`` over the patch tokens is the map (no prefix token: the
mean of the rows). :func:`chefer_relevance` is the model-free part.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import AttentionExplainer, Chunk
from .rollout import attention_grads, class_row

__all__ = ["TransformerAttribution", "chefer_relevance"]


def chefer_relevance(attentions: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """``R`` after all blocks: ``R_0 = I``, ``R_l = R_{l-1} + mean_h((∇A_l ⊙ A_l)^+) R_{l-1}``.

    Args:
        attentions, grads: ``(n, heads, T, T)`` per block, in call order.

    Returns:
        ``(n, T, T)``.
    """
    eye = torch.eye(attentions[0].shape[-1], dtype=attentions[0].dtype, device=attentions[0].device)
    r = eye.expand(attentions[0].shape[0], -1, -1)
    for a, g in zip(attentions, grads):
        r = r + (g * a).clamp(min=0).mean(dim=1) @ r
    return r


class TransformerAttribution(AttentionExplainer):
    """Chefer et al. (ICCV 2021) relevance of the patch tokens for a class, per image x target.

    ``R = I``; per attention call ``R += mean_h((dF_c/dA ⊙ A)^+) @ R``; the CLS row of ``R`` over
    the patch tokens (no prefix token: the mean of the rows). The attention probabilities are
    captured in the graph from fused kernels too, so no model change is needed (Chefer's code
    rewrites the model's attention modules). One forward and one backward per image x target.

    Args:
        model, blocks, prefix_tokens, grid, upsample, batch_size, progress: see
            :mod:`xai_torch.attention.base`.

    Returns:
        ``(B, [K,] 1, H, W)`` raw maps (>= 0; the CLS token's own 1 from ``I`` is dropped with
        the prefix tokens).

    Example:
        >>> maps = xt.TransformerAttribution(vit)(x, target=243)         # (B, 1, 224, 224)
    """

    needs_grad = True

    def _relevance(self, chunk: Chunk) -> torch.Tensor:
        assert chunk.scores is not None
        grads = attention_grads(chunk.scores, chunk.calls, type(self).__name__)
        return class_row(chefer_relevance([a.detach() for a in chunk.calls], grads), chunk.prefix)
