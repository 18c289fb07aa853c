"""Relevance propagation: LRP rules and composites, DeepLIFT and DeepLIFT-SHAP, each rule applied
per call of the operation (modules, reused modules, functional calls, residual additions)."""
from __future__ import annotations

__all__: list[str] = []
