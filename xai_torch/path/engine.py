"""The batched path-integration engine shared by the IG family.

A path method evaluates ``N`` samples: sample ``n`` is a point ``z_n`` on a path (one path per
image x target x baseline), scored by target row ``r_n``. The engine runs them in chunks of
at most ``batch_size`` samples (one forward and one backward per chunk) and adds
``w_n * scale_n * dF/dz(z_n)`` into a float64 accumulator per slot (a path, or a piece of one).
Peak memory is one chunk plus the ``(slots, C, H, W)`` accumulators: it does not depend on
the number of steps.

Per sample it also records the target score, the target's softmax probability (class
targets) and the mean ``|dF/dz|``: the path curve of the IG chapter (score and gradient
magnitude against alpha), at no extra model cost.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch

from ..batching import map_chunks
from ..errors import XaiError, describe
from ..targets import ClassTarget, Target

#: ``points(start, stop) -> (z, rows, slots, weights, scale)`` for samples ``[start, stop)``:
#: ``z`` (n, C, H, W) model inputs, ``rows`` (n,) target rows, ``slots`` (n,) accumulator
#: indices grouped in runs, ``weights`` (n,) float64, ``scale`` ``None`` or (n, C, H, W) float64.
Points = Callable[[int, int], tuple]


@dataclass
class PathRun:
    """What :func:`integrate` returns.

    Attributes:
        acc: ``(paths, C, H, W)`` float64, ``sum_n coef_n * dF/dz(z_n)`` per path.
        scores: ``(N,)`` target score at every sample.
        probs: ``(N,)`` softmax probability of the target class, or ``None`` for targets
            that are not classes.
        grad_abs: ``(N,)`` mean ``|dF/dz|`` at every sample.
        totals: ``(N,)`` float64, ``sum(coef_n * dF/dz(z_n))``: what each sample adds to the
            sum of its path's accumulator (for IG, its share of the completeness sum).
    """

    acc: torch.Tensor
    scores: torch.Tensor
    probs: Optional[torch.Tensor]
    grad_abs: torch.Tensor
    totals: torch.Tensor


def _probability(out, classes) -> Optional[torch.Tensor]:
    if classes is None or not isinstance(out, torch.Tensor) or out.ndim != 2:
        return None
    return out.detach().softmax(1).gather(1, classes.to(out.device)[:, None])[:, 0]


class Engine:
    """Chunked model evaluation for one explainer call.

    Args:
        explainer: supplies ``model``, ``batch_size`` and ``progress``.
        target: the bound target; ``rows`` index it.
        x: the images, on the model's device (for the automatic batch size).
    """

    def __init__(self, explainer, target: Target, x: torch.Tensor) -> None:
        self.explainer = explainer
        self.model = explainer.model
        self.target = target
        self.device = x.device
        self.chunk = explainer._chunk_size(x, x.device)
        self.name = type(explainer).__name__
        self.calls = 0  # samples evaluated (forward or forward + backward)
        self.clean_scores: Optional[torch.Tensor] = None  # F(x) per row, set by fix_target
        self.explainer_dtype = x.dtype
        self.details = True  # False: skip forwards that only feed scores and deltas

    def _map(self, fn, n: int) -> list:
        return map_chunks(fn, n, self.chunk, device=self.device, progress=self.explainer.progress, desc=self.name)

    def scores(self, inputs: Callable[[int, int], tuple], n: int) -> tuple[torch.Tensor, Optional[torch.Tensor],
                                                                            Optional[torch.Tensor]]:
        """Forward only: ``(scores, classes, probs)`` of ``n`` samples, where
        ``inputs(start, stop) -> (z, rows)``."""

        def chunk(start, stop):
            z, rows = inputs(start, stop)
            with torch.no_grad():
                out = self.model(z)
                s, classes = self.target.scores(out, rows)
            self.calls += stop - start
            return s.detach(), classes, _probability(out, classes)

        parts = self._map(chunk, n)
        classes = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
        probs = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        return torch.cat([p[0] for p in parts]), classes, probs

    def gradients(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dF/dz, F(z))`` for every row of ``z`` (chunked; all gradients are kept)."""

        def chunk(start, stop):
            g, s, _ = self._grad(z[start:stop], rows[start:stop])
            return g, s

        parts = self._map(chunk, z.shape[0])
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _grad(self, z: torch.Tensor, rows: torch.Tensor):
        with torch.inference_mode(False), torch.enable_grad():
            # a leaf that requires grad: the model cannot modify it in place (autograd refuses);
            # tensors made under the user's torch.inference_mode() must be copied out of it
            zg = (z.detach().clone() if z.is_inference() else z.detach()).requires_grad_(True)
            out = self.model(zg)
            s, classes = self.target.scores(out, rows)
            if not s.requires_grad:
                raise XaiError(
                    f"{self.name}: the target score does not depend on x through autograd (the model or "
                    "the target callable detaches it, or runs under torch.no_grad), so it has no gradient."
                )
            (g,) = torch.autograd.grad(s.sum(), zg)
        self.calls += z.shape[0]
        return g.detach(), s.detach(), _probability(out, classes)

    def integrate(self, points: Points, n: int, n_slots: int, shape: tuple, acc: Optional[torch.Tensor] = None,
                  post: Optional[Callable[[int], torch.Tensor]] = None) -> PathRun:
        """Evaluate ``n`` samples and add ``weight * scale * dF/dz`` into their slot's float64
        accumulator (``acc`` when given, ``(n_slots, *shape)``, updated in place).

        ``post(slot)``, when given, is a factor the caller will multiply the slot's accumulator
        by afterwards (IG's ``x - b``); the per-sample ``totals`` include it.
        """
        if acc is None:
            acc = torch.zeros((n_slots, *shape), dtype=torch.float64, device=self.device)
        # per-sample records go into buffers allocated up front: small tensors kept from every
        # chunk would pin the heap between the large freed ones, and glibc's peak memory would
        # then grow with the number of steps
        record = torch.full((4, n), float("nan"), dtype=torch.float64, device=self.device)
        has_probs = []

        def chunk(start, stop):
            z, rows, slots, weights, scale = points(start, stop)
            g, s, p = self._grad(z, rows)
            flat = g.flatten(1)
            # samples come grouped by slot, so a chunk holds a few runs of one slot: reduce each
            # run (a weighted sum, deterministic, unlike index_add_ with atomics on CUDA)
            for a, b in _runs(slots):
                slot = int(slots[a])
                if scale is None:  # a (1 x n) @ (n x D) product in the gradient's dtype
                    w = weights[a:b].to(g.dtype)
                    acc[slot] += (w @ flat[a:b]).view(shape).to(torch.float64)
                    per = flat[a:b] @ post(slot).flatten().to(g.dtype) if post is not None else flat[a:b].sum(1)
                    record[3, start + a:start + b] = weights[a:b] * per.to(torch.float64)
                else:
                    contrib = g[a:b].to(torch.float64) * (weights[a:b].view(-1, *[1] * len(shape)) * scale[a:b])
                    acc[slot] += contrib.sum(0)
                    if post is not None:
                        contrib = contrib * post(slot)
                    record[3, start + a:start + b] = contrib.flatten(1).sum(1)
            record[0, start:stop] = s
            record[2, start:stop] = flat.abs().mean(1)
            if p is not None:
                record[1, start:stop] = p
                has_probs.append(True)

        self._map(chunk, n)
        dtype = self.explainer_dtype
        probs = record[1].to(dtype) if has_probs else None
        return PathRun(acc, record[0].to(dtype), probs, record[2].to(dtype), record[3])


