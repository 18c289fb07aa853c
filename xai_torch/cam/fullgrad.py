"""FullGrad: input-gradient and bias-gradient maps of every convolution and batch norm, summed."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..errors import XaiError
from ..imageops import minmax, upsample_to
from ..targets import Target
from .base import CAMState, ChunkMaps, LayerCAMBase


def _bias(module: nn.Module) -> torch.Tensor:
    """A layer's effective bias: a convolution's own, a batch norm's ``b - mu w / sqrt(var + eps)``."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
        assert module.running_var is not None and module.weight is not None and module.bias is not None
        scale = module.weight / torch.sqrt(module.running_var + module.eps)
        return (module.bias - module.running_mean * scale).detach()
    assert isinstance(module.bias, torch.Tensor)
    return module.bias.detach()


def _channel_sum(t: torch.Tensor) -> torch.Tensor:
    """``(n, C, h, w)`` -> ``(n, 1, h, w)``: each channel min-max scaled (1e-7), then summed."""
    return minmax(t, eps=1e-7).sum(1, keepdim=True)


class FullGrad(LayerCAMBase):
    """FullGrad (Srinivas & Fleuret 2019), as pytorch-grad-cam computes it: with ``g`` the
    gradient of the target score,

    ``map = minmax( sum_c s(|x g_x|_c) + sum_layers sum_c up(s(|b_c g_c|)) )``

    over every ``Conv2d`` and ``BatchNorm2d`` with a bias (a batch norm's effective bias
    ``b - mu w / sqrt(var + eps)``), ``s`` the per-channel min-max scaling (``+1e-7``), ``up``
    the bilinear resize to the input. One forward, one backward. Output in [0, 1], ``(B, 1, H,
    W)``; ``layer_maps`` holds each layer's ``sum_c s(|b_c g_c|)`` at its resolution.

    Differences from pytorch-grad-cam: subclasses of ``Conv2d`` / ``BatchNorm2d`` count too (it
    matches the exact types), and the gradient at a layer is taken before an in-place ReLU that
    follows it (its tensor hook can see the gradient after it). ``eigen_smooth`` is refused.

    Args:
        layer: ignored when None (default): all such layers are used; else the layers to use.

    Example:
        >>> maps = xt.FullGrad(model)(x, target=[3, 7])     # (2, 1, H, W) in [0, 1]
    """

    def __init__(self, model: nn.Module, layer: Any = None, **kwargs: Any) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise XaiError("FullGrad needs hooks on the model's convolutions and batch norms, which a TorchScript "
                           "model does not run; explain the eager model (before torch.jit.script / trace).")
        if layer is None and isinstance(model, nn.Module):
            layer = [n for n, m in model.named_modules()
                     if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)) and m.bias is not None]
            if not layer:
                raise XaiError("FullGrad needs Conv2d / BatchNorm2d layers with a bias; this model has none.")
        super().__init__(model, layer, **kwargs)
        if self.eigen_smooth:
            raise XaiError("FullGrad sums bias-gradient maps over channels and layers; eigen_smooth does not apply.")
        if self.options.layer_input:
            raise XaiError("FullGrad uses the layers' outputs (their biases): layer_input=True does not apply.")
        for name, m in self.layers:
            if not isinstance(getattr(m, "bias", None), torch.Tensor):
                raise XaiError(f"FullGrad: layer {name!r} has no bias tensor.")

    def _maps(self, out: Any, acts: list[torch.Tensor], rows: torch.Tensor, target: Target,
              x: Optional[torch.Tensor], state: CAMState) -> ChunkMaps:
        if x is None or not x.requires_grad:
            raise XaiError("FullGrad needs the input gradient: it has no attached mode (call it on the images).")
        scores, classes = target.scores(out, rows)
        if not scores.requires_grad:
            raise XaiError("FullGrad: the target score has no gradient (it is detached).")
        self._check_graph(acts, state)
        found = torch.autograd.grad(scores.sum(), [x, *acts], allow_unused=True)
        gx = found[0] if found[0] is not None else torch.zeros_like(x)
        grads = self.options.fill_unreachable(type(self).__name__, [n for n, _ in self.layers], found[1:], acts)
        maps = []
        for (_, module), g in zip(self.layers, grads):
            b = _bias(module).to(g.dtype)
            maps.append(_channel_sum((b[None, :, None, None] * self._grid(g.detach())).abs()))
        size = x.shape[-2:]
        total = _channel_sum((x.detach() * gx.detach()).abs())
        for m in maps:
            total = total + upsample_to(m, size)
        pixels = minmax(total, eps=1e-7)
        return ChunkMaps(maps, [None] * len(maps), scores.detach(), classes, pixels)

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config["layer"] = f"{len(self.layers)} layers"
        return config
