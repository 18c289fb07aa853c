"""Occlusion (Zeiler & Fergus 2014) with Captum's semantics.

A box slides over ``(C, H, W)``; each element gets the mean, over the windows covering it, of
``F(x) - F(x with the window set to value)``. The occluded images are built chunk by chunk: at
most ``batch_size`` exist at a time, so peak memory never depends on the number of windows.
With ``(B, K)`` targets, the K target scores of an occluded image come from one forward.
"""
from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..errors import XaiError, check_fill, describe
from ..hooks import HookSession
from ..modelio import Packed
from ..runner import ModelRunner, result_dtype
from ..targets import Target
from .base import PerturbationExplainer, PerturbationExplanation, score_columns
from .occlusion_tuples import check_member_specs, is_per_member, occlude_tuple, tuple_geometry

Dims = tuple[int, ...]


@dataclass
class OcclusionExplanation(PerturbationExplanation):
    """:class:`PerturbationExplanation` plus the per-window results.

    Attributes:
        drops: ``(B, [K,] n_c, n_h, n_w)`` score drop ``F(x) - F(x occluded)`` of every window
            position (a coarse map at the window grid's resolution); for a tuple ``x``, a tuple
            with each member's ``(B, [K,] *positions)``.
        windows: ``(n_c, n_h, n_w)``, the window positions along each dim (a tuple of them,
            one per member, for a tuple ``x``).
    """

    drops: Optional[Union[torch.Tensor, tuple[torch.Tensor, ...]]] = None
    windows: Union[Dims, tuple[Dims, ...]] = ()


def _check_dims(spec: Any, name: str, allow_none: bool = False) -> Optional[Dims]:
    """An int, ``(h, w)`` or ``(c, h, w)`` of positive ints, as a tuple (None stays None)."""
    if spec is None and allow_none:
        return None
    items = (spec,) if isinstance(spec, numbers.Integral) and not isinstance(spec, bool) else spec
    ok = isinstance(items, (tuple, list)) and len(items) in (1, 2, 3) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 1 for v in items)
    if not ok or (len(items) == 1 and not isinstance(spec, numbers.Integral)):
        raise XaiError(f"{name} must be a positive int (square, full channel depth), (h, w) (full channel "
                       f"depth) or (c, h, w) of positive ints; got {describe(spec)}.")
    return tuple(int(v) for v in items)


def _check_value(value: Any) -> Union[float, torch.Tensor]:
    value = check_fill(value, "value")
    assert isinstance(value, (float, torch.Tensor))
    if isinstance(value, torch.Tensor) and value.ndim > 4:
        raise XaiError(f"value must be a tensor broadcastable to one image (C, H, W) or (1, C, H, W); "
                       f"got a {describe(value)}.")
    return value


def _intervals(n: int, size: int, step: int, length: int, device: torch.device) -> torch.Tensor:
    """``(n, size)`` bool: row ``i`` covers ``[i*step, i*step + length)``, cropped at the edge."""
    pos = torch.arange(size, device=device)
    start = torch.arange(n, device=device)[:, None] * step
    return (pos >= start) & (pos < start + length)


