"""The forward-only CAMs' shared step, and CAM with the classifier's weights."""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from torch import nn

from ..errors import XaiError
from ..layers import find_layers
from ..targets import Target
from .base import CAMState, ChunkMaps, LayerCAMBase
from .options import take


class ForwardOnlyCAM(LayerCAMBase):
    """Variants that need the activations and the clean prediction only (no backward): a
    variant is its :meth:`_weights`."""

    needs_gradient: ClassVar[bool] = False

    def _chunk(self, xc: torch.Tensor, rows: torch.Tensor, target: Target, state: CAMState) -> ChunkMaps:
        out = state.run.forward(xc)
        return self._maps(out, take(state.tap, self.call, self.options), rows, target, xc, state)

    def _maps(self, out: Any, acts: list[torch.Tensor], rows: torch.Tensor, target: Target,
              x: Optional[torch.Tensor], state: CAMState) -> ChunkMaps:
        assert x is not None or not self.keeps_input
        with torch.no_grad():
            a = self._grid(acts[0].detach())
            scores, classes = target.scores(out, rows)
            w = self._weights(x, rows, a, target, classes, state)
            m = self.options.rectify(self.combine(w[:, :, None, None] * a))
        return ChunkMaps([m], [w], scores.detach(), classes)

    def _weights(self, x: Optional[torch.Tensor], rows: torch.Tensor, acts: torch.Tensor, target: Target,
                 classes: Optional[torch.Tensor], state: CAMState) -> torch.Tensor:
        """``(n, C)`` channel weights of the samples ``rows`` (images ``x``, activations ``acts``)."""
        raise NotImplementedError


class CAM(ForwardOnlyCAM):
    """Class activation mapping (Zhou et al. 2016): ``ReLU(sum_k W[c, k] A_k)`` with W the
    weights of the linear classifier after global average pooling; one forward, no backward.

    Args:
        fc: the classifier (name or module); by default the model's last ``nn.Linear``. Its
            ``in_features`` must equal the layer's channels.

    Example:
        >>> maps = xt.CAM(resnet, layer="layer4")(x)     # = h * w * GradCAM on GAP -> FC nets
    """

    def __init__(self, model: nn.Module, layer: Any, *, fc: Any = None, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        if len(self.layers) > 1:
            raise XaiError("CAM uses the layer right before global average pooling: give one layer.")
        self.fc: tuple[str, nn.Module]
        if fc is None:
            linears: list[tuple[str, nn.Module]] = [(n, m) for n, m in model.named_modules()
                                                    if isinstance(m, nn.Linear)]
            if not linears:
                raise XaiError("CAM needs a linear classifier after global average pooling; the model has "
                               "no nn.Linear. Pass fc= or use GradCAM.")
            self.fc = linears[-1]
        else:
            self.fc = find_layers(model, fc, "fc")[0]
            if not isinstance(self.fc[1], nn.Linear):
                raise XaiError(f"fc={self.fc[0]!r} is a {type(self.fc[1]).__name__}, not an nn.Linear.")

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "fc": self.fc[0]}

    def _weights(self, x: Optional[torch.Tensor], rows: torch.Tensor, acts: torch.Tensor, target: Target,
                 classes: Optional[torch.Tensor], state: CAMState) -> torch.Tensor:
        if classes is None:
            raise XaiError("CAM explains classes (it reads the classifier's weights); use GradCAM for "
                           "callable targets.")
        weight = self.fc[1].weight
        assert isinstance(weight, torch.Tensor)
        w = weight.detach()
        if w.shape[1] != acts.shape[1]:
            raise XaiError(f"fc {self.fc[0]!r} takes {w.shape[1]} features but the layer has {acts.shape[1]} "
                           "channels; CAM needs the layer right before global average pooling.")
        return w[classes].to(acts.dtype)
