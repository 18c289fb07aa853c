"""Transformer explanations: attention captured per call (fused or not), attention rollout,
gradient-weighted attention relevance (Chefer et al.) and LeGrad."""
from __future__ import annotations

from .base import AttentionExplainer, AttentionExplanation
from .capture import AttentionCall, AttentionMaps, AttentionMode, capture_attention
from .chefer import TransformerAttribution, chefer_relevance
from .legrad import LeGrad
from .rollout import AttentionGradRollout, AttentionRollout, discard_lowest, fuse_heads, rollout
from .tokens import find_blocks, patch_layout

__all__ = ["AttentionCall", "AttentionExplainer", "AttentionExplanation", "AttentionGradRollout", "AttentionMaps",
           "AttentionMode", "AttentionRollout", "LeGrad", "TransformerAttribution", "capture_attention",
           "chefer_relevance", "discard_lowest", "find_blocks", "fuse_heads", "patch_layout", "rollout"]
