"""Transformer explanations: attention captured per call (fused or not), attention rollout,
gradient-weighted attention relevance (Chefer et al.) and LeGrad."""
from __future__ import annotations

__all__: list[str] = []
