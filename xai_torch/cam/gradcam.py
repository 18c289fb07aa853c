"""The gradient-weighted CAMs: each variant is its channel-weight or map function."""
from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import torch
from torch import nn

from ..errors import XaiError, XaiWarning, describe
from .base import LayerCAMBase


class GradCAM(LayerCAMBase):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(dS/dA_k) A_k)``.

    Equals Captum's ``LayerGradCam(relu_attributions=True)`` upsampled bilinearly, and
    pytorch-grad-cam after its min-max scaling.

    Example:
        >>> with xt.GradCAM(model, layer="layer4") as cam:
        ...     maps = cam(x, target=[3, 7])          # (2, 1, H, W), raw, >= 0
        ...     out = model(x)                         # or: your own forward, then
        ...     maps = cam.from_output(out, [3, 7])    # the same maps, no second forward
    """

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return grads.mean((2, 3))


class GradCAMPlusPlus(LayerCAMBase):
    """Grad-CAM++ (Chattopadhyay et al. 2018, Eq. 19): with ``g = dS/dA``,
    ``alpha = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (0 where g or the denominator is 0),
    ``w_k = sum_ij alpha ReLU(g)``, map ``ReLU(sum_k w_k A_k)``.

    Args:
        alpha_norm: the authors' TensorFlow code renormalises alpha per channel
            (``alpha /= sum_ij alpha``); neither the paper nor the libraries do. Off by default.
        alpha_eps: None (default): the paper's alpha. A number: pytorch-grad-cam's form,
            ``alpha = g^2 / (2 g^2 + sum_ab A g^3 + alpha_eps)`` (0 where g is 0); ``1e-6`` is the
            library's, and gives its maps exactly. Where gradients are small (~1e-3, common in
            late layers of trained nets) the epsilon is not negligible against ``2 g^2``: it
            shrinks alpha, moving channel weights by up to ~9 % on EfficientNet-Lite0's ``_blocks.15``.

    Example:
        >>> maps = xt.GradCAMPlusPlus(model, layer="layer4", alpha_eps=1e-6)(x)   # = pytorch-grad-cam
    """

    def __init__(self, model: nn.Module, layer: Any, *, alpha_norm: bool = False,
                 alpha_eps: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        self.alpha_norm = bool(alpha_norm)
        if alpha_eps is not None and (isinstance(alpha_eps, bool) or not isinstance(alpha_eps, (int, float))
                                      or not 0 <= float(alpha_eps) < math.inf):
            raise XaiError(f"alpha_eps must be None (the paper's alpha) or a finite number >= 0 (1e-6 is "
                           f"pytorch-grad-cam's); got {describe(alpha_eps)}.")
        self.alpha_eps = None if alpha_eps is None else float(alpha_eps)

    def _config(self) -> dict[str, Any]:
        extra = {} if self.alpha_eps is None else {"alpha_eps": self.alpha_eps}
        return {**super()._config(), "alpha_norm": self.alpha_norm, **extra}

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.pow(2)
        denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * grads.pow(3)
        if self.alpha_eps is None:
            ok = (grads != 0) & (denom > 0)
        else:  # the library's form: no sign check on the denominator
            denom = denom + self.alpha_eps
            ok = (grads != 0) & (denom != 0)
        alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(g2))
        if self.alpha_norm:
            total = alpha.sum((2, 3), keepdim=True)
            alpha = alpha / torch.where(total != 0, total, torch.ones_like(total))
        return (alpha * torch.relu(grads)).sum((2, 3))


class HiResCAM(LayerCAMBase):
    """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k g_k * A_k)`` element-wise; equals Grad-CAM
    whenever the gradient is spatially constant (a GAP -> linear head)."""

    def layer_map(self, acts: torch.Tensor,
                  grads: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        assert grads is not None
        return self.combine(grads * acts), None


class XGradCAM(LayerCAMBase):
    """XGrad-CAM (Fu et al. 2020): weights ``sum_ij g A / (sum_ab A + 1e-7)``.

    Layers with signed activations (BatchNorm outputs, tokens) can have ``sum A ~ 0``: a
    warning says so.
    """

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        total = acts.sum((2, 3))
        if bool((total.abs() < 1e-6).any()) and bool((acts < 0).any()):
            warnings.warn("XGradCAM: some channels of a signed layer sum to ~0, which makes their weights "
                          "explode; a layer after a ReLU is safer.", XaiWarning, stacklevel=5)
        return (grads * acts).sum((2, 3)) / (total + 1e-7)


class LayerCAM(LayerCAMBase):
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(g_k) * A_k)`` element-wise."""

    def layer_map(self, acts: torch.Tensor,
                  grads: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        assert grads is not None
        return self.combine(torch.relu(grads) * acts), None
