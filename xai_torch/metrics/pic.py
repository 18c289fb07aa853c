"""Performance Information Curves (PIC) of the XRAI paper: SIC and AIC.

Kapishnikov et al., "XRAI: Better Attributions Through Regions" (ICCV 2019), as PAIR
``saliency/metrics/pic.py`` computes them (ALGORITHMS.md §7.2).

Start from a "bokeh" image: the photo re-interpolated (Delaunay, linear) from a random 1 % of
its pixels. Reveal the most salient pixels (the top fraction ``t`` of the map, for each
threshold ``t``) and re-interpolate the rest. For each image, plot the model's normalised
score against the normalised information it contains, where information is the byte size of
a lossless WebP encoding:

* x = ``clip((H_t - H_blur) / (H_orig - H_blur), 0, 1)``;
* y = ``clip((p_t - p_blur) / (p_orig - p_blur), 0, 1)``, as a running max (monotone) by default.

SIC scores the softmax probability of the target class; AIC scores 1 when the model's top-1
is the target, else 0. A good attribution reveals the pixels that restore the prediction
with little information: the higher the area under the curve, the better.

PIC works on uint8 photos, because WebP sizes and the interpolation are defined on pixels.
``pic`` takes the model-space ``x`` as every metric does, plus how pixels map to model inputs:
``normalize=(mean, std)`` (for pixels in [0, 1]), ``input_range=(lo, hi)``, or any
``preprocess`` callable. ``image=`` gives the photos when ``x`` cannot be mapped back exactly.
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from ..batching import progress_bar
from ..errors import XaiError, check_choice, check_input, describe
from ..explainer import model_device
from ..targets import ClassTarget, as_target
from ._common import Scorer, check_fraction, coerce_attribution, is_explainer, to_result

#: the thresholds of PAIR's documentation and notebook: fractions of the most salient pixels.
DEFAULT_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)
KINDS = ("sic", "aic", "both")
AGGREGATIONS = ("median", "mean")


# --------------------------------------------------------------------------------------------
# Model-free pieces
def generate_random_mask(height: int, width: int, fraction: float = 0.01, *, batch: Optional[int] = None,
                         seed: Union[None, int, torch.Generator] = None) -> torch.Tensor:
    """Random pixel masks that seed the fully blurred image: exactly ``int(H * W * fraction)``
    pixels are True (as PAIR's ``generate_random_mask``, drawn with torch).

    Args:
        height, width: the image size.
        fraction: the fraction of pixels to keep, in [0, 1].
        batch: ``None`` for one ``(H, W)`` mask, else the number of masks (one per image,
            drawn independently).
        seed: ``None`` (fresh randomness), an int, or a ``torch.Generator`` (advanced).

    Returns:
        A bool tensor on the CPU.

    Shape:
        ``(H, W)``, or ``(batch, H, W)`` when ``batch`` is given.

    Example:
        >>> m = generate_random_mask(224, 224, 0.01, batch=4, seed=0)    # 501 True per mask
    """
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise XaiError(f"{name} must be an integer >= 1; got {describe(v)}.")
    fraction = check_fraction(fraction, "fraction")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise XaiError(f"batch must be None or an integer >= 1; got {describe(batch)}.")
    gen = _generator(seed)
    n, k = int(height) * int(width), int(int(height) * int(width) * fraction)
    masks = torch.zeros(1 if batch is None else int(batch), n, dtype=torch.bool)
    for row in masks:
        row[torch.randperm(n, generator=gen)[:k]] = True
    masks = masks.reshape(-1, int(height), int(width))
    return masks[0] if batch is None else masks


def _generator(seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise XaiError(f"seed must be None, an int or a torch.Generator; got {describe(seed)}.")
    else:
        gen.manual_seed(int(seed))
    return gen


def _as_numpy(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise XaiError(f"{name} must be a numpy array or a torch tensor; got {describe(a)}.")


def _bokeh(img: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The work of :func:`bokeh_image` on checked numpy input (``known`` is a fresh copy)."""
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import Delaunay

    h, w = known.shape
    known[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]] = True
    if known.all():
        return img.copy()
    img3 = img if img.ndim == 3 else img[..., None]
    work = np.result_type(img.dtype, np.float32)  # PAIR's ``img * mask.astype(float32)``
    # One triangulation serves every channel (PAIR re-triangulates per channel: same values).
    tri = Delaunay(np.argwhere(known).astype(np.float64))
    values = LinearNDInterpolator(tri, img3[known].astype(np.float64), fill_value=np.nan)(
        np.argwhere(~known).astype(np.float64))
    mean = img3.mean(axis=(0, 1))
    values = np.where(np.isnan(values), mean, values)  # never used: the corners span the frame
    out = img3.astype(work)
    out[~known] = values.astype(work)
    if np.issubdtype(img.dtype, np.integer):
        out = np.round(out)
    out = out.astype(img.dtype)
    return out if img.ndim == 3 else out[..., 0]


