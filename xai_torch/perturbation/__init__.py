"""Perturbation methods: :class:`Occlusion` and :class:`RISE`.

Both only run the model forward (no gradients), on perturbed copies of the images built chunk
by chunk: at most ``batch_size`` perturbed images exist at a time, so peak memory depends on
``batch_size`` and never on the number of windows or masks. With ``(B, K)`` targets, the K
target scores of a perturbed image come from one forward.
"""
from .base import PerturbationExplainer, PerturbationExplanation
from .occlusion import Occlusion, OcclusionExplanation
from .rise import RISE, draw_rise_grids, render_rise_masks, rise_masks

__all__ = ["Occlusion", "OcclusionExplanation", "PerturbationExplainer", "PerturbationExplanation", "RISE",
           "draw_rise_grids", "render_rise_masks", "rise_masks"]
