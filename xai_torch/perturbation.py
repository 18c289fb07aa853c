"""Perturbation methods: :class:`Occlusion` and :class:`RISE`.

Both only run the model forward (no gradients), on perturbed copies of the images built chunk
by chunk: at most ``batch_size`` perturbed images exist at a time, so peak memory depends on
``batch_size`` and never on the number of windows or masks. With ``(B, K)`` targets, the K
target scores of a perturbed image come from one forward.

* Occlusion (Zeiler & Fergus 2014) with Captum's semantics: a box slides over ``(C, H, W)``;
  each element gets the mean, over the windows covering it, of ``F(x) - F(x with the window
  set to value)``.
* RISE (Petsiuk et al. 2018, ``eclique/RISE``): random smooth masks ``M_j`` in ``[0, 1]``,
  ``S = 1 / (N p) * sum_j F(x * M_j) * M_j``. The masks come from a seeded generator: the
  ``N`` small binary grids and shifts are drawn up front, the ``H x W`` masks are rendered per
  chunk (:func:`rise_masks` renders the same masks for a given generator state).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional

import torch

from .batching import map_chunks
from .errors import XaiError, check_choice, check_fill, check_positive_int, describe
from .explainer import Explainer, Explanation, model_device, result_dtype
from .hooks import HookSession
from .seeding import check_seed, make_generator
from .path.engine import Engine, fix_target, repeat_rows
from .targets import ClassTarget, Target


@dataclass
class PerturbationExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` of a perturbation method.

    Attributes:
        model_calls: images the model evaluated (clean and perturbed).
    """

    model_calls: int = 0


@dataclass
class OcclusionExplanation(PerturbationExplanation):
    """:class:`PerturbationExplanation` plus the per-window results.

    Attributes:
        drops: ``(B, [K,] n_c, n_h, n_w)`` score drop ``F(x) - F(x occluded)`` of every window
            position (a coarse map at the window grid's resolution).
        windows: ``(n_c, n_h, n_w)``, the window positions along each dim.
    """

    drops: torch.Tensor = None
    windows: tuple = ()


