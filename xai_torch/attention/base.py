"""The engine of the attention explainers: one forward under :class:`AttentionMode` per chunk,
the attention calls chosen, a method's token relevance, tokens to image maps.

Common arguments of every attention explainer (documented here once):

Args:
    model, batch_size, progress: see :mod:`xai_torch.explainer`. The model must run attention
        through ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention`` or an explicit
        softmax inside an attention module (see :mod:`xai_torch.attention.capture`).
    blocks: which attention calls of the forward take part: ``None`` (all), a list of call
        indices in call order (negative from the end: ``[-4, -3, -2, -1]``), or a module name /
        module / list of them (the calls made inside those modules, e.g. ``"encoder.layers"``).
    prefix_tokens: the tokens before the patch tokens (CLS, distillation, registers); ``None``
        detects them from the token count and the input's aspect ratio
        (:func:`~xai_torch.attention.tokens.patch_layout`).
    grid: ``(h, w)`` of the patch tokens (``None``: detected), for non-square grids.
    upsample: bilinear upsampling of the maps to the input size (``False``: ``(h, w)`` maps).

Returns (every attention explainer):
    ``(B, 1, H, W)`` maps (``(B, 1, h, w)`` with ``upsample=False``; ``(B, K, 1, ...)`` for
    ``(B, K)`` targets); ``explain`` gives an :class:`AttentionExplanation`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from ..errors import XaiError, describe
from ..explainer import Explainer, Explanation
from ..hooks import HookSession
from ..layers import find_layers
from ..runner import ModelRunner, repeat_rows, result_dtype
from ..targets import Target
from .capture import AttentionCall, AttentionMode, check_attention_interceptable, module_stack
from .tokens import check_grid, check_prefix, patch_layout, tokens_to_maps

__all__ = ["AttentionExplainer", "AttentionExplanation", "Chunk"]

LOOKED_FOR = ("F.scaled_dot_product_attention, F.multi_head_attention_forward (nn.MultiheadAttention) and softmax "
              "over the last dim of a (..., T, T) tensor inside a module whose class or name says attention/attn")


@dataclass
class AttentionExplanation(Explanation):
    """What the attention explainers return from ``explain``: the
    :class:`~xai_torch.explainer.Explanation` (``attributions`` are ``(B, [K,] 1, H, W)`` raw,
    not normalised maps) plus:

    Attributes:
        tokens: ``(B, [K,] h * w)`` the relevance of each patch token (before reshaping).
        prefix_tokens: the prefix tokens (CLS...) used; grid: the ``(h, w)`` patch grid.
        attention_calls: how many attention calls took part.
    """

    tokens: torch.Tensor
    prefix_tokens: int
    grid: tuple[int, int]
    attention_calls: int


@dataclass
class Chunk:
    """What a method's :meth:`AttentionExplainer._relevance` sees for one chunk of rows."""

    calls: list[torch.Tensor]          # (n, heads, T, T) probabilities of the chosen calls
    scores: Optional[torch.Tensor]     # (rows,) target scores in the graph (gradient methods)
    output: Any                        # the model output of the chunk
    rows: torch.Tensor                 # the target rows of the chunk
    prefix: int                        # prefix tokens
    state: dict[str, Any]              # what :meth:`AttentionExplainer._before` set up
    target: Target
    classes: Optional[torch.Tensor]    # the class of each row (None for callable targets)
    modules: Optional[list[tuple[str, ...]]] = None   # per chosen call, the modules open at it


