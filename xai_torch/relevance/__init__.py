"""Relevance propagation: LRP rules and composites, DeepLIFT and DeepLIFT-SHAP, each rule applied
per call of the operation (modules, reused modules, functional calls, residual additions)."""
from __future__ import annotations

from .deeplift import DeepLift, DeepLiftExplanation, DeepLiftShap
from .lrp import LRP, LRPExplanation
from .lrp_rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, WSquare, ZBox, ZPlus

__all__: list[str] = []
__all__ += ["DeepLift", "DeepLiftExplanation", "DeepLiftShap"]
__all__ += ["LRP", "LRPExplanation", "AlphaBeta", "Epsilon", "Flat", "Gamma", "Rule", "WSquare", "ZBox", "ZPlus"]
