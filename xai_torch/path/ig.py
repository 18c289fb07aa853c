"""Integrated Gradients and Expected Gradients on the shared engine.

Integrated Gradients (Sundararajan et al. 2017) integrates the gradient along the straight
line from a baseline ``b`` to the image ``x``::

    IG(x; b) = (x - b) * integral_0^1 dF(b + a (x - b)) / dx da
             ~ (x - b) * sum_k w_k dF(b + a_k (x - b)) / dx

Expected Gradients (Erion et al. 2021) takes the expectation of the same integrand over
baselines drawn from a background set and a uniform ``a``, by Monte Carlo.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import XaiError, check_choice, check_input, check_positive_int
from .base import PathExplainer, Paths
from .engine import Engine, _runs, repeat_rows
from .quadrature import RULES, get_rule

_F64 = torch.float64


def baseline_scores(engine: Engine, base: torch.Tensor, k: int, needed: bool = False) -> Optional[torch.Tensor]:
    """``(R, J)`` target scores of the ``J`` baselines of every row, one forward per image and
    baseline (its K targets share it), or ``None`` when the call does not report them and
    ``needed`` is False."""
    if not (engine.details or needed):
        return None
    j_count, b_count = base.shape[:2]
    dev = base.device
    scores = torch.empty(b_count, j_count, k, dtype=torch.float64, device=dev)
    cols = torch.arange(k, device=dev)

    def chunk(start, stop):
        q = torch.arange(start, stop, device=dev)
        i, j = q // j_count, q % j_count
        with torch.no_grad():
            out = engine.model(base[j, i])
        s, _ = engine.target.scores(repeat_rows(out, k), (i[:, None] * k + cols).reshape(-1))
        scores[i, j] = s.detach().view(-1, k).to(torch.float64)

    engine._map(chunk, b_count * j_count)
    engine.calls += b_count * j_count
    return scores.permute(0, 2, 1).reshape(b_count * k, j_count).to(engine.explainer_dtype)


def line_points(x: torch.Tensor, base: torch.Tensor, k: int, paths: torch.Tensor, alphas: torch.Tensor,
                weights: torch.Tensor, slots: Optional[torch.Tensor] = None):
    """Engine samples on straight lines: sample ``n`` is ``b + alphas[n] (x - b)`` on path
    ``paths[n]`` (row ``p // J``, baseline ``p % J``) with weight ``weights[n]``, accumulated
    into ``slots[n]`` (default: the path). Samples must come grouped by path."""
    j_count = base.shape[0]
    slots = paths if slots is None else slots
    a = alphas.to(x.dtype)

    def points(start, stop):
        p = paths[start:stop]
        z = torch.empty((stop - start, *x.shape[1:]), dtype=x.dtype, device=x.device)
        for lo, hi in _runs(p):  # one path per run: broadcast, no per-sample copies of x and b
            path = int(p[lo])
            i, j = path // j_count // k, path % j_count
            # b + a * (x - b) in two roundings, as Captum (a fused multiply-add rounds differently,
            # and a ReLU network's gradient can jump on a one-ulp change of its input)
            torch.mul(a[start + lo:start + hi].view(-1, 1, 1, 1), x[i] - base[j, i], out=z[lo:hi])
            z[lo:hi] += base[j, i]
        return z, p // j_count, slots[start:stop], weights[start:stop], None

    return points


def line_factor(x: torch.Tensor, base: torch.Tensor, k: int, path: int) -> torch.Tensor:
    """``x - b`` of a path, in float64: what IG multiplies the integrated gradient by."""
    j_count = base.shape[0]
    i, j = path // j_count // k, path % j_count
    return x[i].to(_F64) - base[j, i].to(_F64)


def _line_paths(engine: Engine, x: torch.Tensor, k: int, base: torch.Tensor, alphas: torch.Tensor,
                weights: torch.Tensor) -> Paths:
    """Straight-line IG for every row (image x target) and baseline, with one shared rule."""
    j_count, b_count = base.shape[:2]
    r_count = b_count * k
    n_paths, steps = r_count * j_count, alphas.shape[0]
    fb = baseline_scores(engine, base, k)
    dev = x.device
    paths = torch.arange(n_paths, device=dev).repeat_interleave(steps)
    points = line_points(x, base, k, paths, alphas.to(dev).repeat(n_paths), weights.to(dev).repeat(n_paths))
    run = engine.integrate(points, n_paths * steps, n_paths, tuple(x.shape[1:]),
                           post=lambda p: line_factor(x, base, k, p))
    for p in range(n_paths):
        run.acc[p] *= line_factor(x, base, k, p)
    attr = run.acc.view(r_count, j_count, *x.shape[1:]).mean(1)

    def curve(t):
        return None if t is None else t.view(r_count, j_count, steps)

    return Paths(attr, fb, alphas, curve(run.scores), curve(run.probs), curve(run.grad_abs))


class IntegratedGradients(PathExplainer):
    """Integrated Gradients (Sundararajan et al. 2017), batched over images x baselines x steps.

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        steps: quadrature nodes per path (model evaluations per image and baseline).
        method: the quadrature rule, one of ``"gauss_legendre"`` (default),
            ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``,
            ``"riemann_trapezoid"``, ``"captum_trapezoid"`` (Captum's, weights summing to
            ``(n-1)/n``) or ``"adaptive"``: nodes placed where the path score changes, within
            the same budget of ``steps`` model evaluations (see :mod:`xai_torch.path.adaptive`).
        normalize, input_range, seed: see :mod:`xai_torch.path.base`.

    Call arguments:
        baseline: where the paths start (default ``"black"``); a name, a tensor, a callable
            or a list of them (attributions averaged over the list). See
            :mod:`xai_torch.path.baselines`.

    Returns:
        ``(B, C, H, W)`` signed attributions whose sum approximates ``F(x) - F(baseline)``;
        ``explain`` returns a :class:`~xai_torch.path.PathExplanation` with the
        completeness ``delta`` and the path curve.

    Cost:
        ``steps`` forward + backward passes per image and baseline, in chunks of at most
        ``batch_size`` samples, plus one forward per image and per baseline.

    Example:
        >>> ig = xt.IntegratedGradients(model, steps=64, normalize=xt.zoo.NORMALIZE)
        >>> res = ig.explain(x, target=281, baseline="black")
        >>> res.attributions.shape, res.relative_delta       # (B, C, H, W), (B,)
    """

    def __init__(self, model, *, steps: int = 50, method: str = "gauss_legendre", normalize=None,
                 input_range=None, seed: Optional[int] = None, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, normalize=normalize, input_range=input_range, seed=seed,
                         batch_size=batch_size, progress=progress)
        self.method = check_choice(method, "method", [*RULES, "adaptive"])
        self.steps = check_positive_int(steps, "steps", minimum=2 if "trapezoid" in method else 1)
        if method == "adaptive":
            from .adaptive import MIN_STEPS

            self.steps = check_positive_int(steps, "steps", minimum=MIN_STEPS)

    def _config(self) -> dict:
        return {"steps": self.steps, "method": self.method, **super()._config()}

    def _paths(self, engine, x, k, base, generator):
        if self.method == "adaptive":
            from .adaptive import adaptive_paths

            return adaptive_paths(engine, x, k, base, self.steps)
        alphas, weights = get_rule(self.method, self.steps)
        return _line_paths(engine, x, k, base, alphas, weights)


class ExpectedGradients(PathExplainer):
    """Expected Gradients (Erion et al. 2021): IG averaged over baselines drawn from a
    background set, with one uniform path position per draw (Monte Carlo)::

        EG(x) = E_{b ~ background, a ~ U(0, 1)} [(x - b) * dF(b + a (x - b)) / dx]

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        background: ``(N, C, H, W)`` reference images in the model's input space (for
            example a few hundred training images).
        samples: draws per image (model evaluations). References are drawn without
            replacement when ``N >= samples``, else with replacement.
        seed: see :mod:`xai_torch.path.base`.

    Returns:
        ``(B, C, H, W)`` signed attributions whose sum approximates, in expectation,
        ``F(x) - E[F(b)]``; ``explain().delta`` compares it with the mean score of the drawn
        references.

    Cost:
        ``samples`` forward + backward passes per image, plus one forward per distinct
        reference drawn.

    Example:
        >>> eg = xt.ExpectedGradients(model, background=train_images[:200], samples=50, seed=0)
        >>> attr = eg(x)
    """

    call_keywords = ()

    def __init__(self, model, background: torch.Tensor, *, samples: int = 50, seed: Optional[int] = None,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, seed=seed, batch_size=batch_size, progress=progress)
        background, _ = check_input(background, "background")
        self.background = background.detach()
        self.samples = check_positive_int(samples, "samples")

    def _config(self) -> dict:
        cfg = {"background": tuple(self.background.shape), "samples": self.samples, "seed": self.seed}
        return {**cfg, "batch_size": self.batch_size, "progress": self.progress}

    def _prepare(self, x, baseline, generator):
        bg = self.background
        if bg.shape[1:] != x.shape[1:]:
            raise XaiError(f"background images have shape {tuple(bg.shape[1:])} but x has {tuple(x.shape[1:])}; "
                           "they must match.")
        return bg.to(device=x.device, dtype=x.dtype)

    def _paths(self, engine, x, k, bg, generator):
        n_bg, steps = bg.shape[0], self.samples
        r_count = x.shape[0] * k
        dev = x.device
        if n_bg >= steps:  # without replacement, independently per row
            keys = torch.rand((r_count, n_bg), generator=generator, device=dev)
            refs = keys.argsort(1)[:, :steps]
        else:
            refs = torch.randint(n_bg, (r_count, steps), generator=generator, device=dev)
        alphas = torch.rand((r_count, steps), generator=generator, device=dev, dtype=_F64)
        a = alphas.to(x.dtype)

        # F(b) of every drawn reference, for the completeness check: one forward per distinct one
        used, where = refs.unique(return_inverse=True)
        rows_all = torch.arange(r_count, device=dev).repeat_interleave(steps)

        def base_inputs(start, stop):
            q = torch.arange(start, stop, device=dev)
            return bg[refs.flatten()[q]], rows_all[q]

        if not engine.details:
            fb = None
        elif used.numel() < refs.numel() and _class_only(engine):
            fb = _class_scores(engine, bg[used], where.flatten(), rows_all)
        else:
            fb, _, _ = engine.scores(base_inputs, refs.numel())

        weights = torch.full((r_count * steps,), 1.0 / steps, dtype=_F64, device=dev)

        def points(start, stop):
            n = torch.arange(start, stop, device=dev)
            r, s = n // steps, n % steps
            xi, bi = x[r // k], bg[refs[r, s]]
            z = bi + a[r, s].view(-1, 1, 1, 1) * (xi - bi)
            return z, r, r, weights[start:stop], xi.to(_F64) - bi.to(_F64)

        run = engine.integrate(points, r_count * steps, r_count, tuple(x.shape[1:]))
        view = (r_count, 1, steps)
        fb = None if fb is None else fb.view(r_count, steps).mean(1, keepdim=True)
        return Paths(run.acc, fb, alphas.view(view),
                     run.scores.view(view), None if run.probs is None else run.probs.view(view),
                     run.grad_abs.view(view))


def _class_only(engine: Engine) -> bool:
    from ..targets import ClassTarget

    return isinstance(engine.target, ClassTarget)


def _class_scores(engine: Engine, images: torch.Tensor, which: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Class-target scores of ``images[which[n]]`` for rows ``rows[n]``, forwarding each image
    once: a class score only needs the image's output row."""
    outputs = []

    def chunk(start, stop):
        with torch.no_grad():
            out = engine.model(images[start:stop])
        engine.calls += stop - start
        if not isinstance(out, torch.Tensor):
            raise XaiError("a class target needs a model output of shape (B, num_classes).")
        outputs.append(out)
        return None

    engine._map(chunk, images.shape[0])
    out = torch.cat(outputs)
    return engine.target.scores(out[which], rows)[0]

