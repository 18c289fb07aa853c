"""Region pictures: LIME's green / red superpixels with boundaries, XRAI's top fraction."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np
import torch

from ..errors import XaiError, describe
from ..imageops import top_fraction
from .inputs import ArrayLike, Color, _check_alpha, _color, _one_map, as_image

#: superpixel weights: one per label (tensor, array or sequence) or a mapping ``{label: weight}``
Weights = Union[ArrayLike, Sequence[float], Mapping[int, float]]


def _segment_weights(segments: ArrayLike, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    seg = segments.detach().cpu().numpy() if isinstance(segments, torch.Tensor) else np.asarray(segments)
    while seg.ndim > 2 and seg.shape[0] == 1:
        seg = seg[0]
    if seg.ndim != 2 or seg.dtype.kind not in "iu" or seg.size == 0:
        raise XaiError(f"segments must be one image's integer labels (H, W); got {describe(segments)}.")
    if seg.min() < 0:
        raise XaiError(f"segment labels must be >= 0; got a minimum of {seg.min()}.")
    if isinstance(weights, Mapping):  # lime's local_exp pairs or {label: weight}
        w = np.zeros(int(seg.max()) + 1)
        for k, val in weights.items():
            if 0 <= int(k) < len(w):
                w[int(k)] = float(val)
    else:
        try:
            w = torch.as_tensor(weights).detach().to("cpu", torch.float64).numpy()
        except (TypeError, ValueError, RuntimeError):
            w = np.zeros((0, 0))
        w = w.reshape(-1) if w.ndim == 2 and w.shape[0] == 1 else w
    if w.ndim != 1 or len(w) <= seg.max():
        raise XaiError(f"weights need one value per segment label 0..{seg.max()}; got {describe(weights)}. "
                       "For a batched explanation pass res.segments[i] and res.weights[i].")
    return seg.astype(np.int64), w


def superpixel_overlay(image: ArrayLike, segments: ArrayLike, weights: Weights, *, top: Optional[int] = None,
                       threshold: float = 0.0, alpha: float = 0.5, boundaries: Optional[str] = "kept",
                       boundary_color: Color = (255, 255, 0)) -> np.ndarray:
    """LIME's picture (seed figure 4-27): positive superpixels green, negative red, boundaries drawn.

    Superpixels with ``|w| > threshold`` are kept; ``top=k`` keeps only the ``k`` largest
    ``|w|`` of those (ties: the lower label first). A kept superpixel is blended towards pure
    green (``w > 0``) or red (``w < 0``) with weight ``alpha * |w| / max |w_kept|``, so the
    most influential regions get the deepest colour; the rest of the photo is unchanged.
    Boundaries are skimage's ``find_boundaries(mode="outer")`` (``mark_boundaries``' default)
    painted in ``boundary_color``: of the kept superpixels (``"kept"``, as lime's
    ``mark_boundaries(temp, mask)`` but without merging neighbours), of all of them
    (``"all"``), or none (``None``).

    Args:
        image: the photo (see :func:`as_image`).
        segments: ``(H, W)`` integer labels >= 0 (``(1, H, W)`` accepted), e.g.
            ``res.segments[i]`` of :class:`xai_torch.region.LIME`.
        weights: one weight per label (``weights[label]``, extra entries ignored; e.g.
            ``res.weights[i]``) or a mapping ``{label: weight}``.
        top: keep at most this many superpixels (lime's ``num_features``); ``None``: all.
        threshold: keep ``|w| > threshold`` (lime's ``min_weight``).
        alpha: the tint's weight for the strongest superpixel, in [0, 1].
        boundaries: ``"kept"``, ``"all"`` or ``None``.
        boundary_color: RGB of the boundary pixels (default yellow, as ``mark_boundaries``).

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        image ``(H, W, 3)``, segments ``(H, W)``, weights ``(S,)`` with ``S > max label`` -> ``(H, W, 3)``.

    Example:
        >>> res = xt.LIME(model, seed=0).explain(x, image=pixels)
        >>> pic = viz.superpixel_overlay(photo, res.segments[0], res.weights[0], top=10)
    """
    from skimage.segmentation import find_boundaries

    _check_alpha(alpha)
    if boundaries not in ("kept", "all", None):
        raise XaiError(f"boundaries must be one of ['kept', 'all', None]; got {boundaries!r}.")
    if top is not None and (not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 0):
        raise XaiError(f"top must be None or an integer >= 0; got {top!r}.")
    seg, w = _segment_weights(segments, weights)
    image = as_image(image, seg.shape).astype(np.float64)
    labels = np.unique(seg)
    lw = w[labels]
    keep = labels[np.abs(lw) > threshold]
    order = np.argsort(-np.abs(w[keep]), kind="stable")  # labels ascending, so ties keep the lower label
    keep = keep[order[:top] if top is not None else order]
    out = image.copy()
    if len(keep):
        strength = np.zeros(len(w))
        strength[keep] = alpha * np.abs(w[keep]) / max(np.abs(w[keep]).max(), 1e-300)
        s = strength[seg][..., None]
        target = np.where((w[seg] > 0)[..., None], [0.0, 255.0, 0.0], [255.0, 0.0, 0.0])
        out = (1 - s) * image + s * target
    if boundaries is not None:
        lab = seg + 1 if boundaries == "all" else np.where(np.isin(seg, keep), seg + 1, 0)
        edge = find_boundaries(lab, mode="outer", background=0) if lab.any() else np.zeros(seg.shape, bool)  # type: ignore[no-untyped-call]
        out[edge] = _color(boundary_color, "boundary_color")
    pic: np.ndarray = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return pic


def top_fraction_mask(heat: ArrayLike, fraction: float = 0.3) -> np.ndarray:
    """The ``round(fraction * H * W)`` highest pixels of a map (XRAI's "top 30 %"), exactly.

    Ties are broken by a stable order (the earlier pixel in raster order wins), so the count is
    exact even on flat maps; ``np.percentile`` thresholding (the seed's code) is not.

    Args:
        heat: one map ``(H, W)`` (``(1, H, W)`` / ``(1, C, H, W)`` accepted; channels summed).
        fraction: in [0, 1].

    Returns:
        bool ``(H, W)``.

    Shape:
        ``(H, W)`` -> ``(H, W)``.

    Example:
        >>> viz.top_fraction_mask(xrai_map, 0.3).mean()
        0.3
    """
    return top_fraction(torch.from_numpy(_one_map(heat, "map"))[None], fraction, exact=True)[0].numpy()


def top_fraction_overlay(image: ArrayLike, heat: ArrayLike, fraction: float = 0.3, dim: float = 0.3) -> np.ndarray:
    """The photo with every pixel outside the map's top ``fraction`` darkened (XRAI, seed figure 4-18).

    Pixels in :func:`top_fraction_mask` keep their value; the others are multiplied by ``dim``
    (``dim=0`` blacks them out, as the seed's code does).

    Args:
        image: the photo (see :func:`as_image`), the same ``(H, W)`` as ``heat``.
        heat: one map ``(H, W)`` (higher = more salient), e.g. XRAI's attributions.
        fraction: fraction of pixels kept, in [0, 1].
        dim: brightness factor of the other pixels, in [0, 1].

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Shape:
        image ``(H, W, 3)``, heat ``(H, W)`` -> ``(H, W, 3)``.

    Example:
        >>> pic = viz.top_fraction_overlay(photo, xt.XRAI(model)(x)[0], fraction=0.3)
    """
    _check_alpha(dim, "dim")
    mask = top_fraction_mask(heat, fraction)
    image = as_image(image, mask.shape)
    out = np.where(mask[..., None], image.astype(np.float64), image * float(dim))
    return np.round(out).astype(np.uint8)
