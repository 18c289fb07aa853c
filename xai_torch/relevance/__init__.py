"""Relevance propagation: LRP rules and composites, DeepLIFT and DeepLIFT-SHAP, each rule applied
per call of the operation (modules, reused modules, functional calls, residual additions)."""
from __future__ import annotations

from .deeplift import DeepLift, DeepLiftExplanation, DeepLiftShap

__all__: list[str] = []
__all__ += ["DeepLift", "DeepLiftExplanation", "DeepLiftShap"]