class Occlusion(PerturbationExplainer):
    """Occlusion (Zeiler & Fergus 2014) with Captum's semantics: a window slides over
    ``(C, H, W)``; each element's attribution is the mean, over the window positions that cover
    it, of ``F(x) - F(x with the window set to value)``. Along each dim there are
    ``ceil((D - w) / s) + 1`` positions, the last one cropped at the edge. The windows are
    batched: each model call sees up to ``batch_size`` occluded images.

    Args:
        window: the box, ``(c, h, w)``; an int ``w`` or ``(h, w)`` covers the full channel depth.
        stride: the step between positions, ``(c, h, w)``; an int or ``(h, w)`` gives the spatial
            steps and the channel step equals the channel window. Default: the window (no
            overlap). Each step must be at most the window along its dim (else some elements are
            never occluded), except along a dim the window fills.
        value: what the window is set to, in the model's input space: a number (0 = the
            dataset-mean colour for normalised inputs) or a tensor broadcastable to one image
            ``(C, H, W)`` / ``(1, C, H, W)`` (e.g. a per-channel ``(C, 1, 1)`` colour).
        model, batch_size, progress: see :mod:`xai_torch.explainer`.

    Call arguments:
        baseline: what the window is set to in this call, instead of ``value`` (Captum's
            ``baselines``): a number, a tensor broadcastable to one image, or a per-image
            ``(B, C, H, W)`` tensor (``(B, C, 1, 1)`` too): image ``i``'s windows take
            ``baseline[i]``.

    Tuple inputs (Captum's tuple ``inputs``): ``x`` may be a tuple of tensors (an image and a
    metadata vector...), the model is called as ``model(*x)`` and the attributions are a tuple,
    one per member. ``window`` and ``stride`` are one shape for every member (an int covers
    every dim of a member, the full channel depth of a ``(C, H, W)`` one; ``(h, w)`` /
    ``(c, h, w)`` fit image members) or a tuple with one shape per member (a tuple holding
    tuples, e.g. ``window=((3, 4, 4), (1,))``: Captum's ``sliding_window_shapes``). The windows
    of all members are enumerated in one sequence, each occluded input has one window of one
    member set to its baseline (the other members as they are), and each member's elements
    average the drops of its own windows, as Captum. ``baseline`` is a number or a tuple with
    one number or tensor per member (broadcastable to the member, or one per example);
    default ``value``, which must then be a number.

    Returns:
        ``(B, C, H, W)`` attributions, signed (``(B, K, C, H, W)`` for ``(B, K)`` targets). The
        target score is the target's (the logit for class targets, as Captum); argmax targets
        are taken on the clean image. ``explain`` returns an :class:`OcclusionExplanation`
        with the score drop of every window position.

    Cost:
        ``prod(ceil((D - w) / s) + 1) + 1`` forwards per image (785 for ``window=15``,
        ``stride=8`` at 224 px), shared by the K targets; no backward.

    Example:
        >>> occ = xt.Occlusion(model, window=(3, 16, 16), stride=8, batch_size=128)
        >>> attr = occ(x, target=281)                      # (B, 3, 224, 224)
    """

    call_keywords: tuple[str, ...] = ("baseline",)
    tuple_inputs = True

    def __init__(self, model: Any, window: Any, stride: Any = None, value: Any = 0.0, *,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        # a tuple holding tuples: one shape per member of a tuple x (Captum's sliding_window_shapes)
        self.window: Any = check_member_specs(window, "window") if is_per_member(window) \
            else _check_dims(window, "window")
        self.stride: Any = check_member_specs(stride, "stride", allow_none=True) if is_per_member(stride) \
            else _check_dims(stride, "stride", allow_none=True)
        self.value = _check_value(value)
        self._packs: dict[int, Packed] = {}  # the packed tuple x of the call running in each thread

    def _run(self, x: Any, target: Any, kwargs: dict[str, Any], details: bool) -> Any:
        """For a tuple ``x``: ``value`` is the default baseline (the base's default is 0.0),
        and a baseline tensor must come per member."""
        if isinstance(x, (tuple, list)):
            base = kwargs.get("baseline")
            if isinstance(base, torch.Tensor) or (base is None and isinstance(self.value, torch.Tensor)):
                what = "value" if base is None else "baseline"
                raise XaiError(f"Occlusion: for a tuple x, {what} is a number or (baseline=) a tuple with one number "
                               "or tensor per member; a single tensor cannot fill members of different shapes.")
            if base is None:
                kwargs = {**kwargs, "baseline": self.value}
        try:
            return super()._run(x, target, kwargs, details)
        finally:
            self._packs.pop(threading.get_ident(), None)

    def _packed(self, x: Any) -> Packed:
        packed = super()._packed(x)
        self._packs[threading.get_ident()] = packed
        return packed

    def _config(self) -> dict[str, Any]:
        return {"window": self.window, "stride": self.stride, "value": self.value, **super()._config()}

    def geometry(self, shape: Any) -> tuple[Dims, Dims, Dims]:
        """``(window, stride, positions)``, each a ``(c, h, w)`` tuple, for images of ``shape``
        ``(C, H, W)``. Raises :class:`XaiError` when the window does not fit."""
        c, h, w = (int(d) for d in shape[-3:])
        win = self.window
        if is_per_member(win) or is_per_member(self.stride):
            raise XaiError("window / stride give one shape per member, for a tuple x (image, metadata...); x is "
                           "one tensor: give one shape.")
        win = (c, win[0], win[0]) if len(win) == 1 else (c, *win) if len(win) == 2 else win
        st = self.stride
        st = win if st is None else (win[0], st[0], st[0]) if len(st) == 1 else \
            (win[0], *st) if len(st) == 2 else st
        dims = (c, h, w)
        if any(a > d for a, d in zip(win, dims)):
            raise XaiError(f"window {win} (c, h, w) does not fit in images of shape {dims}; use a smaller window.")
        if any(s > a and a < d for s, a, d in zip(st, win, dims)):
            raise XaiError(f"stride {st} must not exceed window {win} along any dim the window does not fill "
                           "(else some elements are never occluded).")
        counts = tuple(-(-(d - a) // s) + 1 for a, s, d in zip(win, st, dims))
        return win, st, counts

    @staticmethod
    def _fill(value: Any, xd: torch.Tensor, name: str) -> tuple[Union[float, torch.Tensor], bool]:
        """``value`` (a number, or a 4-D tensor on ``xd``'s device and dtype) and whether it
        holds one fill per image (``(B, ...)``)."""
        value = _check_value(value) if name == "baseline" else value
        if not isinstance(value, torch.Tensor):
            return value, False
        b, one = xd.shape[0], (1, *xd.shape[1:])
        value = value.reshape((1,) * (4 - value.ndim) + tuple(value.shape))
        per_image = b > 1 and value.shape[0] == b and name == "baseline"
        try:
            ok = torch.broadcast_shapes(tuple(value.shape[1:]), one[1:]) == one[1:]  # type: ignore[no-untyped-call]
        except RuntimeError:
            ok = False
        if not ok or (value.shape[0] != 1 and not per_image):
            each = f", or one per image ({b}, C, H, W) / ({b}, C, 1, 1)" if name == "baseline" else ""
            raise XaiError(f"{name} of shape {tuple(value.shape)} does not broadcast to one image {one[1:]}; "
                           f"give a number, (C, H, W), (C, 1, 1) or (1, C, H, W){each}.")
        return value.to(device=xd.device, dtype=xd.dtype), per_image

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 baseline: Any = None, **kwargs: Any) -> OcclusionExplanation:
        run = self.runner(x, target)
        device = run.device
        xd = run.place(x)
        b = xd.shape[0]
        packed = self._packs.get(threading.get_ident())
        if packed is not None and packed.x is x:
            return self._explain_tuple(run, x, xd, target, packed, baseline)
        win, st, counts = self.geometry(xd.shape)
        value, per_image = self._fill(self.value if baseline is None else baseline, xd,
                                      "value" if baseline is None else "baseline")
        # one interval matrix per dim: the (c, h, w) box of position (i, j, l) is their outer product
        boxes = [_intervals(n, d, s, a, device) for n, d, s, a in zip(counts, xd.shape[1:], st, win)]
        n_win = math.prod(counts)
        nh_nw = counts[1] * counts[2]
        k = target.k or 1
        fx, classes, target = self._clean(run, xd, target, k)

        def occluded(start: int, stop: int) -> torch.Tensor:
            idx = torch.arange(start, stop, device=device)
            img, pos = idx // n_win, idx % n_win
            ic, ih, iw = pos // nh_nw, (pos // counts[2]) % counts[1], pos % counts[2]
            mask = boxes[0][ic][:, :, None, None] & boxes[1][ih][:, None, :, None] & boxes[2][iw][:, None, None, :]
            z = torch.where(mask, value[img] if per_image else value, xd[img])  # type: ignore[index]
            return score_columns(target, run.forward(z, images=img), img, k)[0]

        scores = run.map(occluded, b * n_win)
        drops = fx[:, None, :] - torch.cat(scores).reshape(b, n_win, k)  # (B, windows, k)
        # sum of each window's drop over the elements it covers, then the mean per element
        d = drops.permute(0, 2, 1).reshape(b * k, *counts).double()
        bc, bh, bw = (m.double() for m in boxes)
        total = torch.einsum("rijl,ic,jh,lw->rchw", d, bc, bh, bw)
        cover = bc.sum(0)[:, None, None] * bh.sum(0)[None, :, None] * bw.sum(0)[None, None, :]
        attr = (total / cover).reshape(b, k, *xd.shape[1:])

        return self._result(run, x, target, attr, classes, fx, drops.permute(0, 2, 1).reshape(b, k, *counts), counts)

    def _explain_tuple(self, run: ModelRunner, x: torch.Tensor, xd: torch.Tensor, target: Target, packed: Packed,
                       baseline: Any) -> OcclusionExplanation:
        """A tuple ``x`` packed into ``(B, 1, 1, D)`` rows (see :mod:`.occlusion_tuples`)."""
        fill: Union[float, torch.Tensor]
        if isinstance(baseline, torch.Tensor):  # the per-member tuple, packed by the base
            if not bool(torch.isfinite(baseline).all()):
                raise XaiError("baseline has NaN or infinite values; give finite fills for every member.")
            fill = baseline
        else:
            fill = _check_value(baseline)
        geo = tuple_geometry(packed, self.window, self.stride)
        k = target.k or 1
        fx, classes, target = self._clean(run, xd, target, k)
        attr, drops, counts = occlude_tuple(run, xd, target, k, fx, packed, fill, geo)
        return self._result(run, x, target, attr, classes, fx, drops, counts)

    def _result(self, run: ModelRunner, x: torch.Tensor, target: Target, attr: torch.Tensor,
                classes: Optional[torch.Tensor], fx: torch.Tensor, drops: Any, counts: Any) -> OcclusionExplanation:
        """The explanation, each tensor shaped ``(B, [K,] ...)`` in the result dtype (``drops``: one
        tensor, or one per member of a tuple ``x``)."""
        dtype = result_dtype(x)
        return OcclusionExplanation(
            attributions=self._shape(x, target, attr, dtype),
            targets=self._shape_or_none(x, target, classes),
            scores=self._shape(x, target, fx, dtype),
            model_calls=run.calls,
            drops=(tuple(self._shape(x, target, d, dtype) for d in drops) if isinstance(drops, tuple)
                   else self._shape(x, target, drops, dtype)),
            windows=counts,
        )
