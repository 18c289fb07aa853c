"""Adaptive quadrature for Integrated Gradients: spend the steps where the path score moves.

On a trained network the integrand of IG is rough: along the path from a black image to a
photo the target score often does nearly all of its change in the first few percent of the
path (the "aha moment" of the IG chapter), where a uniform rule puts only a few nodes. For a
ReLU network the score along the path is piecewise linear, so its derivative is a step
function with thousands of jumps, and high-order rules gain nothing over midpoints.

The rule here uses what the completeness axiom gives for free: over any piece ``[a, b]`` of
the path, the exact integral of the integrand is ``F(b) - F(a)``, so the quadrature error of
each piece can be measured, not guessed. It runs, batched across paths:

1. **Pilot** (forward passes only): bisect, from a uniform start, the pieces over which the
   score changes most until there are ``GROUPS`` pieces ("groups").
2. **First pass**: one midpoint per group (forward + backward).
3. **Refinement**: each round, every path triples the resolution of the groups with the
   largest measured error per evaluation (``|sum(attr over the group) - (F(b) - F(a))|``
   divided by the nodes it has). Tripling a composite midpoint rule keeps the old nodes
   (each sub-interval's midpoint is the middle third's midpoint) and scales their weights by
   exactly 1/3, so a group's float64 accumulator is rescaled, not recomputed: memory is
   ``GROUPS`` accumulators per path, whatever ``steps`` is.

Every model evaluation, forward-only or not, counts against ``steps``; what a path cannot
spend (a tripling that no longer fits) is left unspent and shows in ``model_calls``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch

from ..runner import ModelRunner
from .base import Paths
from .engine import integrate
from .line import baseline_scores, line_factor, line_points

_F64 = torch.float64

#: groups (pieces with their own accumulator and error) per path.
GROUPS = 16
#: uniform pieces the pilot starts from.
PILOT_START = 4
#: the smallest budget: the pilot plus one node per group.
MIN_STEPS = 2 * GROUPS


Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: one evaluated batch of nodes: (paths, alphas, scores, probs, grad)
Nodes = tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Tensor]


def pilot_edges(score: Score, n_paths: int, f0: torch.Tensor, f1: torch.Tensor, groups: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-only bisection: ``(edges, values)``, each ``(P, groups + 1)``, where ``values``
    are the scores at ``edges``; ``score(paths, alphas)`` evaluates the model."""
    edges = torch.linspace(0, 1, PILOT_START + 1, dtype=_F64, device=device).repeat(n_paths, 1)
    path = torch.arange(n_paths, device=device)
    inner = edges[:, 1:-1]
    f_inner = score(path.repeat_interleave(inner.shape[1]), inner.flatten()).view(n_paths, -1)
    values = torch.cat([f0[:, None], f_inner, f1[:, None]], 1)
    while edges.shape[1] - 1 < groups:
        q = min(max(1, (edges.shape[1] - 1) // 4), groups - edges.shape[1] + 1)
        change = (values[:, 1:] - values[:, :-1]).abs()
        pick = change.topk(q, 1).indices
        mids = (edges.gather(1, pick) + edges.gather(1, pick + 1)) / 2
        f_mid = score(path.repeat_interleave(q), mids.flatten()).view(n_paths, q)
        edges, order = torch.cat([edges, mids], 1).sort(1)
        values = torch.cat([values, f_mid], 1).gather(1, order)
    return edges, values


def choose(err: torch.Tensor, sub: torch.Tensor, left: torch.Tensor) -> list[list[int]]:
    """Groups each path refines this round: by measured error per node, greedily, while
    their cost (``2 * sub`` nodes each) fits in half of what is ``left`` (or, if none does, the
    single best one that fits at all)."""
    picks: list[list[int]] = []
    for p in range(err.shape[0]):
        budget = int(left[p])
        order = (err[p] / sub[p]).argsort(descending=True).tolist()
        cap, used = max(budget // 2, 1), 0
        chosen: list[int] = []
        for g in order:
            cost = 2 * int(sub[p, g])
            if used + cost <= cap:
                chosen.append(g)
                used += cost
        if not chosen:
            fits = [g for g in order if 2 * int(sub[p, g]) <= budget]
            chosen = fits[:1]
        picks.append(chosen)
    return picks


def adaptive_paths(runner: ModelRunner, x: torch.Tensor, k: int, base: torch.Tensor, steps: int,
                   fb: Optional[torch.Tensor] = None, multiply: bool = True) -> Paths:
    """Adaptive straight-line IG for every row (image x target) and baseline (``fb``: the
    baselines' scores when the caller has them; ``multiply``: times ``x - b``, else the
    integrated gradient alone, its nodes placed as for IG)."""
    j_count, b_count = base.shape[:2]
    r_count = b_count * k
    n_paths, groups = r_count * j_count, GROUPS
    dev = x.device
    shape = tuple(x.shape[1:])

    def score(paths: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        points = line_points(x, base, k, paths, alphas, torch.zeros_like(alphas))

        def inputs(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            z, rows, *_ = points(start, stop)
            return z, rows

        return runner.scores(inputs, paths.shape[0]).scores.to(_F64)

    if fb is None:  # the rule needs both ends of every path, details or not
        fb = baseline_scores(runner, base, k)
    f0 = fb.flatten().to(_F64)
    clean = runner.clean_scores
    if clean is None:
        clean = score(torch.arange(r_count, device=dev) * j_count, torch.ones(r_count, dtype=_F64, device=dev))
    f1 = clean.to(_F64).repeat_interleave(j_count)

    edges, values = pilot_edges(score, n_paths, f0, f1, groups, dev)
    exact = values[:, 1:] - values[:, :-1]  # (P, G): the integral over each group
    lo, width = edges[:, :-1], edges[:, 1:] - edges[:, :-1]
    spent = torch.full((n_paths,), groups - 1, dtype=torch.long)  # pilot forwards per path

    acc = torch.zeros((n_paths * groups, *shape), dtype=_F64, device=dev)
    total = torch.zeros((n_paths, groups), dtype=_F64, device=dev)  # sum of attr per group
    sub = torch.ones((n_paths, groups), dtype=torch.long, device=dev)  # sub-intervals per group
    log: list[Nodes] = []  # every evaluated node

    def run(paths: torch.Tensor, groups_of: torch.Tensor, alphas: torch.Tensor, weights: torch.Tensor) -> None:
        slots = paths * groups + groups_of
        order = slots.argsort(stable=True)  # the engine wants samples grouped by slot
        paths, groups_of, alphas, weights, slots = (t[order] for t in (paths, groups_of, alphas, weights, slots))
        res = integrate(runner, line_points(x, base, k, paths, alphas, weights, slots), paths.shape[0],
                        n_paths * groups, shape, acc=acc, post=lambda slot: line_factor(x, base, k, slot // groups))
        total.view(-1).index_add_(0, slots, res.totals)
        spent.add_(torch.bincount(paths.cpu(), minlength=n_paths))
        log.append((paths, alphas, res.scores, res.probs, res.grad_abs))

    p_all = torch.arange(n_paths, device=dev).repeat_interleave(groups)
    g_all = torch.arange(groups, device=dev).repeat(n_paths)
    run(p_all, g_all, (lo + width / 2).flatten(), width.flatten())

    while True:
        left = steps - spent
        picks = choose((total - exact).abs().cpu(), sub.cpu(), left)
        pairs = [(p, g) for p, gs in enumerate(picks) for g in gs]
        if not pairs:
            break
        ps: list[torch.Tensor] = []
        gs: list[torch.Tensor] = []
        alphas: list[torch.Tensor] = []
        weights: list[torch.Tensor] = []
        for p, g in pairs:
            n = int(sub[p, g])
            h = float(width[p, g]) / n
            start = float(lo[p, g]) + h * torch.arange(n, dtype=_F64, device=dev)
            alphas += [start + h / 6, start + 5 * h / 6]
            weights.append(torch.full((2 * n,), h / 3, dtype=_F64, device=dev))
            ps.append(torch.full((2 * n,), p, device=dev))
            gs.append(torch.full((2 * n,), g, device=dev))
            acc[p * groups + g] /= 3
            total[p, g] /= 3
            sub[p, g] *= 3
        run(torch.cat(ps), torch.cat(gs), torch.cat(alphas), torch.cat(weights))

    attr = acc.view(n_paths, groups, *shape).sum(1)
    for p in range(n_paths if multiply else 0):
        attr[p] *= line_factor(x, base, k, p)
    attr = attr.view(r_count, j_count, *shape).mean(1)
    return _curves(attr, fb, log, n_paths, r_count, j_count)


def _curves(attr: torch.Tensor, fb: torch.Tensor, log: list[Nodes], n_paths: int, r_count: int,
            j_count: int) -> Paths:
    """The result, with the path curves sorted by alpha per path, NaN-padded to the longest path."""
    paths = torch.cat([e[0] for e in log])
    alphas = torch.cat([e[1] for e in log])
    probs = None if log[0][3] is None else torch.cat([e[3] for e in log if e[3] is not None])
    order = torch.argsort(paths.to(_F64) * 2 + alphas, stable=True)  # alphas lie in (0, 1)
    counts = torch.bincount(paths, minlength=n_paths)
    width = int(counts.max())
    start = torch.cumsum(counts, 0) - counts
    col = torch.arange(paths.shape[0], device=paths.device) - start[paths[order]]

    def table(t: torch.Tensor) -> torch.Tensor:
        out = torch.full((n_paths, width), float("nan"), dtype=t.dtype, device=t.device)
        out[paths[order], col] = t[order]
        return out.view(r_count, j_count, width)

    return Paths(attr, fb, table(alphas), table(torch.cat([e[2] for e in log])),
                 None if probs is None else table(probs), table(torch.cat([e[4] for e in log])))
