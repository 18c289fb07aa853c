"""Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (vit-explain).

Rollout multiplies, block after block, each block's attention with the identity added for the
residual connection, ``Â_l = (fuse(A_l) + I) / 2`` with rows renormalised to sum 1:
``R = Â_L ... Â_2 Â_1``. The CLS row of ``R`` over the patch tokens is the map (a model without
prefix tokens: the mean of the rows, the attention every token receives on average).

The model-free numerics are the pure functions :func:`fuse_heads`, :func:`discard_lowest` and
:func:`rollout`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from ..errors import XaiError, describe
from .base import AttentionExplainer, Chunk

__all__ = ["AttentionGradRollout", "AttentionRollout", "class_row", "discard_lowest", "fuse_heads", "rollout"]

_FUSIONS = ("mean", "max", "min")


def fuse_heads(a: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """``(n, heads, T, T)`` -> ``(n, T, T)``: the mean, max or min over heads."""
    if how == "mean":
        return a.mean(dim=1)
    if how == "max":
        return a.amax(dim=1)
    if how == "min":
        return a.amin(dim=1)
    raise XaiError(f"head_fusion must be one of {_FUSIONS}; got {how!r}.")


def discard_lowest(a: torch.Tensor, ratio: float) -> torch.Tensor:
    """``(n, T, T)`` with the lowest ``ratio`` of each map's ``T * T`` entries set to 0, except
    entry ``[0, 0]`` (CLS to CLS), which is never dropped (vit-explain's rule, per image: it
    applies it to the first image of a batch only)."""
    count = int(a.shape[-1] * a.shape[-2] * ratio)
    if count <= 0:
        return a
    flat = a.reshape(a.shape[0], -1)
    lowest = flat.topk(count, dim=-1, largest=False).indices
    keep = torch.ones_like(flat, dtype=torch.bool).scatter(1, lowest, False)
    keep[:, 0] = True
    return (flat * keep).reshape(a.shape)


def rollout(fused: Sequence[torch.Tensor]) -> torch.Tensor:
    """``R = Â_L ... Â_1`` with ``Â_l = (A_l + I) / 2`` rows renormalised, from ``(n, T, T)``
    fused attentions in call order; ``(n, T, T)``."""
    eye = torch.eye(fused[0].shape[-1], dtype=fused[0].dtype, device=fused[0].device)
    r = eye.expand_as(fused[0])
    for a in fused:
        a_hat = (a + eye) / 2
        a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
        r = a_hat @ r
    return r


def class_row(r: torch.Tensor, prefix: int) -> torch.Tensor:
    """``(n, T)``: row 0 (the CLS token) of ``(n, T, T)`` relations, or with no prefix token
    the mean over rows."""
    return r[:, 0] if prefix > 0 else r.mean(dim=1)


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise XaiError(f"discard_ratio must be a number in [0, 1); got {describe(ratio)}.")
    return float(ratio)


class AttentionRollout(AttentionExplainer):
    """Attention rollout (Abnar & Zuidema 2020), class-agnostic.

    ``R = Â_L ... Â_1``, ``Â_l = (fuse(A_l) + I) / 2`` (rows renormalised), over the chosen
    attention calls; the map is the CLS row of ``R`` over the patch tokens (no prefix token:
    the mean over rows). One forward per image, no backward; every target of an image gets the
    same map (``targets`` and ``scores`` are still reported). The attention is captured from
    fused kernels too (:mod:`xai_torch.attention.capture`), so torchvision's ViT
    (``need_weights=False``) and timm's fused attention work.

    Args:
        model, blocks, prefix_tokens, grid, upsample, batch_size, progress: see
            :mod:`xai_torch.attention.base`.
        head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads (vit-explain).
        discard_ratio: the fraction of each fused map's lowest entries set to 0 before the
            residual is added (vit-explain; 0: none).

    Returns:
        ``(B, [K,] 1, H, W)`` raw maps (the CLS row sums to 1 over all tokens).

    Raises:
        XaiError: a model with no attention call (says what was looked for), ``blocks`` naming
            calls that do not exist, prefix tokens / grid that do not fit the token count.

    Example:
        >>> vit = torchvision.models.vit_b_16(weights=None).eval()
        >>> maps = xt.AttentionRollout(vit, discard_ratio=0.9)(x)      # (B, 1, 224, 224)
    """

    def __init__(self, model: Any, *, head_fusion: str = "mean", discard_ratio: float = 0.0, blocks: Any = None,
                 prefix_tokens: Optional[int] = None, grid: Optional[tuple[int, int]] = None, upsample: bool = True,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, blocks=blocks, prefix_tokens=prefix_tokens, grid=grid, upsample=upsample,
                         batch_size=batch_size, progress=progress)
        if head_fusion not in _FUSIONS:
            raise XaiError(f"head_fusion must be one of {_FUSIONS}; got {head_fusion!r}.")
        self.head_fusion = head_fusion
        self.discard_ratio = _check_ratio(discard_ratio)

    def _config(self) -> dict[str, Any]:
        return {"head_fusion": self.head_fusion, "discard_ratio": self.discard_ratio, **super()._config()}

    def _fused(self, chunk: Chunk) -> list[torch.Tensor]:
        return [fuse_heads(a, self.head_fusion) for a in chunk.calls]

    def _relevance(self, chunk: Chunk) -> torch.Tensor:
        fused = [discard_lowest(a, self.discard_ratio) for a in self._fused(chunk)]
        return class_row(rollout(fused), chunk.prefix)


class AttentionGradRollout(AttentionRollout):
    """Gradient-weighted attention rollout (jacobgil's vit-explain ``grad_rollout``), per class.

    As :class:`AttentionRollout` with each block's heads fused as
    ``max(mean_h(A_h * dF_c/dA_h), 0)`` (the gradient of the target score with respect to the
    attention probabilities, which the capture keeps in the graph). One forward and one
    backward per image x target. ``head_fusion`` is fixed to that rule.

    Args:
        model, discard_ratio, blocks, prefix_tokens, grid, upsample, batch_size, progress: as
            :class:`AttentionRollout`.

    Example:
        >>> maps = xt.AttentionGradRollout(vit, discard_ratio=0.9)(x, target=[[3, 7]] * len(x))   # (B, 2, 1, H, W)
    """

    needs_grad = True

    def __init__(self, model: Any, *, discard_ratio: float = 0.0, blocks: Any = None,
                 prefix_tokens: Optional[int] = None, grid: Optional[tuple[int, int]] = None, upsample: bool = True,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, discard_ratio=discard_ratio, blocks=blocks, prefix_tokens=prefix_tokens, grid=grid,
                         upsample=upsample, batch_size=batch_size, progress=progress)

    def _config(self) -> dict[str, Any]:
        cfg = super()._config()
        del cfg["head_fusion"]
        return cfg

    def _fused(self, chunk: Chunk) -> list[torch.Tensor]:
        assert chunk.scores is not None
        grads = attention_grads(chunk.scores, chunk.calls, type(self).__name__)
        return [(a * g).mean(dim=1).clamp(min=0) for a, g in zip(chunk.calls, grads)]


def attention_grads(scores: torch.Tensor, calls: Sequence[torch.Tensor], who: str) -> list[torch.Tensor]:
    """``dF/dA`` of the summed ``scores`` for every attention map (one backward)."""
    grads = torch.autograd.grad(scores.sum(), list(calls), allow_unused=True)
    if any(g is None for g in grads):
        missing = [i for i, g in enumerate(grads) if g is None]
        raise XaiError(f"{who}: the target score does not depend on attention calls {missing}; choose the calls "
                       "on the path to the output with blocks=.")
    return [g.detach() for g in grads if g is not None]
