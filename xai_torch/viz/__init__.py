"""Pictures of attributions. Explainers return raw values; normalising happens only here.

Normalisations (:mod:`~xai_torch.viz.scaling`, all return float32 ``(B, H, W)``):

* :func:`grayscale`: PAIR saliency's ``Σ_c |a|`` scaled by its min and 99th percentile, in
  [0, 1]; ``method="captum"`` uses Captum's outlier normalisation instead.
* :func:`diverging`: ``Σ_c a / p99(|Σ_c a|)`` clipped to [-1, 1]. PAIR's diverging form
  ``(v + s) / 2s`` with ``s = |p99(v)|`` is centred on 0.5 and collapses for mostly negative
  maps (ALGORITHMS.md §0); we keep 0 at 0 and the sign. ``method="captum"`` as above.
* :func:`captum_scale`: Captum's ``visualize_image_attr`` normalisation (a mass quantile:
  the value where the cumulative sum of the sorted ``|v|`` reaches ``100 - outlier_perc`` %).
* :func:`minmax` (:mod:`xai_torch.imageops`) / :func:`scaled`: per-map min-max scaling (CAMs,
  as pytorch-grad-cam).

Pictures (all return uint8 RGB ``(H, W, 3)``):

* :func:`colorize` / :func:`heatmap_overlay` (:mod:`~xai_torch.viz.colors`): an OpenCV colour
  map (by name or number), alone or blended onto the photo with ``alpha``.
* :func:`signed_colorize` / :func:`diverging_overlay`: signed maps, blue-white-red alone,
  green / red (or any two colours) over a grey photo.
* :func:`superpixel_overlay` (:mod:`~xai_torch.viz.regions`): LIME's figure: positive
  superpixels green, negative red, boundaries drawn. :func:`top_fraction_overlay` /
  :func:`top_fraction_mask`: XRAI's "top 30 %".
* :func:`labelled_grid` (images x methods with captions) and :func:`save_png`
  (:mod:`~xai_torch.viz.grids`).

Plots (:mod:`~xai_torch.viz.plots`; matplotlib, an optional extra: ``pip install
xai_torch[plots]``, imported on first use): ``plot_path_curve``, ``plot_causal_curves``,
``plot_randomization``, ``randomization_table``.

Inputs are tensors or arrays, any float dtype (float16 / bfloat16 included), on any device.
Maps are ``(B, C, H, W)``, ``(C, H, W)`` or ``(H, W)``; NumPy arrays may also be channels-last
``(H, W, C)`` / ``(B, H, W, C)`` (see :func:`as_maps`). Images are uint8 or float in [0, 1],
RGB ``(H, W, 3)``, grey ``(H, W)``, or a channels-first ``(3, H, W)`` / ``(1, 3, H, W)`` tensor
(see :func:`as_image`).
"""
from ..imageops import minmax
from . import plots
from .colors import colorize, colormap_id, diverging_overlay, heatmap_overlay, signed_colorize
from .grids import labelled_grid, save_png
from .inputs import ArrayLike, Color, as_image, as_maps
from .plots import plot_causal_curves, plot_path_curve, plot_randomization, randomization_table
from .regions import superpixel_overlay, top_fraction_mask, top_fraction_overlay
from .scaling import METHODS, SIGNS, captum_scale, diverging, grayscale, scaled

#: the matplotlib-backed functions of :mod:`xai_torch.viz.plots` (matplotlib imported on first use)
PLOTS = ("plot_path_curve", "plot_causal_curves", "plot_randomization", "randomization_table")

__all__ = [
    "ArrayLike", "Color", "METHODS", "PLOTS", "SIGNS",
    "as_image", "as_maps",
    "captum_scale", "diverging", "grayscale", "minmax", "scaled",
    "colorize", "colormap_id", "diverging_overlay", "heatmap_overlay", "signed_colorize",
    "superpixel_overlay", "top_fraction_mask", "top_fraction_overlay",
    "labelled_grid", "save_png",
    "plots", "plot_causal_curves", "plot_path_curve", "plot_randomization", "randomization_table",
]