def bokeh_image(image, mask):
    """The image re-interpolated from the pixels where ``mask`` is True (PAIR's
    ``create_blurred_image``, method "linear").

    The four corners always count as known. If every pixel is known the image comes back
    unchanged; otherwise each channel is interpolated linearly on the Delaunay triangulation of
    the known pixels (scipy ``griddata`` semantics), the values pass through float32 and are
    rounded (half to even) for integer images.

    Args:
        image: a numpy array or tensor ``(H, W, C)`` or ``(H, W)``, any real dtype.
        mask: ``(H, W)`` bool (or 0/1) array or tensor: True where the pixel is known.

    Returns:
        The interpolated image, same shape, dtype and container (tensors on their device).

    Shape:
        ``(H, W, C)`` or ``(H, W)`` as given.

    Example:
        >>> blurred = bokeh_image(photo, generate_random_mask(*photo.shape[:2], 0.01, seed=0))
    """
    img = _as_numpy(image, "image")
    m = _as_numpy(mask, "mask")
    if img.ndim not in (2, 3) or img.dtype.kind not in "uif" or min(img.shape[:2]) < 1:
        raise XaiError(f"image must be a real (H, W, C) or (H, W) array; got {describe(image)}.")
    if m.shape != img.shape[:2] or not (m.dtype == bool or bool(np.isin(m, (0, 1)).all())):
        raise XaiError(f"mask must be a bool (H, W) = {img.shape[:2]} array; got {describe(mask)}.")
    out = _bokeh(img, m.astype(bool, copy=True))
    return torch.from_numpy(out).to(image.device) if isinstance(image, torch.Tensor) else out


def _webp(img: np.ndarray) -> int:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="webp", lossless=True, quality=100)
    return buf.tell()


def webp_entropy(image) -> int:
    """PIC's information estimate: the byte size of the image encoded as lossless WebP
    (quality 100, Pillow), as PAIR's ``estimate_image_entropy``.

    Args:
        image: uint8 array or tensor ``(H, W, 3)``, ``(H, W, 1)`` or ``(H, W)``.

    Returns:
        The size in bytes (int).

    Example:
        >>> webp_entropy(xt.zoo.image("chelsea"))
    """
    img = _as_numpy(image, "image")
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise XaiError(f"image must be uint8 (H, W, 3), (H, W, 1) or (H, W); got {describe(image)}.")
    _check_webp()
    return _webp(np.ascontiguousarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img))


def _check_webp() -> None:
    from PIL import features

    if not features.check("webp"):
        raise XaiError("PIC measures information as WebP sizes, but this Pillow has no WebP support; "
                       "install a Pillow wheel built with libwebp (pip install --force-reinstall pillow).")


def _as_float64(v, name: str) -> torch.Tensor:
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(np.ascontiguousarray(v))
    t = torch.as_tensor(v).detach()
    if t.is_complex() or t.dtype == torch.bool:
        raise XaiError(f"{name} must hold real numbers; got {describe(v)}.")
    return t.to(torch.float64)


def _check_num_points(num_points) -> int:
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise XaiError(f"num_points must be an integer >= 1; got {describe(num_points)}.")
    return int(num_points)


def interpolate_curve(x_points, y_points, num_points: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the piecewise-linear curve through ``(x_points, y_points)`` at ``x = k / num_points``,
    ``k = 0 .. num_points``, exactly as scipy's ``interp1d`` (linear) does in PAIR.

    Points are stable-sorted by x (ties keep their given order), then ``np.interp``'s rule
    applies: where several points share an x, the segment to their left ends at the **first**
    one's y, and the value at that x and the segment to its right start from the **last** one's
    y. Outside the points' x range the end values extend (PAIR's points always span [0, 1]).

    Args:
        x_points, y_points: finite real values, tensors or arrays of the same shape.
        num_points: samples in [0, 1); the point x = 1 is added to them.

    Returns:
        ``(curve_x, curve_y)``: float64 tensors on ``x_points``' device (CPU for arrays).

    Shape:
        ``x_points``, ``y_points``: ``(P,)`` or ``(B, P)``. ``curve_x``: ``(num_points + 1,)``;
        ``curve_y``: ``(num_points + 1,)`` or ``(B, num_points + 1)``.

    Example:
        >>> interpolate_curve([0.5, 0.5, 0.0, 1.0], [0.2, 0.6, 0.0, 1.0], 4)[1]
        tensor([0.0000, 0.1000, 0.6000, 0.8000, 1.0000], dtype=torch.float64)
    """
    num_points = _check_num_points(num_points)
    xp, yp = _as_float64(x_points, "x_points"), _as_float64(y_points, "y_points")
    if xp.shape != yp.shape or xp.ndim not in (1, 2) or xp.shape[-1] < 1:
        raise XaiError(f"x_points and y_points must have the same shape (P,) or (B, P) with P >= 1; got "
                       f"{tuple(xp.shape)} and {tuple(yp.shape)}.")
    if not bool(torch.isfinite(xp).all() and torch.isfinite(yp).all()):
        raise XaiError("x_points and y_points must be finite.")
    yp = yp.to(xp.device)
    xs, order = torch.sort(xp, dim=-1, stable=True)
    ys = yp.gather(-1, order)
    # np.linspace(0, 1, num_points, endpoint=False) and the appended 1.0, bit for bit.
    grid = torch.arange(num_points + 1, dtype=torch.float64, device=xp.device) * (1.0 / num_points)
    grid[-1] = 1.0
    q = grid.expand(*xs.shape[:-1], num_points + 1).contiguous()
    p = xs.shape[-1]
    j = torch.searchsorted(xs.contiguous(), q, right=True) - 1  # last point with x <= q (-1: left of all)
    if p == 1:
        return grid, ys.expand_as(q).clone()
    jc = j.clamp(0, p - 2)
    x0, x1, y0, y1 = xs.gather(-1, jc), xs.gather(-1, jc + 1), ys.gather(-1, jc), ys.gather(-1, jc + 1)
    slope = (y1 - y0) / (x1 - x0)  # np.interp's order of operations, for bit-identical values
    value = slope * (q - x0) + y0
    value = torch.where(q == x0, y0, value)
    value = torch.where(j >= p - 1, ys[..., -1:].expand_as(q), value)
    value = torch.where(j < 0, ys[..., :1].expand_as(q), value)
    return grid, value


def _points(e: torch.Tensor, s: torch.Tensor, keep_monotonous: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each threshold's normalised (information, score), ``(B, T)`` each."""
    px = ((e[:, 1:-1] - e[:, :1]) / (e[:, -1:] - e[:, :1])).clamp(0.0, 1.0)
    py = ((s[:, 1:-1] - s[:, :1]) / (s[:, -1:] - s[:, :1])).clamp(0.0, 1.0)
    if keep_monotonous and py.shape[1]:
        py = py.cummax(dim=1).values  # the running max from 0: the clipped values are >= 0
    return px, py


