"""Attention probabilities captured per call, fused kernels included, without touching the model.

A :class:`~torch.overrides.TorchFunctionMode` (the technique of :mod:`xai_torch.rules`), entered
only around a forward pass, sees every attention call and recomputes it explicitly and
differentiably, ``softmax(Q K^T * scale + mask) @ V``, so that the probabilities exist as
tensors in the autograd graph (gradients with respect to them exist) while the outputs stay the
same to float rounding:

* ``F.scaled_dot_product_attention`` (timm with fused attention, Hugging Face ``sdpa``, any
  model calling it): ``attn_mask`` (bool: True takes part; float: added), ``is_causal``,
  ``scale``, ``dropout_p``, ``enable_gqa``;
* ``F.multi_head_attention_forward``, what ``nn.MultiheadAttention`` (and
  ``nn.TransformerEncoderLayer``) calls, also with ``need_weights=False`` as torchvision's ViT
  does (the fused fast path is skipped while the mode is on): in / out projections (packed or
  separate), ``attn_mask``, ``key_padding_mask``, ``bias_k`` / ``bias_v``, ``add_zero_attn``,
  dropout in training mode; the weights it returns are what it would return. Calls with
  ``static_k`` / ``static_v`` run unchanged and are counted in ``skipped``;
* explicit softmax attention: ``F.softmax`` / ``torch.softmax`` / ``Tensor.softmax`` over the
  last dim of a ``(..., T, T)`` tensor while a module whose class or name says attention
  (``Attention``, ``attn``: timm ``Attention`` with ``fused_attn=False``, Hugging Face eager
  ``ViTSelfAttention``, torchvision Swin's ``ShiftedWindowAttention``, MaxViT's
  ``RelativePositionalMultiHeadAttention``) is running. The softmax output is the tensor the
  model goes on with, so it is recorded as is. Swin / MaxViT maps are per window
  (``(B * windows, heads, t, t)``), not over the image's tokens.

Each recorded call is an :class:`AttentionCall`: ``probs`` ``(B, heads, T, S)`` (before
dropout), the kind of call and the module running it. Outside the mode nothing changes: SDPA
runs fused, ``nn.MultiheadAttention`` takes its fast path.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import XaiError
from ..hooks import HookSession, this_thread

__all__ = ["AttentionCall", "AttentionMaps", "AttentionMode", "capture_attention", "check_attention_interceptable"]

_SDPA = F.scaled_dot_product_attention
_MHA = F.multi_head_attention_forward
_MHA_SIGNATURE = inspect.signature(_MHA)
_SOFTMAXES = {F.softmax, torch.softmax, torch.Tensor.softmax}
_ATTENTION_NAME = re.compile(r"attention|attn", re.IGNORECASE)


@dataclass
class AttentionCall:
    """One attention call seen in a forward pass.

    Attributes:
        probs: ``(B, heads, T, S)`` attention probabilities (rows sum to 1), before dropout, in
            the autograd graph of the forward (``torch.autograd.grad(score, call.probs)`` works).
            An explicit softmax that is not 4-D (MaxViT's ``(B, windows, heads, t, t)``) is
            recorded as a reshaped view, which has values but no gradient.
        kind: ``"sdpa"``, ``"mha"`` or ``"softmax"`` (explicit softmax inside an attention module).
        module: the dotted name of the innermost module running when the call happened
            (``"encoder.layers.encoder_layer_0.self_attention"``), ``""`` when unknown.
        modules: the names of every module open at the call, outermost first.
    """

    probs: torch.Tensor
    kind: str
    module: str = ""
    modules: tuple[str, ...] = ()


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _sdpa(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.scaled_dot_product_attention`` written out: ``(output, probabilities)``."""
    q, k, v = (_arg(args, kwargs, i, n, None) for i, n in enumerate(("query", "key", "value")))
    mask = _arg(args, kwargs, 3, "attn_mask", None)
    p = float(_arg(args, kwargs, 4, "dropout_p", 0.0))
    causal = bool(_arg(args, kwargs, 5, "is_causal", False))
    scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
    if kwargs.get("enable_gqa", args[7] if len(args) > 7 else False) and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    logits = (q @ k.transpose(-2, -1)) * s
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    probs4 = _four_d(logits).softmax(dim=-1)   # recorded as (B, heads, T, S), the tensor the output uses
    probs = probs4.reshape(logits.shape)
    used = F.dropout(probs, p) if p > 0 else probs
    return used @ v, probs4


def _four_d(t: torch.Tensor) -> torch.Tensor:
    """``(..., T, S)`` as ``(B, heads, T, S)``: 2-D -> ``(1, 1, T, S)``, 3-D -> ``(B, 1, T, S)``,
    more dims folded into the batch."""
    if t.dim() == 4:
        return t
    if t.dim() > 4:
        return t.reshape(-1, *t.shape[-3:])
    return t[None, None] if t.dim() == 2 else t.unsqueeze(1)


def _float_mask(mask: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """An MHA mask (bool: True is masked out; float: added) as an additive float mask."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, float("-inf"))


def _mha(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Optional[tuple[Any, torch.Tensor]]:
    """``F.multi_head_attention_forward`` written out: ``((output, weights), probabilities)``,
    or None for a call this does not cover (``static_k`` / ``static_v``)."""
    a = _MHA_SIGNATURE.bind(*args, **kwargs)
    a.apply_defaults()
    g = a.arguments
    if g["static_k"] is not None or g["static_v"] is not None:
        return None
    query, key, value = g["query"], g["key"], g["value"]
    batched = query.dim() == 3
    kpm, mask = g["key_padding_mask"], g["attn_mask"]
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        kpm = None if kpm is None else kpm.unsqueeze(0)
    tgt, bsz, embed = query.shape
    heads = int(g["num_heads"])
    d = embed // heads
    bias = g["in_proj_bias"]
    bq, bk, bv = (None, None, None) if bias is None else bias.chunk(3)
    if g["use_separate_proj_weight"]:
        wq, wk, wv = g["q_proj_weight"], g["k_proj_weight"], g["v_proj_weight"]
    else:
        wq, wk, wv = g["in_proj_weight"].chunk(3)
    if query is key and key is value and not g["use_separate_proj_weight"]:
        q, k, v = F.linear(query, g["in_proj_weight"], bias).chunk(3, dim=-1)   # one packed projection
    else:
        q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
    mask = _float_mask(mask, q)
    kpm = _float_mask(kpm, q)
    if mask is None and g["is_causal"]:
        mask = _float_mask(torch.ones(tgt, key.shape[0], dtype=torch.bool, device=q.device).triu(1), q)
    if g["bias_k"] is not None and g["bias_v"] is not None:
        k = torch.cat([k, g["bias_k"].repeat(1, bsz, 1)])
        v = torch.cat([v, g["bias_v"].repeat(1, bsz, 1)])
        mask = None if mask is None else F.pad(mask, (0, 1))
        kpm = None if kpm is None else F.pad(kpm, (0, 1))
    # heads folded into the batch, (B * heads, T, d), as PyTorch's own need_weights path computes
    q = q.reshape(tgt, bsz * heads, d).transpose(0, 1)
    k = k.reshape(k.shape[0], bsz * heads, d).transpose(0, 1)
    v = v.reshape(v.shape[0], bsz * heads, d).transpose(0, 1)
    if g["add_zero_attn"]:
        k = torch.cat([k, k.new_zeros(bsz * heads, 1, d)], dim=1)
        v = torch.cat([v, v.new_zeros(bsz * heads, 1, d)], dim=1)
        mask = None if mask is None else F.pad(mask, (0, 1))
        kpm = None if kpm is None else F.pad(kpm, (0, 1))
    src = k.shape[1]
    add = None if mask is None else mask.unsqueeze(0) if mask.dim() == 2 else mask
    if kpm is not None:
        pad = kpm.reshape(bsz, 1, 1, src).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src)
        add = pad if add is None else add + pad
    qs = q * math.sqrt(1.0 / d)
    logits = torch.bmm(qs, k.transpose(-2, -1)) if add is None else torch.baddbmm(add, qs, k.transpose(-2, -1))
    # the (B, heads, T, S) probabilities are the tensor the output is computed from (in the graph)
    probs = logits.view(bsz, heads, tgt, src).softmax(dim=-1)
    p = float(g["dropout_p"]) if g["training"] else 0.0
    used = F.dropout(probs, p) if p > 0 else probs
    out = torch.bmm(used.reshape(bsz * heads, tgt, src), v).transpose(0, 1).reshape(tgt * bsz, embed)
    out = F.linear(out, g["out_proj_weight"], g["out_proj_bias"]).view(tgt, bsz, -1)
    weights: Optional[torch.Tensor] = None
    if g["need_weights"]:
        weights = used.mean(dim=1) if g["average_attn_weights"] else used
        weights = weights if batched else weights.squeeze(0)
    return (out if batched else out.squeeze(1), weights), probs


class AttentionMode(TorchFunctionMode):
    """Records (and makes explicit) every attention call while active; see the module doc.

    Args:
        softmax: also record explicit softmax attention inside attention modules (needs
            ``stack``, the names and classes of the open modules, kept by :func:`module_stack`).
        stack: the open modules as ``(name, class name)``, innermost last (``None``: unknown).

    Attributes:
        calls: the :class:`AttentionCall` s, in call order.
        skipped: ``Counter`` of attention calls seen but not recomputed (``{"mha static_k": 2}``).
    """

    def __init__(self, *, softmax: bool = True, stack: Optional[list[tuple[str, str]]] = None) -> None:
        super().__init__()
        self.softmax = softmax
        self.stack = stack
        self.calls: list[AttentionCall] = []
        self.skipped: Counter[str] = Counter()

    def _record(self, probs: torch.Tensor, kind: str) -> None:
        names = tuple(n for n, _ in self.stack) if self.stack else ()
        probs4 = _four_d(probs)
        self.calls.append(AttentionCall(probs4, kind, names[-1] if names else "", names))

    def _in_attention_module(self) -> bool:
        return bool(self.stack) and any(_ATTENTION_NAME.search(f"{n.rsplit('.', 1)[-1]} {c}")
                                        for n, c in (self.stack or []))

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: Optional[dict[str, Any]] = None) -> Any:
        kwargs = kwargs or {}
        if func is _SDPA:
            out, probs = _sdpa(args, kwargs)
            self._record(probs, "sdpa")
            return out
        if func is _MHA:
            done = _mha(args, kwargs)
            if done is None:
                self.skipped["mha static_k/static_v"] += 1
                return func(*args, **kwargs)
            self._record(done[1], "mha")
            return done[0]
        try:
            is_softmax = self.softmax and func in _SOFTMAXES
        except TypeError:  # unhashable callables
            is_softmax = False
        if is_softmax:
            out = func(*args, **kwargs)
            x = args[0] if args else kwargs.get("input")
            dim = _arg(args, kwargs, 1, "dim", None)
            if (isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor) and x.dim() >= 3
                    and dim in (-1, x.dim() - 1) and x.shape[-1] == x.shape[-2] and self._in_attention_module()):
                self._record(out, "softmax")
            return out
        return func(*args, **kwargs)


def module_stack(session: HookSession, model: nn.Module) -> list[tuple[str, str]]:
    """The modules of ``model`` open during its forward passes in this thread, as a list of
    ``(name, class name)`` kept by hooks registered in ``session`` (innermost last)."""
    stack: list[tuple[str, str]] = []

    def enter(name: str, cls: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            if not name:   # a forward of the whole model starts: forget an interrupted one
                stack.clear()
            stack.append((name, cls))
        return hook

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        if stack:
            stack.pop()

    for name, module in model.named_modules():
        session.forward_pre_hook(module, this_thread(enter(name, type(module).__name__)))
        session.forward_hook(module, this_thread(leave), always_call=True)
    return stack


def check_attention_interceptable(model: Any, who: str) -> None:
    """Raise when the attention calls of ``model`` cannot be seen from Python (TorchScript,
    ``torch.compile``, ``nn.DataParallel``)."""
    if not isinstance(model, nn.Module):
        return
    for name, module in model.named_modules():
        where = f"submodule {name!r}" if name else "the model"
        if isinstance(module, torch.jit.ScriptModule):
            raise XaiError(f"{who}: {where} is a TorchScript module: its attention calls run outside Python and "
                           "cannot be captured. Explain the eager (unscripted, untraced) model instead.")
        if hasattr(module, "_orig_mod") and type(module).__name__ == "OptimizedModule":
            raise XaiError(f"{who}: {where} is compiled with torch.compile: its attention calls cannot be "
                           "captured. Explain the eager module instead (compiled._orig_mod).")
        if isinstance(module, nn.DataParallel):
            raise XaiError(f"{who}: {where} is nn.DataParallel, whose replicas run in other threads. "
                           "Explain model.module instead.")


class AttentionMaps:
    """What ``with xt.capture_attention(model) as att:`` gives: the attention of every forward
    run inside the block, in call order.

    Attributes:
        calls: the :class:`AttentionCall` s (probabilities, kind, module name).
        maps: the probabilities alone, ``(B, heads, T, S)`` each, in the autograd graph when the
            forward ran with gradients.
        skipped: attention calls seen but not recomputed (see :class:`AttentionMode`).
    """

    def __init__(self, mode: AttentionMode) -> None:
        self._mode = mode

    @property
    def calls(self) -> list[AttentionCall]:
        return list(self._mode.calls)

    @property
    def maps(self) -> list[torch.Tensor]:
        return [c.probs for c in self._mode.calls]

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self._mode.skipped)

    def clear(self) -> None:
        """Forget the calls recorded so far (before another forward in the same block)."""
        self._mode.calls.clear()

    def __len__(self) -> int:
        return len(self._mode.calls)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{c.kind}{tuple(c.probs.shape)}" for c in self._mode.calls)
        return f"AttentionMaps([{shapes}])"


@contextlib.contextmanager
def capture_attention(model: Any, *, softmax: bool = True) -> Iterator[AttentionMaps]:
    """Record the attention probabilities of the forwards run inside the block (this thread).

    Every ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` call is recomputed
    explicitly (same outputs to float rounding) so its probabilities are tensors in the autograd
    graph; explicit softmax attention inside attention modules is recorded too (``softmax=False``
    turns that off). See :mod:`xai_torch.attention.capture` for what is caught. Outside the block
    the model runs as before (fused kernels included); no hook stays.

    Args:
        model: the ``nn.Module`` (its module names label the calls) or a callable.
        softmax: record explicit softmax attention too.

    Returns:
        an :class:`AttentionMaps`: ``att.maps`` (``(B, heads, T, S)`` each), ``att.calls``.

    Raises:
        XaiError: for a TorchScript, compiled or ``nn.DataParallel`` model.

    Example:
        >>> with xt.capture_attention(vit) as att:
        ...     logits = vit(x)
        >>> len(att.maps), att.maps[0].shape        # vit_b_16, 224 px
        (12, torch.Size([8, 12, 197, 197]))
        >>> g = torch.autograd.grad(logits[:, 3].sum(), att.maps)
    """
    check_attention_interceptable(model, "capture_attention")
    with HookSession() as session:
        stack = module_stack(session, model) if isinstance(model, nn.Module) else None
        mode = AttentionMode(softmax=softmax, stack=stack)
        with mode:
            yield AttentionMaps(mode)
