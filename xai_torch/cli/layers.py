"""``--layer-attribution NAME`` of ``xai-torch explain`` / ``demo``: the chosen gradient methods at one layer.

Each chosen method whose explainer takes ``layer=`` (the records of
:data:`~xai_torch.presets.METHODS` that build ``Gradient``, ``InputXGradient``,
``GuidedBackprop``, ``Deconvnet``, ``IntegratedGradients`` (adaptive too) or ``SmoothGrad`` of
one of them) is run a second time with ``layer=NAME``: attributions shaped like that layer's
output ``(B, C', H', W')``. For each image x method the command writes

* ``<image>_<method>_layer_channels.png``: the attribution per channel (summed over space), one
  bar per channel (:func:`xai_torch.viz.plots.plot_channels`; needs matplotlib, the ``plots``
  extra: without it the chart is left out and the report and stderr say so);
* ``<image>_<method>_layer_map.png``: the spatial map at the layer's resolution (summed over
  channels), blue-white-red scaled by its largest ``|value|``, each layer position drawn as a
  block (nearest-neighbour enlargement to at least 224 px);

and ``summary["layer_attribution"]`` holds the numbers (the per-channel values unrounded).
An unknown layer name is an :class:`~xai_torch.errors.XaiError` naming the closest layers,
raised before anything is computed or written.
"""
from __future__ import annotations

import inspect
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .. import viz
from ..errors import XaiError
from ..files import atomic_write
from ..layers import auto_reshape, find_layer
from ..presets import METHODS, MethodSpec, explainer_classes

__all__ = ["LayerPlan", "layer_methods", "plan_layer", "takes_layer"]

#: what the report and stderr say when the bar charts cannot be drawn
NO_MATPLOTLIB = ("the per-channel bar charts need matplotlib, which is not installed: pip install xai_torch[plots] "
                 "(or pip install matplotlib); the values are in summary.json and the spatial maps are written")


def takes_layer(spec: MethodSpec) -> bool:
    """Whether the method's explainer (the wrapped one for SmoothGrad) attributes to a layer (``layer_input=``)."""
    if spec.layer:  # the CAM family: its layer= is the CAM layer (--layer), and its maps are its pictures
        return False
    if spec.keywords.get("path", "line") != "line":  # IG's colour paths run in pixel space only
        return False
    cls = explainer_classes()[spec.wraps or spec.cls]
    return "layer_input" in inspect.signature(cls.__init__).parameters


def layer_methods(methods: Sequence[str]) -> list[str]:
    """Those of ``methods`` that take ``layer=`` for layer attribution, in order."""
    return [m for m in methods if takes_layer(METHODS[m])]


