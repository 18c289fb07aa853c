"""The CAM engine's per-explainer options: which tensor of a layer is explained (its output or
input, one member of a tuple, one call of a reused layer), how maps are resized, and what a
layer the target does not reach gives.

Args (constructor keywords of every CAM, see :mod:`xai_torch.cam`):
    relu: apply the ReLU to each layer map (default). ``relu=False`` gives signed maps
        (Captum's ``LayerGradCam`` default, ``relu_attributions=False``).
    interpolation: ``"bilinear"`` (default; OpenCV's ``INTER_LINEAR``, pytorch-grad-cam's) or
        ``"nearest"`` (Captum's ``LayerAttribution.interpolate`` default).
    layer_input: explain the layer's first positional input instead of its output (Captum's
        ``attribute_to_layer_input=True``).
    output_index: for a layer that returns (or, with ``layer_input``, takes) a tuple or list,
        which member to explain; by default the first tensor member.
    unreachable: ``"raise"`` (default) refuses a layer that the target score does not depend
        on; ``"zero"`` gives that layer a zero map (gradient-free variants still compute theirs)
        and warns.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..errors import XaiError, XaiWarning, check_choice, describe
from ..hooks import LayerTap
from ..imageops import upsample_to

INTERPOLATIONS = ("bilinear", "nearest")
UNREACHABLE = ("raise", "zero")


class CAMOptions:
    """The validated options (see the module's docstring)."""

    def __init__(self, *, relu: bool = True, interpolation: str = "bilinear", layer_input: bool = False,
                 output_index: Optional[int] = None, unreachable: str = "raise") -> None:
        for name, value in (("relu", relu), ("layer_input", layer_input)):
            if not isinstance(value, bool):
                raise XaiError(f"{name} must be True or False; got {describe(value)}.")
        self.relu, self.layer_input = relu, layer_input
        self.interpolation = check_choice(interpolation, "interpolation", INTERPOLATIONS)
        if output_index is not None and (isinstance(output_index, bool) or not isinstance(output_index, int)):
            raise XaiError(f"output_index must be None (the first tensor) or an int; got {describe(output_index)}.")
        self.output_index = output_index
        self.unreachable = check_choice(unreachable, "unreachable", UNREACHABLE)

    def config(self) -> dict[str, Any]:
        """The options that differ from the defaults (for reports and ``repr``)."""
        now = {"relu": self.relu, "interpolation": self.interpolation, "layer_input": self.layer_input,
               "output_index": self.output_index, "unreachable": self.unreachable}
        default = {"relu": True, "interpolation": "bilinear", "layer_input": False, "output_index": None,
                   "unreachable": "raise"}
        return {k: v for k, v in now.items() if v != default[k]}

    def resize(self, maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """``(N, 1, h, w)`` maps resized to ``size`` with the chosen interpolation."""
        target = (int(size[0]), int(size[1]))
        if self.interpolation == "bilinear" or tuple(maps.shape[-2:]) == target:
            return upsample_to(maps, target)
        return F.interpolate(maps, size=target, mode="nearest")

    def rectify(self, m: torch.Tensor) -> torch.Tensor:
        return torch.relu(m) if self.relu else m

    def member(self, name: str, out: Any) -> Any:
        """The explained member of a tuple / list output (a tensor passes through)."""
        if not isinstance(out, (tuple, list)):
            return out
        what = "input" if self.layer_input else "output"
        if self.output_index is not None:
            if not -len(out) <= self.output_index < len(out):
                raise XaiError(f"output_index={self.output_index} but layer {name!r}'s {what} has {len(out)} members.")
            return out[self.output_index]
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
        raise XaiError(f"layer {name!r}'s {what} is a {describe(out)} with no tensor member; choose another layer.")

    def fill_unreachable(self, cam: str, names: Sequence[str], grads: Sequence[Optional[torch.Tensor]],
                         acts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Gradients with each missing one (a layer the score does not depend on) raised or zeroed."""
        filled = []
        for name, g, a in zip(names, grads, acts):
            if g is None:
                if self.unreachable == "raise":
                    raise XaiError(f"the target score does not depend on layer {name!r}; choose a layer it "
                                   "depends on (or unreachable='zero' for a zero map with a warning).")
                warnings.warn(f"{cam}: the target score does not depend on layer {name!r}; its map is zero.",
                              XaiWarning, stacklevel=6)
                g = torch.zeros_like(a)
            filled.append(g)
        return filled


def take(tap: LayerTap, call: Optional[int], options: Optional[CAMOptions] = None) -> list[torch.Tensor]:
    """Each layer's output (or input) in the tap's last forward (call ``call`` of a reused layer).

    Without ``options`` (the other layer methods) a tuple output is refused; with them, its
    ``output_index`` member (or first tensor) is taken."""
    what = "input" if options is not None and options.layer_input else "output"
    taken = []
    for (name, _), outs in zip(tap.layers, tap.outputs):
        if not outs:
            raise XaiError(
                f"layer {name!r} was not called during the forward pass; choose a layer on the "
                "path from the input to the output."
            )
        if call is None and len(outs) > 1:
            raise XaiError(
                f"layer {name!r} runs {len(outs)} times per forward pass (a reused module); pass "
                f"call=0..{len(outs) - 1} to say which call to explain, or choose another layer."
            )
        index = 0 if call is None else call
        if not -len(outs) <= index < len(outs):
            raise XaiError(f"call={call} but layer {name!r} runs {len(outs)} times per forward pass.")
        out = outs[index] if options is None else options.member(name, outs[index])  # None: tensors only
        if not isinstance(out, torch.Tensor):
            verb = "returns" if what == "output" else "takes"
            raise XaiError(
                f"layer {name!r} {verb} a {describe(out)}, not a tensor; choose a layer whose {what} "
                "is a feature map or tokens."
            )
        taken.append(out)
    return taken