class AttentionExplainer(Explainer):
    """Base of the attention explainers (see the module doc for the common arguments). A
    method sets :attr:`needs_grad` and implements :meth:`_relevance`."""

    #: whether the method needs the gradient of the target score (one forward per image x target)
    needs_grad: ClassVar[bool] = False

    def __init__(self, model: Any, *, blocks: Any = None, prefix_tokens: Optional[int] = None,
                 grid: Optional[tuple[int, int]] = None, upsample: bool = True, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.prefix_tokens = check_prefix(prefix_tokens)
        self.grid = check_grid(grid)
        if not isinstance(upsample, bool):
            raise XaiError(f"upsample must be True or False; got {describe(upsample)}.")
        self.upsample = upsample
        self.blocks = blocks
        self._block_names: Optional[list[str]] = None
        self._block_index: Optional[list[int]] = None
        if blocks is None:
            pass
        elif isinstance(blocks, (list, tuple)) and blocks and all(isinstance(b, int) and not isinstance(b, bool)
                                                                   for b in blocks):
            self._block_index = [int(b) for b in blocks]
        elif isinstance(model, nn.Module):
            self._block_names = [n for n, _ in find_layers(model, blocks, name="blocks")]
        else:
            raise XaiError(f"blocks must be None, a list of attention-call indices, or module names of an nn.Module; "
                           f"got {describe(blocks)} for a {type(model).__name__}.")

    def _config(self) -> dict[str, Any]:
        return {"blocks": self.blocks if self._block_names is None else self._block_names,
                "prefix_tokens": self.prefix_tokens, "grid": self.grid, "upsample": self.upsample,
                **super()._config()}

    # -- choosing the calls ------------------------------------------------------------------
    def _choose(self, calls: list[AttentionCall], images: int) -> list[AttentionCall]:
        name = type(self).__name__
        if not calls:
            raise XaiError(f"{name} found no attention call in the forward pass of {type(self.model).__name__}; "
                           f"it looked for {LOOKED_FOR}. Use a method that needs no attention (GradCAM, "
                           "IntegratedGradients...) for this model.")
        chosen = calls
        if self._block_index is not None:
            bad = [i for i in self._block_index if not -len(calls) <= i < len(calls)]
            if bad:
                raise XaiError(f"{name}: blocks={self._block_index} names attention calls {bad} that do not exist: "
                               f"the forward made {len(calls)} attention calls (indices 0 to {len(calls) - 1}, "
                               f"or -{len(calls)} to -1).")
            chosen = [calls[i] for i in self._block_index]
        elif self._block_names is not None:
            names = self._block_names
            chosen = [c for c in calls if any(n in c.modules for n in names)]
            if not chosen:
                where = sorted({c.module for c in calls})
                raise XaiError(f"{name}: no attention call happened inside blocks {names}; the calls happened in "
                               f"{where}.")
        shapes = {(c.probs.shape[0], c.probs.shape[-2], c.probs.shape[-1]) for c in chosen}
        if len(shapes) != 1 or chosen[0].probs.shape[-1] != chosen[0].probs.shape[-2] \
                or chosen[0].probs.shape[0] != images:
            seen = ", ".join(f"{c.kind}{tuple(c.probs.shape)} in {c.module or '?'}" for c in chosen[:6])
            more = " ..." if len(chosen) > 6 else ""
            raise XaiError(f"{name} needs self-attention over one set of tokens in every chosen call, (B, heads, T, T) "
                           f"with one T, for the {images} images of the forward; got {seen}{more}. Windowed attention "
                           "(Swin, MaxViT) has no token-to-token map over the whole image; choose calls with blocks=.")
        return chosen

    # -- the method --------------------------------------------------------------------------
    def _relevance(self, chunk: Chunk) -> torch.Tensor:
        """``(rows, T)`` relevance of every token (prefix ones included) for each row."""
        raise NotImplementedError

    def _before(self, session: HookSession) -> dict[str, Any]:
        """Per-call state set up before the forwards (hooks...); none by default."""
        return {}

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 **kwargs: Any) -> AttentionExplanation:
        check_attention_interceptable(self.model, type(self).__name__)
        run: ModelRunner = self.runner(x, target)
        k = target.k or 1
        xd = run.place(x)
        stack = module_stack(session, self.model) if isinstance(self.model, nn.Module) else None
        state = self._before(session)
        per_row = self.needs_grad
        layout: list[tuple[int, tuple[int, int], int]] = []

        def chunk(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
            if per_row:
                rows = torch.arange(start, stop, device=run.device)
                xc = xd[rows // k] if k > 1 else xd[start:stop]
            else:
                xc = xd[start:stop]
                rows = torch.arange(start * k, stop * k, device=run.device)
            mode = AttentionMode(stack=stack)
            with torch.inference_mode(False), torch.set_grad_enabled(per_row):
                if xc.is_inference():
                    xc = xc.clone()
                with mode:
                    out = run.forward(xc, grad=per_row)
                chosen = self._choose(mode.calls, xc.shape[0])
                scored = out if per_row else repeat_rows(out, k)
                s, classes = target.scores(scored, rows)
                if per_row and not s.requires_grad:
                    raise XaiError(f"{type(self).__name__}: the target score does not depend on the attention "
                                   "through autograd (the model or the target detaches it, or runs under no_grad).")
                tokens = chosen[0].probs.shape[-1]
                p, grid = patch_layout(tokens, x.shape[-2:], self.prefix_tokens, self.grid)
                if not layout:
                    layout.append((p, grid, len(chosen)))
                rel = self._relevance(Chunk([c.probs for c in chosen], s if per_row else None, out, rows, p, state,
                                            target, classes, [c.modules for c in chosen]))
            rel = rel.detach()[:, p:]
            if not per_row and k > 1:
                rel = rel.repeat_interleave(k, dim=0)
            return rel, s.detach(), classes

        parts = run.map(chunk, x.shape[0] * (k if per_row else 1))
        p, grid, count = layout[0]
        dtype = result_dtype(x)
        tokens = torch.cat([q[0] for q in parts]).to(dtype)
        maps = tokens_to_maps(tokens, grid, x.shape[-2:] if self.upsample else None)
        classes = [q[2] for q in parts]
        targets = None if classes[0] is None else self._per_image([c for c in classes if c is not None], x, target)
        return AttentionExplanation(self._per_image([maps], x, target, dtype), targets,
                                    self._per_image([q[1] for q in parts], x, target, dtype),
                                    self._per_image([tokens], x, target, dtype), p, grid, count)
