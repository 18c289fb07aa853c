"""The CAM family on hooks: CAM, Grad-CAM, Grad-CAM++, HiResCAM, XGrad-CAM, LayerCAM, Score-CAM,
EigenCAM, EigenGradCAM, Ablation-CAM, FullGrad (Guided Grad-CAM lives next to guided
backpropagation, in :mod:`xai_torch.backprop`).

Every variant shares :class:`~xai_torch.cam.base.LayerCAMBase`: one forward pass with a forward
hook on each target layer (the hook keeps the layer output and hands the rest of the network a
copy, so later in-place ops cannot change what was captured), then one ``torch.autograd.grad``
to the captured activations (no backward below the layer). A variant is its channel-weight
function or its map function.

Outputs are raw maps after the ReLU, upsampled bilinearly (``align_corners=False``) to the
input size: ``(B, 1, H, W)``, or ``(B, 1, h, w)`` with ``upsample=False``. No
normalisation: that is :mod:`xai_torch.viz`'s job. Several layers are fused as
pytorch-grad-cam does (each map ReLU'd and min-max normalised per image at its layer's
resolution, then upsampled, averaged and min-max normalised again), which loses the raw scale;
a map whose range is rounding noise (e.g. a 1 x 1 layer map) scales to zeros.

Attached mode: inside ``with cam:`` the hooks stay on the layers, and
``cam.from_output(model(x), target)`` explains your own forward without a second one (see
:meth:`~xai_torch.cam.base.LayerCAMBase.from_output`).

Common arguments (besides :mod:`xai_torch.explainer`'s):

Args:
    layer: a dotted name (``"layer4"``, ``"features.denseblock4"``), a module of the model, or
        a list of them.
    upsample: return maps at the input resolution (default) or at the layer's.
    call: which call of the layer to use when it runs more than once per forward (0-based);
        by default such a layer raises, naming the count.
    reshape: callable from the layer output to ``(B, C, h, w)`` for token layers; see
        :func:`~xai_torch.layers.vit_reshape` and :func:`~xai_torch.layers.swin_reshape`.
    relu: ReLU each layer map (default); ``relu=False``: signed maps (Captum's default).
    interpolation: ``"bilinear"`` (default, pytorch-grad-cam's) or ``"nearest"`` (Captum's).
    layer_input: explain the layer's input (Captum's ``attribute_to_layer_input=True``).
    output_index: for a layer returning a tuple, which member (default: its first tensor).
    unreachable: ``"raise"`` (default) or ``"zero"``: a layer the target does not depend on
        gets a zero map and a warning. See :mod:`xai_torch.cam.options`.
    eigen_smooth: each layer's map is the first principal component of its weighted
        activations instead of their sum (pytorch-grad-cam's ``eigen_smooth``).
    aug_smooth: the mean of the min-max scaled maps of six augmented inputs (flip x scale 0.9,
        1, 1.1; pytorch-grad-cam's ``aug_smooth``). See :mod:`xai_torch.cam.smooth`.
"""
from __future__ import annotations

from typing import Any

from ..layers import swin_reshape, tokens_to_grid, vit_reshape
from .ablation import AblationCAM
from .base import CAMExplanation, LayerCAMBase
from .cam import CAM
from .eigen import EigenCAM, EigenGradCAM
from .fullgrad import FullGrad
from .gradcam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from .scorecam import ScoreCAM


def __getattr__(name: str) -> Any:
    # GuidedGradCAM moved to xai_torch.backprop (which imports this package); still reachable here
    if name == "GuidedGradCAM":
        from ..backprop import GuidedGradCAM

        return GuidedGradCAM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AblationCAM", "CAM", "CAMExplanation", "EigenCAM", "EigenGradCAM", "FullGrad", "GradCAM", "GradCAMPlusPlus",
    "GuidedGradCAM", "HiResCAM", "LayerCAM",
    "LayerCAMBase", "ScoreCAM", "XGradCAM", "swin_reshape", "tokens_to_grid", "vit_reshape",
]