# --- shared: scoring the K targets of a perturbed image from one forward ---------------------
def _score(target: Target, output, images: torch.Tensor, k: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scores ``(n, k)`` of the ``n`` output rows (image index ``images``) for every target
    column, and the class of each (or None)."""
    rows = (images[:, None] * k + torch.arange(k, device=images.device)).reshape(-1) if k > 1 else images
    s, classes = target.scores(repeat_rows(output, k), rows)
    n = images.shape[0]
    return s.detach().reshape(n, k), None if classes is None else classes.reshape(n, k)


class _PerturbationExplainer(Explainer):
    """Forward-only explainer: scores the clean images, then streams perturbed ones."""

    def _clean(self, x: torch.Tensor, target: Target, k: int):
        """``(F(x) (B, k), classes (B, k) or None, pinned target)``; one forward per image."""
        pinned, fx, classes, _ = fix_target(Engine(self, target, x), x, target)
        b = x.shape[0]
        return fx.view(b, k), None if classes is None else classes.view(b, k), pinned

    @staticmethod
    def _shape(x: torch.Tensor, target: Target, t: Optional[torch.Tensor], dtype=None):
        """``(B, k, ...)`` per-image results as ``(B, [K,] ...)`` on ``x.device``."""
        if t is None:
            return None
        t = t.to(device=x.device, dtype=dtype)
        return t if target.k is not None else t[:, 0]


# --- Occlusion ----------------------------------------------------------------------------------
def _check_dims(spec, name: str, allow_none: bool = False) -> Optional[tuple]:
    """An int, ``(h, w)`` or ``(c, h, w)`` of positive ints, as a tuple (None stays None)."""
    if spec is None and allow_none:
        return None
    items = (spec,) if isinstance(spec, numbers.Integral) and not isinstance(spec, bool) else spec
    ok = isinstance(items, (tuple, list)) and len(items) in (1, 2, 3) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in items)
    if not ok or (len(items) == 1 and not isinstance(spec, numbers.Integral)):
        raise XaiError(f"{name} must be a positive int (square, full channel depth), (h, w) (full channel "
                       f"depth) or (c, h, w) of positive ints; got {describe(spec)}.")
    return tuple(int(v) for v in items)


def _check_value(value):
    value = check_fill(value, "value")
    if isinstance(value, torch.Tensor) and value.ndim > 4:
        raise XaiError(f"value must be a tensor broadcastable to one image (C, H, W) or (1, C, H, W); "
                       f"got a {describe(value)}.")
    return value


def _intervals(n: int, size: int, step: int, length: int, device) -> torch.Tensor:
    """``(n, size)`` bool: row ``i`` covers ``[i*step, i*step + length)``, cropped at the edge."""
    pos = torch.arange(size, device=device)
    start = torch.arange(n, device=device)[:, None] * step
    return (pos >= start) & (pos < start + length)


class Occlusion(_PerturbationExplainer):
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

    def __init__(self, model, window, stride=None, value=0.0, *, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.window = _check_dims(window, "window")
        self.stride = _check_dims(stride, "stride", allow_none=True)
        self.value = _check_value(value)

    def _config(self) -> dict:
        return {"window": self.window, "stride": self.stride, "value": self.value, **super()._config()}

    def geometry(self, shape) -> tuple[tuple, tuple, tuple]:
        """``(window, stride, positions)``, each a ``(c, h, w)`` tuple, for images of ``shape``
        ``(C, H, W)``. Raises :class:`XaiError` when the window does not fit."""
        c, h, w = (int(d) for d in shape[-3:])
        win = self.window
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

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession) -> OcclusionExplanation:
        device = model_device(self.model, x.device)
        xd = x.detach().to(device)
        b = xd.shape[0]
        win, st, counts = self.geometry(xd.shape)
        value = self.value
        if isinstance(value, torch.Tensor):
            one = (1, *xd.shape[1:])
            try:
                ok = torch.broadcast_shapes(tuple(value.shape), one) == one
            except RuntimeError:
                ok = False
            if not ok:
                raise XaiError(f"value of shape {tuple(value.shape)} does not broadcast to one image {one[1:]}; "
                               "give a number, (C, H, W), (C, 1, 1) or (1, C, H, W).")
            value = value.to(device=device, dtype=xd.dtype).reshape((1,) * (4 - value.ndim) + tuple(value.shape))
        # one interval matrix per dim: the (c, h, w) box of position (i, j, l) is their outer product
        boxes = [_intervals(n, d, s, a, device) for n, d, s, a in zip(counts, xd.shape[1:], st, win)]
        n_win = math.prod(counts)
        nh_nw = counts[1] * counts[2]
        k = target.k or 1
        chunk = self._chunk_size(xd, device)

        fx, classes, target = self._clean(xd, target, k)

        def occluded(start, stop):
            idx = torch.arange(start, stop, device=device)
            img, pos = idx // n_win, idx % n_win
            ic, ih, iw = pos // nh_nw, (pos // counts[2]) % counts[1], pos % counts[2]
            mask = boxes[0][ic][:, :, None, None] & boxes[1][ih][:, None, :, None] & boxes[2][iw][:, None, None, :]
            z = torch.where(mask, value, xd[img])
            with torch.no_grad():
                out = self.model(z)
            return _score(target, out, img, k)[0]

        scores = map_chunks(occluded, b * n_win, chunk, device=device, progress=self.progress, desc="Occlusion")
        drops = fx[:, None, :] - torch.cat(scores).reshape(b, n_win, k)  # (B, windows, k)
        # sum of each window's drop over the elements it covers, then the mean per element
        d = drops.permute(0, 2, 1).reshape(b * k, *counts).double()
        bc, bh, bw = (m.double() for m in boxes)
        total = torch.einsum("rijl,ic,jh,lw->rchw", d, bc, bh, bw)
        cover = bc.sum(0)[:, None, None] * bh.sum(0)[None, :, None] * bw.sum(0)[None, None, :]
        attr = (total / cover).reshape(b, k, *xd.shape[1:])

        dtype = result_dtype(x)
        return OcclusionExplanation(
            attributions=self._shape(x, target, attr, dtype),
            targets=self._shape(x, target, classes),
            scores=self._shape(x, target, fx, dtype),
            model_calls=b * (n_win + 1),
            drops=self._shape(x, target, drops.permute(0, 2, 1).reshape(b, k, *counts), dtype),
            windows=counts,
        )


# --- RISE ------------------------------------------------------------------------------------------
def _check_rise_grid(size, cell: int) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if cell > h or cell > w:
        raise XaiError(f"cell={cell} (the mask grid is cell x cell) is larger than the image ({h} x {w}); "
                       f"use cell <= {min(h, w)}.")
    return -(-h // cell), -(-w // cell)


def _resize_matrix(n_in: int, n_out: int, dtype, device) -> torch.Tensor:
    """``(n_out, n_in)``: linear resize along one dim with half-pixel centres and mirrored
    edges (scikit-image ``resize(order=1, mode="reflect")``, which RISE uses)."""
    u = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    lo = u.floor()
    frac = u - lo
    lo = lo.long()

    def mirror(i):
        if n_in == 1:
            return torch.zeros_like(i)
        period = 2 * (n_in - 1)
        i = i.abs() % period
        return torch.where(i > n_in - 1, period - i, i)

    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, mirror(lo)), 1 - frac, accumulate=True)
    m.index_put_((rows, mirror(lo + 1)), frac, accumulate=True)
    return m.to(device=device, dtype=dtype)


def draw_rise_grids(n: int, size, cell: int = 7, p: float = 0.5, generator: Optional[torch.Generator] = None,
                    device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of ``n`` RISE masks for ``size = (H, W)`` images: binary ``(n, cell,
    cell)`` grids with P(1) = ``p`` and ``(n, 2)`` shifts in ``[0, ceil(H / cell))`` x
    ``[0, ceil(W / cell))``, drawn from ``generator`` (torch's global RNG when None) on
    ``device`` (the generator's by default): grids first, then row shifts, then column shifts.
    ``n * cell**2`` values, not ``n * H * W``."""
    ch, cw = _check_rise_grid(size, cell)
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    grids = torch.rand((n, cell, cell), generator=generator, device=device) < p
    dy = torch.randint(0, ch, (n,), generator=generator, device=device)
    dx = torch.randint(0, cw, (n,), generator=generator, device=device)
    return grids, torch.stack([dy, dx], 1)


def render_rise_masks(grids: torch.Tensor, shifts: torch.Tensor, size, dtype=torch.float32) -> torch.Tensor:
    """``(n, 1, H, W)`` RISE masks from :func:`draw_rise_grids`' grids and shifts: each grid
    resized linearly to ``(cell + 1) * ceil(H / cell)`` x ``(cell + 1) * ceil(W / cell)``
    (half-pixel centres, mirrored edges: scikit-image ``resize(order=1, mode="reflect")`` as the
    reference), then cropped to ``H x W`` at its shift. Values lie in ``[0, 1]``."""
    h, w = (int(v) for v in size)
    cell = grids.shape[-1]
    ch, cw = _check_rise_grid(size, cell)
    device = grids.device
    rh = _resize_matrix(cell, (cell + 1) * ch, dtype, device)  # (up_h, cell)
    rw = _resize_matrix(cell, (cell + 1) * cw, dtype, device)
    ph = rh[shifts[:, :1] + torch.arange(h, device=device)]  # (n, H, cell): the rows the crop keeps
    pw = rw[shifts[:, 1:] + torch.arange(w, device=device)]  # (n, W, cell)
    return (ph @ grids.to(dtype) @ pw.transpose(1, 2)).clamp_(0, 1)[:, None]


def rise_masks(n: int, size, cell: int = 7, p: float = 0.5, generator: Optional[torch.Generator] = None,
               device=None, dtype=torch.float32) -> torch.Tensor:
    """``n`` RISE masks ``(n, 1, H, W)`` for ``size = (H, W)``: the masks :class:`RISE` uses
    with a generator in the same state (``make_generator(seed, device)``). Holds all ``n``
    masks: for inspection and tests, not for large ``n``."""
    grids, shifts = draw_rise_grids(n, size, cell, p, generator, device)
    return render_rise_masks(grids, shifts, size, dtype)


class RISE(_PerturbationExplainer):
    """RISE (Petsiuk et al. 2018): the saliency of class c is the average of random smooth
    masks weighted by the model's score on the masked image,
    ``S_c = 1 / (N p) * sum_j F_c(x * M_j) * M_j``.

    A mask is a binary ``cell x cell`` grid with P(1) = ``p``, resized linearly to
    ``(cell + 1) * ceil(H / cell)`` per dim (``ceil(W / cell)`` for the width), shifted by a
    random offset below one grid cell and cropped to ``H x W`` (``eclique/RISE``; its
    scikit-image resize with mirrored edges is reproduced exactly). The mask multiplies the
    input in the model's input space (for normalised inputs, 0 is the mean colour). Masks are
    streamed: only the ``N`` small grids are drawn up front, and the ``H x W`` masks of one
    chunk exist at a time; every image of the batch sees the same masks.

    Args:
        masks: the number of masks N.
        cell: the grid size s (s x s cells); at most the image height and width.
        p: the probability that a grid cell is kept, in ``(0, 1]``.
        score: how class targets (``None``, ints, ``(B, K)``) are scored: ``"softmax"``
            (probability, RISE's) or ``"logit"``. An ``xt.ClassTarget`` or callable target
            keeps its own scoring.
        seed: the masks repeat bit-for-bit on the same device with a seed (for any
            ``batch_size``); ``None`` draws from torch's global RNG.
        model, batch_size, progress: see :mod:`xai_torch.explainer`.

    Returns:
        ``(B, 1, H, W)`` maps (``(B, K, 1, H, W)`` for ``(B, K)`` targets), raw (not
        normalised). Argmax targets are taken on the clean image. ``explain`` also returns
        the clean scores and ``model_calls``.

    Cost:
        N forwards per image (shared by the K targets), plus one per image for argmax targets
        or ``explain``'s scores. Memory: ``batch_size`` masked images and their masks.

    Example:
        >>> rise = xt.RISE(model, masks=4000, cell=7, p=0.5, seed=0, batch_size=128)
        >>> maps = rise(x)                                   # (B, 1, H, W)
    """

    SCORES = ("softmax", "logit")

    def __init__(self, model, masks: int = 4000, cell: int = 7, p: float = 0.5, *, score: str = "softmax",
                 seed: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.masks = check_positive_int(masks, "masks")
        self.cell = check_positive_int(cell, "cell")
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
            raise XaiError(f"p (the probability of keeping a grid cell) must be a number in (0, 1]; got {describe(p)}.")
        self.p = float(p)
        self.score = check_choice(score, "score", self.SCORES)
        self.seed = check_seed(seed)

    def _config(self) -> dict:
        return {"masks": self.masks, "cell": self.cell, "p": self.p, "score": self.score, "seed": self.seed,
                **super()._config()}

    def _coerce_target(self, target, batch):
        if not isinstance(target, Target) and not (callable(target) and not isinstance(target, torch.Tensor)):
            return ClassTarget(target, score=self.score).bind(batch)  # class indices: scored as configured
        return super()._coerce_target(target, batch)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession) -> PerturbationExplanation:
        device = model_device(self.model, x.device)
        xd = x.detach().to(device)
        b, _, h, w = xd.shape
        _check_rise_grid((h, w), self.cell)  # before any model call
        k = target.k or 1
        chunk = self._chunk_size(xd, device)
        generator = make_generator(self.seed, device)
        grids, shifts = draw_rise_grids(self.masks, (h, w), self.cell, self.p, generator, device)

        fx = classes = None
        calls = 0
        if self._details or (isinstance(target, ClassTarget) and target.classes is None):
            fx, classes, target = self._clean(xd, target, k)
            calls += b
        acc = torch.zeros(b * k, h * w, dtype=torch.float64, device=device)
        cols = torch.arange(k, device=device)

        def masked(start, stop):  # samples are mask-major: sample n is mask n // B on image n % B
            idx = torch.arange(start, stop, device=device)
            j, img = idx // b, idx % b
            first = start // b
            m = render_rise_masks(grids[first:(stop - 1) // b + 1], shifts[first:(stop - 1) // b + 1], (h, w),
                                  xd.dtype)
            with torch.no_grad():
                out = self.model(xd[img] * m[j - first])
            s, _ = _score(target, out, img, k)
            weights = torch.zeros(b * k, m.shape[0], dtype=m.dtype, device=device)
            weights[(img[:, None] * k + cols).reshape(-1), (j - first).repeat_interleave(k)] = s.reshape(-1).to(m.dtype)
            acc.add_((weights @ m.flatten(1)).double())

        map_chunks(masked, b * self.masks, chunk, device=device, progress=self.progress, desc="RISE")
        calls += b * self.masks
        sal = (acc / (self.masks * self.p)).reshape(b, k, 1, h, w)
        dtype = result_dtype(x)
        return PerturbationExplanation(
            attributions=self._shape(x, target, sal, dtype),
            targets=self._shape(x, target, classes),
            scores=self._shape(x, target, fx, dtype),
            model_calls=calls,
        )
