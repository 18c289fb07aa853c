"""The curve side of PIC (:mod:`xai_torch.metrics.pic`): normalised (information, score)
points, the curve sampled on ``k / num_points`` as scipy's ``interp1d`` in PAIR, its AUC, the
per-image result and the aggregation over images (PAIR's ``aggregate_individual_pic_results``).

All of it is model-free: pure functions of the entropies and scores.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, check_choice, describe
from ..threads import small_ops

AGGREGATIONS = ("median", "mean")


def as_float64(v: object, name: str) -> torch.Tensor:
    """Real numbers (tensor, array or nested sequence) as a detached float64 tensor."""
    if isinstance(v, np.ndarray):
        v = torch.from_numpy(np.ascontiguousarray(v))
    t = torch.as_tensor(v).detach()
    if t.is_complex() or t.dtype == torch.bool:
        raise XaiError(f"{name} must hold real numbers; got {describe(v)}.")
    return t.to(torch.float64)


def check_num_points(num_points: object) -> int:
    """An integer >= 1."""
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 1:
        raise XaiError(f"num_points must be an integer >= 1; got {describe(num_points)}.")
    return int(num_points)


def interpolate_curve(x_points: Any, y_points: Any, num_points: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
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
    num_points = check_num_points(num_points)
    xp, yp = as_float64(x_points, "x_points"), as_float64(y_points, "y_points")
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


def points(e: torch.Tensor, s: torch.Tensor, keep_monotonous: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each threshold's normalised (information, score), ``(B, T)`` each."""
    px = ((e[:, 1:-1] - e[:, :1]) / (e[:, -1:] - e[:, :1])).clamp(0.0, 1.0)
    py = ((s[:, 1:-1] - s[:, :1]) / (s[:, -1:] - s[:, :1])).clamp(0.0, 1.0)
    if keep_monotonous and py.shape[1]:
        py = py.cummax(dim=1).values  # the running max from 0: the clipped values are >= 0
    return px, py


@small_ops()  # many small ops: one thread each (no oversubscription on a busy machine)
def pic_curve(entropy: Any, scores: Any, *, keep_monotonous: bool = True,
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
    e, s = as_float64(entropy, "entropy"), as_float64(scores, "scores")
    if e.shape != s.shape or e.ndim != 2 or e.shape[1] < 2:
        raise XaiError(f"entropy and scores must have the same shape (B, T + 2); got {tuple(e.shape)} and "
                       f"{tuple(s.shape)}.")
    px, py = points(e, s.to(e.device), keep_monotonous)
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
    skipped: list[Optional[str]]
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


def aggregate(results: Union[PicResult, Sequence[PicResult], torch.Tensor, np.ndarray[Any, Any]],
              method: str = "median") -> PicAggregate:
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
        ys = as_float64(results, "results")
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


__all__ = ["interpolate_curve", "pic_curve", "PicResult", "PicAggregate", "aggregate", "AGGREGATIONS"]