@dataclass
class LayerPlan:
    """The layer and the methods ``--layer-attribution`` runs, and whether matplotlib is there."""

    layer: str
    methods: list[str]
    matplotlib: bool

    def summary(self) -> dict[str, Any]:
        """The empty ``summary["layer_attribution"]`` entry, filled by :meth:`run`."""
        return {"layer": self.layer, "methods": list(self.methods), "matplotlib": self.matplotlib,
                "note": None if self.matplotlib else NO_MATPLOTLIB, "shape": None, "seconds": {}, "images": {}}

    def run(self, method: str, model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *, stage: Path,
            names: list[str], entry: dict[str, Any], normalize: Any = None, steps: Optional[int] = None,
            demo: bool = False) -> None:
        """Explain ``x`` with ``method`` at the layer and write its charts and maps into ``stage``;
        ``entry`` is ``summary["layer_attribution"]``."""
        spec = METHODS[method]
        classes: dict[str, Any] = dict(explainer_classes())  # the layer explainers take layer=, the base does not
        kw = spec.options(normalize=normalize, steps=steps, demo=demo)
        start = time.perf_counter()
        try:
            if spec.wraps is not None:
                explainer = classes[spec.cls](classes[spec.wraps](model, layer=self.layer), **kw)
            else:
                explainer = classes[spec.cls](model, layer=self.layer, **kw)
            a = explainer(x, target=targets)
        except XaiError as err:
            raise XaiError(f"{method} at --layer-attribution {self.layer!r}: {err}") from None
        if not isinstance(a, torch.Tensor) or a.ndim < 2 or a.shape[0] != len(names):
            raise XaiError(f"{method} at --layer-attribution {self.layer!r} gave {getattr(a, 'shape', a)!r}; "
                           "expected one (C, ...) attribution per image.")
        entry["seconds"][method] = round(time.perf_counter() - start, 3)
        a = a.detach().to("cpu", torch.float64)
        entry["shape"] = list(a.shape[1:])
        grid = _on_grid(model, self.layer, a)  # (B, C, H, W): tokens and channels-last maps laid out
        if a.ndim == 3:  # (B, T, C) tokens: each channel summed over every token, prefix tokens included
            channels = a.sum(1)
        else:
            channels = grid.flatten(2).sum(2) if grid is not None else a.flatten(2).sum(2) if a.ndim > 2 else a
        for i, name in enumerate(names):
            info: dict[str, Any] = {"channels": channels[i].tolist(), "chart": None, "map": None, "map_shape": None}
            order = channels[i].abs().argsort(descending=True, stable=True)[:5].tolist()
            info["top_channels"] = [[int(c), float(channels[i, c])] for c in order]
            if self.matplotlib:
                info["chart"] = f"{name}_{method}_layer_channels.png"
                fig = viz.plots.plot_channels(channels[i], title=f"{name}: {method} at {self.layer}, per channel")
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=100)
                atomic_write(stage / info["chart"], buf.getvalue())
            if grid is not None:  # (B, C, H, W): the map over the layer's positions
                info["map"], info["map_shape"] = f"{name}_{method}_layer_map.png", list(grid.shape[2:])
                viz.save_png(stage / info["map"], layer_map(grid[i].sum(0)))
            entry["images"].setdefault(name, {})[method] = info


def _on_grid(model: torch.nn.Module, layer: str, a: torch.Tensor) -> Optional[torch.Tensor]:
    """Layer attributions as ``(B, C, H, W)`` by the CAM family's automatic reshape
    (:class:`~xai_torch.layers.AutoReshape`: a ViT's tokens less its prefix tokens on the patch
    grid, Swin's channels-last maps permuted), or None when they are no map."""
    if a.ndim not in (3, 4):
        return None
    try:
        return auto_reshape(model, [find_layer(model, layer, "--layer-attribution")])(a)
    except XaiError:
        return None


def layer_map(spatial: torch.Tensor, size: int = 224) -> np.ndarray:
    """uint8 RGB picture of an ``(H', W')`` map: blue-white-red by ``value / max |value|``, each
    position an ``s x s`` block with ``s = ceil(size / max(H', W'))``."""
    m = spatial.detach().to("cpu", torch.float64)
    peak = float(m.abs().max())
    s = -(-size // max(m.shape))
    picture = viz.signed_colorize((m / peak if peak > 0 else m).numpy())
    return np.ascontiguousarray(picture.repeat(s, 0).repeat(s, 1))


def plan_layer(model: torch.nn.Module, layer: Optional[str], methods: Sequence[str]) -> Optional[LayerPlan]:
    """Check ``--layer-attribution`` before any work: the layer exists (else the closest names),
    some chosen method takes ``layer=``; say on stderr when matplotlib is missing. None without a layer."""
    if layer is None:
        return None
    name, _ = find_layer(model, layer, "--layer-attribution")
    chosen = layer_methods(methods)
    if not chosen:
        able = ", ".join(n for n, s in METHODS.items() if takes_layer(s))
        raise XaiError(f"--layer-attribution needs a gradient method that attributes to a layer ({able}); "
                       f"the chosen methods ({', '.join(methods)}) do not.")
    try:
        import matplotlib.figure  # noqa: F401
        plots = True
    except ImportError:
        plots = False
        print(f"xai-torch: note: {NO_MATPLOTLIB}.", file=sys.stderr, flush=True)
    return LayerPlan(name, chosen, plots)