def _runs(slots: torch.Tensor) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of equal values in ``slots``."""
    bounds = torch.nonzero(slots[1:] != slots[:-1]).flatten().add(1).tolist()
    edges = [0, *bounds, slots.shape[0]]
    return list(zip(edges[:-1], edges[1:]))


def repeat_rows(output, k: int):
    """Each row of a model output repeated ``k`` times (row ``i`` -> ``i*k .. i*k+k-1``), so the
    ``K`` targets of an image are scored from one forward."""
    if k == 1:
        return output
    if isinstance(output, torch.Tensor):
        return output.repeat_interleave(k, dim=0)
    if isinstance(output, dict):
        return {key: repeat_rows(v, k) if isinstance(v, torch.Tensor) else v for key, v in output.items()}
    if isinstance(output, list):
        return [o for o in output for _ in range(k)]
    raise XaiError(f"(B, K) targets need a model output with one row per image; got a {describe(output)}.")


def fix_target(engine: Engine, x: torch.Tensor, target: Target):
    """Score the clean images once (one forward per image, whatever K is), and pin argmax
    targets to the class found there (perturbed or path points must be scored for the class of
    ``x``, not their own argmax).

    Returns:
        ``(target, scores, classes, probs)``: the pinned target, then per row (image x target
        column) ``F(x)``, the class (or ``None``) and its probability (or ``None``).
    """
    k = target.k or 1
    b = x.shape[0]
    record = torch.full((3, b * k), float("nan"), dtype=torch.float64, device=engine.device)
    found = []

    def chunk(start, stop):
        with torch.no_grad():
            out = engine.model(x[start:stop].clone())  # never a view of the user's input
        rows = torch.arange(start * k, stop * k, device=engine.device)
        s, classes = engine.target.scores(repeat_rows(out, k), rows)
        record[0, start * k:stop * k] = s.detach()
        if classes is not None:
            record[1, start * k:stop * k] = classes
            p = _probability(repeat_rows(out, k), classes)
            if p is not None:
                record[2, start * k:stop * k] = p
            found.append(p is not None)

    engine._map(chunk, b)
    engine.calls += b
    scores = record[0].to(engine.explainer_dtype)
    classes = record[1].long() if found else None
    probs = record[2].to(engine.explainer_dtype) if found and all(found) else None
    engine.clean_scores = scores
    if isinstance(target, ClassTarget) and target.classes is None:
        pinned = ClassTarget(classes.cpu(), target.score).bind(b)
        engine.target = pinned
        return pinned, scores, classes, probs
    return target, scores, classes, probs
