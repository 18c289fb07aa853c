"""EigenCAM and EigenGradCAM: the first principal component of a layer's (gradient-weighted)
activations."""
from __future__ import annotations

from typing import ClassVar, Optional

import torch

from ..targets import Target
from .base import CAMState, ChunkMaps, LayerCAMBase
from .options import take
from .smooth import first_component


class EigenCAM(LayerCAMBase):
    """EigenCAM (Muhammad & Yeasin 2020): the projection of the layer's activations (pixels as
    samples, channels centred) on their first principal component, ``ReLU``'d. Class-agnostic:
    one forward, no backward; the target only sets the scores reported.

    Equals pytorch-grad-cam's ``EigenCAM`` (its min-max scaling aside); the SVD's sign is
    LAPACK's in both (``torch.linalg.svd``, ``numpy.linalg.svd``), so a map can come out
    negated (then mostly zero after the ReLU) where the two LAPACK builds disagree.

    Example:
        >>> maps = xt.EigenCAM(model, layer="layer4")(x)      # (B, 1, H, W), raw, >= 0
    """

    needs_gradient: ClassVar[bool] = False

    def _chunk(self, xc: torch.Tensor, rows: torch.Tensor, target: Target, state: CAMState) -> ChunkMaps:
        with torch.no_grad():
            out = state.run.forward(xc)
            return self._maps(out, take(state.tap, self.call, self.options), rows, target, xc, state)

    def layer_map(self, acts: torch.Tensor,
                  grads: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return first_component(acts), None


class EigenGradCAM(LayerCAMBase):
    """EigenGradCAM (pytorch-grad-cam): EigenCAM of ``dS/dA * A``, the element-wise product of
    the gradient and the activations, so that the map depends on the target.

    Example:
        >>> maps = xt.EigenGradCAM(model, layer="layer4")(x, target=[3, 7])
    """

    def layer_map(self, acts: torch.Tensor,
                  grads: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        assert grads is not None
        return first_component(grads * acts), None


__all__ = ["EigenCAM", "EigenGradCAM"]
