"""RISE (Petsiuk et al. 2018, ``eclique/RISE``): randomized input sampling.

Random smooth masks ``M_j`` in ``[0, 1]``, ``S = 1 / (N p) * sum_j F(x * M_j) * M_j``. The masks
come from a seeded generator: the ``N`` small binary grids and shifts are drawn up front, the
``H x W`` masks are rendered per chunk (:func:`rise_masks` renders the same masks for a given
generator state), so at most ``batch_size`` masked images exist at a time, composed straight
into the model's batch (:func:`masked_images`). With ``(B, K)``
targets, the K target scores of a masked image come from one forward.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import torch

from ..errors import XaiError, check_choice, check_positive_int, describe
from ..hooks import HookSession
from ..runner import result_dtype
from ..seeding import check_seed, make_generator
from ..targets import ClassTarget, Target
from .base import PerturbationExplainer, PerturbationExplanation, score_columns


def _check_rise_grid(size: Any, cell: int) -> tuple[int, int]:
    h, w = (int(v) for v in size)
    if cell > h or cell > w:
        raise XaiError(f"cell={cell} (the mask grid is cell x cell) is larger than the image ({h} x {w}); "
                       f"use cell <= {min(h, w)}.")
    return -(-h // cell), -(-w // cell)


def _resize_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n_out, n_in)``: linear resize along one dim with half-pixel centres and mirrored
    edges (scikit-image ``resize(order=1, mode="reflect")``, which RISE uses)."""
    u = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    lo = u.floor()
    frac = u - lo
    lo = lo.long()

    def mirror(i: torch.Tensor) -> torch.Tensor:
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


def draw_rise_grids(n: int, size: Any, cell: int = 7, p: float = 0.5, generator: Optional[torch.Generator] = None,
                    device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
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


def render_rise_masks(grids: torch.Tensor, shifts: torch.Tensor, size: Any,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
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


def rise_masks(n: int, size: Any, cell: int = 7, p: float = 0.5, generator: Optional[torch.Generator] = None,
               device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` RISE masks ``(n, 1, H, W)`` for ``size = (H, W)``: the masks :class:`RISE` uses
    with a generator in the same state (``make_generator(seed, device)``). Holds all ``n``
    masks: for inspection and tests, not for large ``n``."""
    grids, shifts = draw_rise_grids(n, size, cell, p, generator, device)
    return render_rise_masks(grids, shifts, size, dtype)


def masked_images(x: torch.Tensor, masks: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Samples ``start .. stop`` of the mask-major product ``x[n % B] * masks[n // B - start // B]``
    (``x`` ``(B, C, H, W)``, ``masks`` ``(m, 1, H, W)`` from mask ``start // B`` on), composed
    straight into one new ``(stop - start, C, H, W)`` batch by at most three broadcast
    multiplications (the head of a partly covered mask, the whole masks, the tail): no gathered
    copies of the images or masks, no loop over samples."""
    b = x.shape[0]
    out = torch.empty((stop - start, *x.shape[1:]), dtype=x.dtype, device=x.device)
    first, n, pos = start // b, start, 0
    if n % b:  # the rest of a mask begun in the previous chunk
        i = n % b
        cnt = min(b - i, stop - n)
        torch.mul(x[i:i + cnt], masks[n // b - first], out=out[:cnt])
        n, pos = n + cnt, cnt
    whole = (stop - n) // b
    if whole:
        j = n // b - first
        torch.mul(x[None], masks[j:j + whole, None], out=out[pos:pos + whole * b].view(whole, *x.shape))
        n, pos = n + whole * b, pos + whole * b
    if n < stop:  # the start of a mask that the next chunk finishes
        torch.mul(x[:stop - n], masks[n // b - first], out=out[pos:])
    return out


class RISE(PerturbationExplainer):
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
            (probability, RISE's; ``sigmoid(z)`` on a one-logit model, see
            :data:`xai_torch.targets.SCORES`) or ``"logit"``. An ``xt.ClassTarget`` or
            callable target keeps its own scoring.
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

    def __init__(self, model: Any, masks: int = 4000, cell: int = 7, p: float = 0.5, *, score: str = "softmax",
                 seed: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.masks = check_positive_int(masks, "masks")
        self.cell = check_positive_int(cell, "cell")
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 1:
            raise XaiError(f"p (the probability of keeping a grid cell) must be a number in (0, 1]; got {describe(p)}.")
        self.p: float = float(p)
        self.score: str = check_choice(score, "score", self.SCORES)
        self.seed: Optional[int] = check_seed(seed)

    def _config(self) -> dict[str, Any]:
        return {"masks": self.masks, "cell": self.cell, "p": self.p, "score": self.score, "seed": self.seed,
                **super()._config()}

    def _coerce_target(self, target: Any, batch: int) -> Target:
        if not isinstance(target, Target) and not (callable(target) and not isinstance(target, torch.Tensor)):
            return ClassTarget(target, score=self.score).bind(batch)  # class indices: scored as configured
        return super()._coerce_target(target, batch)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 **kwargs: Any) -> PerturbationExplanation:
        run = self.runner(x, target)
        device = run.device
        xd = run.place(x)
        b, _, h, w = xd.shape
        _check_rise_grid((h, w), self.cell)  # before any model call
        k = target.k or 1
        generator = make_generator(self.seed, device)
        grids, shifts = draw_rise_grids(self.masks, (h, w), self.cell, self.p, generator, device)

        fx: Optional[torch.Tensor] = None
        classes: Optional[torch.Tensor] = None
        if details or (isinstance(target, ClassTarget) and target.classes is None):
            fx, classes, target = self._clean(run, xd, target, k)
        acc = torch.zeros(b * k, h * w, dtype=torch.float64, device=device)
        cols = torch.arange(k, device=device)

        def masked(start: int, stop: int) -> None:  # samples are mask-major: sample n is mask n // B on image n % B
            idx = torch.arange(start, stop, device=device)
            j, img = idx // b, idx % b
            first = start // b
            m = render_rise_masks(grids[first:(stop - 1) // b + 1], shifts[first:(stop - 1) // b + 1], (h, w),
                                  xd.dtype)
            s, _ = score_columns(target, run.forward(masked_images(xd, m, start, stop), images=img), img, k)
            weights = torch.zeros(b * k, m.shape[0], dtype=m.dtype, device=device)
            weights[(img[:, None] * k + cols).reshape(-1), (j - first).repeat_interleave(k)] = s.reshape(-1).to(m.dtype)
            acc.add_((weights @ m.flatten(1)).double())

        run.map(masked, b * self.masks)
        sal = (acc / (self.masks * self.p)).reshape(b, k, 1, h, w)
        dtype = result_dtype(x)
        return PerturbationExplanation(
            attributions=self._shape(x, target, sal, dtype),
            targets=self._shape_or_none(x, target, classes),
            scores=self._shape_or_none(x, target, fx, dtype),
            model_calls=run.calls,
        )