def pic_curve(entropy, scores, *, keep_monotonous: bool = True,
              num_points: int = 1000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PIC curve and its AUC from the information and the scores of the bokeh images.

    Column 0 is the fully blurred image, columns 1..T the thresholds in ascending order, and the
    last column the original image. Normalised points are clipped to [0, 1]; with
    ``keep_monotonous`` the scores become their running max (from 0). (0, 0) and (1, 1) are
    appended after the threshold points, and the curve is sampled with
    :func:`interpolate_curve` and integrated with the trapezoid rule. Rows whose denominators
    are not positive (images PIC skips) give meaningless values: mask them.

    Args:
        entropy: WebP sizes (or any information estimate), a tensor or array.
        scores: the model's scores, same shape.
        keep_monotonous: PAIR's (and the paper's) default.
        num_points: curve samples in [0, 1), plus x = 1.

    Returns:
        ``(curve_x, curve_y, auc)`` float64 on ``entropy``'s device.

    Shape:
        ``entropy``, ``scores``: ``(B, T + 2)``. ``curve_x``, ``curve_y``: ``(B, num_points + 1)``;
        ``auc``: ``(B,)``.

    Example:
        >>> cx, cy, auc = pic_curve([[100, 150, 200]], [[0.1, 0.5, 0.9]], num_points=4)
        >>> cy    # points (0.5, 0.5), (0, 0), (1, 1)
        tensor([[0.0000, 0.2500, 0.5000, 0.7500, 1.0000]], dtype=torch.float64)
    """
    e, s = _as_float64(entropy, "entropy"), _as_float64(scores, "scores")
    if e.shape != s.shape or e.ndim != 2 or e.shape[1] < 2:
        raise XaiError(f"entropy and scores must have the same shape (B, T + 2); got {tuple(e.shape)} and "
                       f"{tuple(s.shape)}.")
    px, py = _points(e, s.to(e.device), keep_monotonous)
    ends = torch.tensor([[0.0, 1.0]], dtype=torch.float64, device=e.device).expand(e.shape[0], 2)
    px, py = torch.cat([px, ends], 1), torch.cat([py, ends], 1)
    bad = ~(torch.isfinite(px).all(1) & torch.isfinite(py).all(1))
    px, py = px.masked_fill(bad[:, None], 0.0), py.masked_fill(bad[:, None], 0.0)
    grid, curve_y = interpolate_curve(px, py, num_points)
    curve_y = curve_y.masked_fill(bad[:, None], float("nan"))
    auc = torch.trapezoid(curve_y, grid, dim=1)
    return grid.expand_as(curve_y).clone(), curve_y, auc


# --------------------------------------------------------------------------------------------
# Results
@dataclass
class PicResult:
    """Per-image PIC results of :func:`pic` (one kind: SIC or AIC).

    Attributes:
        kind: ``"sic"`` or ``"aic"``.
        auc: ``(B,)`` area under each image's curve; NaN for skipped images.
        curve_x: ``(B, num_points + 1)`` the sample points ``k / num_points`` (the same per row).
        curve_y: ``(B, num_points + 1)`` the normalised score at each point; NaN rows for
            skipped images.
        thresholds: ``(T + 2,)`` 0, the thresholds, 1: the columns of ``entropy`` and ``scores``
            (the fully blurred image, the threshold images, the original).
        entropy: ``(B, T + 2)`` WebP sizes in bytes (NaN where a skipped image was not measured).
        scores: ``(B, T + 2)`` the model's scores (softmax of the target, or 1/0 correctness).
        points_x, points_y: ``(B, T)`` each threshold's normalised information and score (after
            the running max when ``keep_monotonous``), before (0, 0) and (1, 1) are appended.
        skipped: per image ``None``, or why PIC cannot score it (as PAIR's
            ``ComputePicMetricError``).
        targets: ``(B,)`` the class scored for each image (``None`` for callable targets).
        random_mask: ``(B, H, W)`` bool, the seed pixels of each fully blurred image.
    """

    kind: str
    auc: torch.Tensor
    curve_x: torch.Tensor
    curve_y: torch.Tensor
    thresholds: torch.Tensor
    entropy: torch.Tensor
    scores: torch.Tensor
    points_x: torch.Tensor
    points_y: torch.Tensor
    skipped: list
    targets: Optional[torch.Tensor]
    random_mask: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """``(B,)`` bool: the images that were not skipped."""
        return torch.tensor([s is None for s in self.skipped], dtype=torch.bool, device=self.auc.device)


@dataclass
class PicAggregate:
    """The aggregated curve of many images (PAIR's ``aggregate_individual_pic_results``).

    Attributes:
        curve_x, curve_y: ``(num_points + 1,)``.
        auc: 0-d tensor, the trapezoid area under the aggregated curve.
        images: how many (non-skipped) images were aggregated.
        method: ``"median"`` or ``"mean"``.
    """

    curve_x: torch.Tensor
    curve_y: torch.Tensor
    auc: torch.Tensor
    images: int
    method: str


def aggregate(results, method: str = "median") -> PicAggregate:
    """Aggregate per-image PIC curves: the median (default) or mean of ``curve_y`` over the
    images, then its trapezoid AUC. Skipped images (NaN rows) are left out, as PAIR's users
    skip them.

    Args:
        results: a :class:`PicResult` or a sequence of them (e.g. one per batch; same kind and
            ``num_points``), or a ``(N, num_points + 1)`` tensor of curves on the grid
            ``k / num_points``.
        method: ``"median"`` (the paper's; for an even count, the mean of the middle two) or
            ``"mean"``.

    Returns:
        :class:`PicAggregate`.

    Example:
        >>> agg = aggregate([pic(model, xb, attrb, normalize=norm) for xb, attrb in batches])
        >>> agg.auc
    """
    check_choice(method, "method", AGGREGATIONS)
    if isinstance(results, PicResult):
        results = [results]
    if isinstance(results, (torch.Tensor, np.ndarray)):
        ys = _as_float64(results, "results")
        if ys.ndim != 2 or ys.shape[1] < 2:
            raise XaiError(f"curves must be (N, num_points + 1); got {describe(results)}.")
        n = ys.shape[1] - 1
        xs = torch.arange(n + 1, dtype=torch.float64, device=ys.device) * (1.0 / n)
        xs[-1] = 1.0
    else:
        if not isinstance(results, Sequence) or not results or not all(isinstance(r, PicResult) for r in results):
            raise XaiError(f"results must be a PicResult, a non-empty list of them or a tensor of curves; "
                           f"got {describe(results)}.")
        if len({r.kind for r in results}) > 1:
            raise XaiError("aggregate SIC and AIC results separately; got both kinds.")
        xs = results[0].curve_x[0]
        dev = xs.device
        if any(r.curve_x.shape[1] != xs.shape[0] or not torch.equal(r.curve_x.to(dev), xs.expand_as(r.curve_x.to(dev)))
               for r in results):
            raise XaiError("the results have different curve x points (num_points); aggregate like with like.")
        ys = torch.cat([r.curve_y.to(dev) for r in results])
    ys = ys[~torch.isnan(ys).any(1)]
    if ys.shape[0] == 0:
        raise XaiError("no curve to aggregate: every image was skipped (see result.skipped).")
    if method == "mean":
        y = ys.mean(0)
    else:
        srt = ys.sort(0).values
        n = srt.shape[0]
        y = srt[n // 2] if n % 2 else (srt[n // 2 - 1] + srt[n // 2]) / 2.0
    return PicAggregate(curve_x=xs, curve_y=y, auc=torch.trapezoid(y, xs), images=int(ys.shape[0]), method=method)


# --------------------------------------------------------------------------------------------
# The metric
def _check_thresholds(thresholds) -> tuple:
    try:
        t = np.asarray(thresholds.detach().cpu() if isinstance(thresholds, torch.Tensor) else thresholds,
                       dtype=np.float64)
    except (TypeError, ValueError):
        t = None
    if t is None or t.ndim != 1 or t.size == 0:
        raise XaiError(f"thresholds must be a non-empty 1-D sequence of fractions in (0, 1); got "
                       f"{describe(thresholds)}.")
    if not bool(((t > 0) & (t < 1)).all()):
        raise XaiError(f"thresholds must lie in (0, 1) (fractions of the most salient pixels; 0 and 1 are "
                       f"the fully blurred and the original image); got {t.tolist()}.")
    if t.size > 1 and not bool((np.diff(t) > 0).all()):
        raise XaiError(f"thresholds must be strictly ascending; got {t.tolist()}.")
    return tuple(float(v) for v in t)


def _channel_param(value, c: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() not in (1, c) or not bool(torch.isfinite(t).all()):
        raise XaiError(f"{name} needs 1 or {c} finite values (one per channel); got {describe(value)}.")
    return t.reshape(1, -1, 1, 1).expand(1, c, 1, 1)


def _pixel_space(normalize, input_range, c: int):
    """``(scale, offset)`` with model input = pixel01 * scale + offset, each ``(1, C, 1, 1)`` float64."""
    if normalize is not None and input_range is not None:
        raise XaiError("give normalize=(mean, std) or input_range=(lo, hi), not both.")
    for name, value in (("normalize", normalize), ("input_range", input_range)):
        if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
                                  or len(value) != 2):
            raise XaiError(f"{name} must be a pair; got {describe(value)}.")
    if normalize is not None:
        mean, std = _channel_param(normalize[0], c, "normalize mean"), _channel_param(normalize[1], c, "normalize std")
        if bool((std <= 0).any()):
            raise XaiError(f"normalize std must be > 0; got {normalize[1]!r}.")
        return 1.0 / std, -mean / std
    if input_range is not None:
        lo = _channel_param(input_range[0], c, "input_range lo")
        hi = _channel_param(input_range[1], c, "input_range hi")
        if bool((hi <= lo).any()):
            raise XaiError(f"input_range needs hi > lo; got {input_range!r}.")
        return hi - lo, lo
    return torch.ones(1, c, 1, 1, dtype=torch.float64), torch.zeros(1, c, 1, 1, dtype=torch.float64)


def _check_image(image, b: int, h: int, w: int) -> np.ndarray:
    """User photos -> uint8 ``(B, H, W, C)`` numpy (a copy), C in (1, 3)."""
    if isinstance(image, (list, tuple)):
        if len(image) != b:
            raise XaiError(f"image has {len(image)} photos for {b} images in x.")
        arrays = [_as_numpy(i, "image") for i in image]
        if any(a.dtype != np.uint8 for a in arrays):
            bad = next(a for a in arrays if a.dtype != np.uint8)
            raise XaiError(f"image must hold uint8 photos (0..255); got dtype {bad.dtype}.")
        try:
            arr = np.stack(arrays)
        except ValueError:
            raise XaiError(f"image photos differ in shape: {[a.shape for a in arrays][:4]}.") from None
    else:
        arr = _as_numpy(image, "image")
    if arr.dtype != np.uint8:
        raise XaiError(f"image must be uint8 photos (0..255), as PIC measures WebP sizes of pixels; got "
                       f"{describe(image)}. Convert with (x * 255).round().astype(np.uint8).")
    if arr.ndim == 3 and b == 1 and arr.shape[:2] == (h, w):
        arr = arr[None]
    if arr.ndim == 3 and arr.shape == (b, h, w):
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[:3] != (b, h, w) or arr.shape[3] not in (1, 3):
        raise XaiError(f"image must be uint8 (B, H, W, 3) or (B, H, W) = ({b}, {h}, {w}, ...) photos matching x; "
                       f"got {describe(image)}.")
    return np.array(arr, dtype=np.uint8, copy=True)


def _check_random_mask(random_mask, b: int, h: int, w: int) -> np.ndarray:
    m = _as_numpy(random_mask, "random_mask")
    if m.shape == (h, w):
        m = np.broadcast_to(m, (b, h, w))
    if m.shape != (b, h, w) or not (m.dtype == bool or bool(np.isin(m, (0, 1)).all())):
        raise XaiError(f"random_mask must be bool (H, W) or (B, H, W) = ({b}, {h}, {w}); got "
                       f"{describe(random_mask)}. Make one with generate_random_mask(H, W, batch=B).")
    return np.array(m, dtype=bool, copy=True)


def _one_blas_thread():
    """BLAS limited to one thread while the pool runs: scipy's interpolator makes tiny LAPACK
    calls whose spinning OpenBLAS threads otherwise stall oversubscribed CPUs (10-100x on a
    loaded 2-core machine). A no-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _run_pool(fn, tasks: list, workers: int, progress, desc: str) -> list:
    """``[fn(*t) for t in tasks]`` on a thread pool (scipy's qhull and Pillow's WebP encoder
    release the GIL), in order."""
    bar = progress_bar(len(tasks), len(tasks), progress, desc) if tasks else None
    try:
        if workers <= 1 or len(tasks) <= 1:
            out = []
            with _one_blas_thread():
                for t in tasks:
                    out.append(fn(*t))
                    if bar is not None:
                        bar.update(1)
            return out
        with _one_blas_thread(), ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            futures = [pool.submit(fn, *t) for t in tasks]
            out = []
            for f in futures:
                out.append(f.result())
                if bar is not None:
                    bar.update(1)
            return out
    finally:
        if bar is not None:
            bar.close()


def _blur_measure(img: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, int]:
    out = _bokeh(img, known.copy())
    return out, _webp(out[..., 0] if out.shape[2] == 1 else out)


class _BothScorer(Scorer):
    """A Scorer that also records top-1 correctness, so SIC and AIC share the same forwards."""

    def __init__(self, *args, **kwargs) -> None:
        self._hits: list = []
        super().__init__(*args, score="softmax", **kwargs)
        self.clean_hits = self.take_hits()

    def _scores(self, out, rows, first):
        p = super()._scores(out, rows, first)  # checks the output, pins argmax targets
        self._hits.append((out.detach().argmax(1) == self.classes[rows]).double())
        return p

    def take_hits(self) -> torch.Tensor:
        hits = torch.cat(self._hits) if self._hits else torch.empty(0, dtype=torch.float64, device=self.device)
        self._hits = []
        return hits


def pic(model, x, attribution, target=None, *, kind: str = "sic", image=None,
        normalize=None, input_range=None, preprocess: Optional[Callable] = None,
        thresholds=DEFAULT_THRESHOLDS, random_mask=None, fraction: float = 0.01,
        seed: Union[None, int, torch.Generator] = 0, min_pred_value: float = 0.8,
        keep_monotonous: bool = True, num_points: int = 1000, reduce: str = "sum",
        workers: Optional[int] = None, batch_size: Optional[int] = None,
        progress: Optional[bool] = None):
    """Softmax / Accuracy Information Curves (SIC / AIC) of an attribution, per image.

    For each threshold ``t``, the pixels whose relevance is at least the ``1 - t`` quantile
    (``np.quantile``, linear; ties reveal more than ``t``) and the random seed pixels are kept,
    and the rest re-interpolated (:func:`bokeh_image`). Entropy is :func:`webp_entropy`. The
    curve is :func:`pic_curve`. The numbers equal PAIR's ``compute_pic_metric`` with the same
    random mask (``np.trapz`` era): a parity test checks curves and AUC to 1e-9.

    Pixels and model inputs. PIC works on uint8 photos; the model sees ``model_input(photo)``:

    * ``preprocess(u)`` if given: ``u`` is a uint8 ``(N, H, W, C)`` tensor on the model's device,
      the result the model's input ``(N, ...)``;
    * else ``(u / 255 - mean) / std`` with ``normalize=(mean, std)``, ``lo + u / 255 * (hi - lo)``
      with ``input_range=(lo, hi)``, or ``u / 255`` (then ``x`` must lie in [0, 1]).

    The photos are ``image`` if given, else ``x`` mapped back through ``normalize`` /
    ``input_range`` and rounded. Without ``preprocess``, ``image`` must match ``x`` to within
    one grey level. The original image's score is that of ``model_input(photo)`` (not of ``x``),
    so every point of the curve is scored the same way.

    Skipped images. As PAIR, an image is skipped when its score is below ``min_pred_value``,
    when the fully blurred image is not smaller than the original as WebP, or when it scores at
    least the original. Its ``auc`` and ``curve_y`` are NaN and ``skipped`` says why; the batch
    goes on (PAIR raises ``ComputePicMetricError``). Skipped images cost no further forwards and
    no threshold images.

    Args:
        model, x, attribution, target, reduce, batch_size, progress: see
            :mod:`xai_torch.metrics._common`. The relevance (after ``reduce``) orders pixels,
            most relevant first (PAIR leaves taking ``|.|`` to the caller: ``reduce="abs"`` ranks
            signed pixel attributions by magnitude). ``kind="both"`` and ``"aic"`` need class
            targets.
        kind: ``"sic"`` (softmax of the target), ``"aic"`` (1 if the top-1 is the target) or
            ``"both"`` (one set of forwards, two results).
        image: uint8 photos ``(B, H, W, 3)`` (or ``(B, H, W)`` greyscale), an array, a tensor or a
            list of ``(H, W, C)`` photos, at ``x``'s height and width.
        normalize: ``(mean, std)`` of the model's normalisation of pixels in [0, 1] (scalars or
            one value per channel), e.g. ``xt.zoo.NORMALIZE``.
        input_range: ``(lo, hi)``: model-space values of black and white.
        preprocess: callable uint8 ``(N, H, W, C)`` tensor -> model input.
        thresholds: strictly ascending fractions in (0, 1).
        random_mask: bool ``(H, W)`` (all images) or ``(B, H, W)``: the seed pixels of the fully
            blurred image. ``None``: ``generate_random_mask(H, W, fraction, batch=B, seed=seed)``.
            Compare methods on the same masks (same seed and batch, or pass them).
        fraction: the fraction of random seed pixels.
        seed: seed of the random masks (int, ``torch.Generator`` or ``None`` for fresh ones).
        min_pred_value: images whose original score is below it are skipped (AIC: a wrong
            clean top-1 scores 0).
        keep_monotonous: scores as their running max (the paper's choice).
        num_points: curve samples in [0, 1), plus x = 1.
        workers: threads for the CPU work (interpolation and WebP), ``None``: up to 8.

    Returns:
        :class:`PicResult` for ``"sic"`` / ``"aic"``; a tuple ``(sic, aic)`` for ``"both"``.
        Aggregate over images with :func:`aggregate`.

    Shape:
        ``auc`` ``(B,)``; ``curve_x``, ``curve_y`` ``(B, num_points + 1)``; ``entropy``,
        ``scores`` ``(B, len(thresholds) + 2)``.

    Cost:
        ``B`` forwards for the originals, one per fully blurred image that passes the first two
        checks, and ``len(thresholds)`` per image that passes all three: ``len(thresholds) + 2``
        per image, batched. The CPU work (a Delaunay interpolation and a WebP encoding per
        image and threshold) usually dominates.

    Example:
        >>> model, x = xt.zoo.efficientnet_lite0(), xt.zoo.preprocess(xt.zoo.image("chelsea"))
        >>> res = pic(model, x, xt.Gradient(model), normalize=xt.zoo.NORMALIZE, reduce="abs",
        ...           min_pred_value=0.3)
        >>> res.auc, res.skipped
    """
    check_choice(kind, "kind", KINDS)
    x4, _ = check_input(x)
    b, c, h, w = x4.shape
    thr = _check_thresholds(thresholds)
    fraction = check_fraction(fraction, "fraction")
    min_pred_value = check_fraction(min_pred_value, "min_pred_value")
    num_points = _check_num_points(num_points)
    if not isinstance(keep_monotonous, bool):
        raise XaiError(f"keep_monotonous must be True or False; got {describe(keep_monotonous)}.")
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise XaiError(f"workers must be None or an integer >= 1; got {describe(workers)}.")
    if preprocess is not None and not callable(preprocess):
        raise XaiError(f"preprocess must be a callable uint8 (N, H, W, C) tensor -> model input; got "
                       f"{describe(preprocess)}.")
    if kind != "sic" and not isinstance(as_target(target, b), ClassTarget):
        raise XaiError(f"kind={kind!r} scores top-1 correctness and needs class targets (None, an int or one "
                       "class per image); a callable target only works with kind='sic'.")
    _check_webp()
    if min(h, w) < 2:
        raise XaiError(f"PIC interpolates images of at least 2 x 2 pixels; x is {h} x {w}.")

    # Pixels <-> model inputs.
    scale, offset = _pixel_space(normalize, input_range, c)
    xd = x4.detach().double().cpu()
    pixels01 = (xd - offset) / scale
    if image is None:
        if normalize is None and input_range is None and (pixels01.min() < -1e-6 or pixels01.max() > 1 + 1e-6):
            raise XaiError(
                f"x has values in [{float(xd.min()):.3g}, {float(xd.max()):.3g}], outside [0, 1]: PIC works on uint8 "
                "photos, so say how x maps to pixels: normalize=(mean, std) (e.g. xt.zoo.NORMALIZE), "
                "input_range=(lo, hi), or pass the photos as image=."
            )
        if c not in (1, 3):
            raise XaiError(f"PIC encodes RGB or greyscale photos; x has {c} channels. Pass image= (B, H, W, 3) "
                           "photos and preprocess= to make the model's input from them.")
        photos = (pixels01 * 255).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().copy()
    else:
        photos = _check_image(image, b, h, w)
        if preprocess is None:
            if photos.shape[3] != c:
                raise XaiError(f"image has {photos.shape[3]} channels but x has {c}; pass preprocess= to map them.")
            gap = float((pixels01 * 255 - torch.from_numpy(photos).permute(0, 3, 1, 2).double()).abs().max())
            if gap > 1.0 + 1e-6:
                how = "normalize" if normalize is not None else "input_range" if input_range is not None else "u / 255"
                raise XaiError(
                    f"image does not match x (up to {gap:.3g} grey levels apart) under the mapping {how}; pass the "
                    "right normalize= / input_range=, or preprocess= for any other mapping."
                )
    if random_mask is None:
        masks = generate_random_mask(h, w, fraction, batch=b, seed=seed).numpy()
    else:
        masks = _check_random_mask(random_mask, b, h, w)
    device = model_device(model, x4.device)
    sc, off = scale.to(device, x4.dtype), offset.to(device, x4.dtype)

    def model_input(u: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(u).to(device)
        if preprocess is not None:
            z = preprocess(t)
            if not isinstance(z, torch.Tensor) or z.ndim < 1 or z.shape[0] != t.shape[0]:
                raise XaiError(f"preprocess must return the model input, a tensor with {t.shape[0]} rows for "
                               f"{t.shape[0]} images; got {describe(z)}.")
            return z
        return t.permute(0, 3, 1, 2).to(x4.dtype) / 255 * sc + off

    x_clean = model_input(photos)
    relevance = None
    if is_explainer(attribution):
        pass  # an explainer is called with the clean classes, after the first forward
    else:
        relevance = coerce_attribution(attribution, x4.detach(), reduce=reduce, name="pic")

    # Clean scores (B forwards).
    kinds = ["sic", "aic"] if kind == "both" else [kind]
    common = dict(batch_size=batch_size, progress=progress, name="pic")
    if kind == "both":
        scorer = _BothScorer(model, x_clean, target, **common)
        clean = {"sic": scorer.clean, "aic": scorer.clean_hits}
    else:
        scorer = Scorer(model, x_clean, target, score="softmax" if kind == "sic" else "accuracy", **common)
        clean = {kind: scorer.clean}
    if relevance is None:
        relevance = coerce_attribution(attribution, x4.detach().to(device), scorer.classes, reduce=reduce,
                                       name="pic")
    saliency = relevance.detach().cpu().numpy()

    t_count = len(thr)
    entropy = np.full((b, t_count + 2), np.nan)
    scores = {k: torch.full((b, t_count + 2), float("nan"), dtype=torch.float64, device=device) for k in kinds}
    skipped = {k: [None] * b for k in kinds}
    for k in kinds:
        scores[k][:, -1] = clean[k]
        for i, p in enumerate(clean[k].tolist()):
            if p < min_pred_value:
                skipped[k][i] = (f"the score on the original image ({p:.4g}) is below min_pred_value "
                                 f"({min_pred_value:.4g})")

    def alive() -> list:
        return [i for i in range(b) if any(skipped[k][i] is None for k in kinds)]

    # Fully blurred images and the entropies of the originals (CPU).
    idx = alive()
    done = _run_pool(lambda i: (_webp(_photo2d(photos[i])), _blur_measure(photos[i], masks[i])),
                     [(i,) for i in idx], workers, progress, "pic: blurring")
    blurred = {}
    for i, (h_orig, (img_blur, h_blur)) in zip(idx, done):
        entropy[i, -1], entropy[i, 0] = h_orig, h_blur
        blurred[i] = img_blur
        if h_blur >= h_orig:
            for k in kinds:
                if skipped[k][i] is None:
                    skipped[k][i] = (f"the fully blurred image is not smaller than the original as WebP ({h_blur} >= "
                                     f"{h_orig} bytes): too little detail to measure")

    def forward(imgs: list, owner: list) -> dict:
        if not imgs:
            return {k: torch.empty(0, dtype=torch.float64, device=device) for k in kinds}
        stack = np.stack(imgs)
        rows = torch.as_tensor(owner, dtype=torch.long)
        out = scorer.evaluate(len(imgs), lambda s, e: (model_input(stack[s:e]), rows[s:e]))
        if kind == "both":
            return {"sic": out, "aic": scorer.take_hits()}
        return {kind: out}

    idx = alive()
    res = forward([blurred[i] for i in idx], idx)
    for k in kinds:
        for n, i in enumerate(idx):
            p_blur = float(res[k][n])
            scores[k][i, 0] = res[k][n]
            p_orig = float(clean[k][i])
            if skipped[k][i] is None and p_blur >= p_orig:
                skipped[k][i] = (f"the fully blurred image scores {p_blur:.4g}, not below the original's "
                                 f"{p_orig:.4g}")

    # Threshold images (CPU), then one batched evaluation.
    idx = alive()
    tasks = []
    levels = 1 - np.asarray(thr)
    for i in idx:
        quant = np.quantile(saliency[i], levels)
        for q in quant:
            tasks.append((photos[i], np.logical_or(saliency[i] >= q, masks[i])))
    done = _run_pool(_blur_measure, tasks, workers, progress, "pic: blurring")
    owner = [i for i in idx for _ in thr]
    res = forward([d[0] for d in done], owner)
    if idx:
        rows = torch.as_tensor(idx, device=device)
        entropy[idx, 1:-1] = np.asarray([d[1] for d in done], dtype=np.float64).reshape(len(idx), t_count)
        for k in kinds:
            scores[k][rows, 1:-1] = res[k].reshape(len(idx), t_count)

    ent = torch.from_numpy(entropy).to(device)
    out = []
    thr_t = torch.tensor((0.0, *thr, 1.0), dtype=torch.float64)
    for k in kinds:
        ok = torch.tensor([s is None for s in skipped[k]], dtype=torch.bool, device=device)
        cx, cy, auc = pic_curve(ent, scores[k], keep_monotonous=keep_monotonous, num_points=num_points)
        px, py = _points(ent, scores[k], keep_monotonous)
        nan = float("nan")
        out.append(PicResult(
            kind=k,
            auc=to_result(auc.masked_fill(~ok, nan), x4),
            curve_x=to_result(cx, x4),
            curve_y=to_result(cy.masked_fill(~ok[:, None], nan), x4),
            thresholds=to_result(thr_t, x4),
            entropy=to_result(ent, x4),
            scores=to_result(scores[k], x4),
            points_x=to_result(px.masked_fill(~ok[:, None], nan), x4),
            points_y=to_result(py.masked_fill(~ok[:, None], nan), x4),
            skipped=skipped[k],
            targets=None if scorer.classes is None else scorer.classes.to(x4.device).clone(),
            random_mask=torch.from_numpy(masks.copy()).to(x4.device),
        ))
    return tuple(out) if kind == "both" else out[0]


def _photo2d(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.shape[2] == 1 else img


__all__ = ["pic", "aggregate", "PicResult", "PicAggregate", "generate_random_mask", "bokeh_image", "webp_entropy",
           "interpolate_curve", "pic_curve", "DEFAULT_THRESHOLDS"]
