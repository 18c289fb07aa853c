"""Expected Gradients (Erion et al. 2021): the expectation of the IG integrand over baselines
drawn from a background set and a uniform path position, by Monte Carlo."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import XaiError, check_input, check_positive_int, describe
from ..explainer import Explainer
from ..modelio import Packed, pack_rows
from ..runner import ModelRunner
from ..seeding import derive_seed, make_generator
from ..targets import ClassTarget, class_output
from .base import PathExplainer, Paths
from .engine import PathSamples, integrate
from .layer import Layer, layer_space, record

_F64 = torch.float64
#: the :func:`~xai_torch.seeding.derive_seed` stream of Expected Gradients' per-image draws
_STREAM = 3


def _draw(n_bg: int, steps: int, rows: int, generator: Optional[torch.Generator],
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(refs, alphas)``, each ``(rows, steps)``: background indices (without replacement,
    independently per row, when ``n_bg >= steps``; else with replacement) and float64 path
    positions in [0, 1)."""
    if n_bg >= steps:
        refs = torch.rand((rows, n_bg), generator=generator, device=device).argsort(1)[:, :steps]
    else:
        refs = torch.randint(n_bg, (rows, steps), generator=generator, device=device)
    return refs, torch.rand((rows, steps), generator=generator, device=device, dtype=_F64)


class ExpectedGradients(PathExplainer):
    """Expected Gradients (Erion et al. 2021): IG averaged over baselines drawn from a
    background set, with one uniform path position per draw (Monte Carlo)::

        EG(x) = E_{b ~ background, a ~ U(0, 1)} [(x - b) * dF(b + a (x - b)) / dx]

    Args:
        model, batch_size, progress: see :mod:`xai_torch.explainer`.
        background: ``(N, C, H, W)`` reference images in the model's input space (for
            example a few hundred training images). For a tuple ``x`` (an image and
            metadata...; not with ``layer=``): a tuple with one ``(N, *member shape)`` tensor per
            member, row ``j`` of every member making reference ``j``; the attributions are then
            a tuple, one per member.
        samples: draws per image (model evaluations). References are drawn without
            replacement when ``N >= samples``, else with replacement.
        seed: see :mod:`xai_torch.seeding`. With a seed, image ``i``'s references and path
            positions are drawn from its own generator (seed ``derive_seed(seed, 3, i)``), so its
            result does not depend on the other images of the batch nor on ``batch_size``, and
            its ``K`` targets share the same draws.
        layer: ``None`` (attribute to the input), or one layer (dotted name or module): the
            same expectation in that layer's space, ``E[(a_x - a_b) * dF/dA(a_b + a (a_x -
            a_b))]`` with ``a_x``, ``a_b`` the layer's activations for the image and for the drawn
            reference (see :mod:`xai_torch.path.layer`), shaped like them; a list of layers
            gives a dict name -> attributions (one run per layer, the same draws).
        layer_input: use the layer's first input instead of its output, the input shap's
            ``GradientExplainer((model, layer), background)`` attributes to. shap takes the same
            gradients but interpolates images and multiplies by the layer's input at the
            interpolated image instead of ``a_x - a_b``, so its values do not add up to
            ``F(x) - E[F(b)]``; these do (tested, with shap's draws replayed).

    Returns:
        ``(B, C, H, W)`` signed attributions whose sum approximates, in expectation,
        ``F(x) - E[F(b)]`` (also with ``layer=``, in the layer's space, when the score depends
        on the input only through the layer); ``explain().delta`` compares it with the mean
        score of the drawn references.

    Cost:
        ``samples`` forward + backward passes per image, plus one forward per distinct
        reference drawn (with ``layer=``: one more per image and per background image, to
        record their activations).

    Example:
        >>> eg = xt.ExpectedGradients(model, background=train_images[:200], samples=50, seed=0)
        >>> attr = eg(x)
    """

    call_keywords: tuple[str, ...] = ()
    tuple_inputs = True  # x may be (image, metadata...) with a tuple background, see Args

    def __init__(self, model: Any, background: Any, *, samples: int = 50, seed: Optional[int] = None,
                 layer: Any = None, layer_input: bool = False, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, seed=seed, batch_size=batch_size, progress=progress)
        self._set_layers(model, layer, layer_input)
        self.member_shapes: Optional[list[tuple[int, ...]]] = None
        if isinstance(background, tuple):  # one (N, ...) tensor per member of a tuple x, packed as x is
            background, self.member_shapes = pack_rows(background, "background")
        background, _ = check_input(background, "background")
        self.background: torch.Tensor = background.detach()
        self.samples = check_positive_int(samples, "samples")

    def _config(self) -> dict[str, Any]:
        cfg = {"background": tuple(self.background.shape), "samples": self.samples, "seed": self.seed}
        cfg.update(self._layer_config())
        return {**cfg, **Explainer._config(self)}

    def _packed(self, x: Any) -> Packed:
        packed = super()._packed(x)
        packed.check_rows(self.member_shapes, "background", type(self).__name__)
        return packed

    def _prepare(self, x: torch.Tensor, baseline: Any, generator: Optional[torch.Generator]) -> torch.Tensor:
        bg = self.background
        if self.member_shapes is not None and not (x.shape[1:3] == (1, 1) and bg.shape[1:] == x.shape[1:]):
            raise XaiError("ExpectedGradients: the background is a tuple (one tensor per member of a tuple x) but x "
                           "is one tensor; give x as a tuple, or a tensor background.")
        if bg.shape[1:] != x.shape[1:]:
            raise XaiError(f"background images have shape {tuple(bg.shape[1:])} but x has {tuple(x.shape[1:])}; "
                           "they must match.")
        return bg.to(device=x.device, dtype=x.dtype)

    def _paths(self, runner: ModelRunner, x: torch.Tensor, k: int, prepared: Any,
               generator: Optional[torch.Generator], details: bool, layer: Optional[Layer] = None) -> Paths:
        bg = prepared
        n_bg, steps = bg.shape[0], self.samples
        r_count = x.shape[0] * k
        dev = x.device
        if self.seed is None:  # torch's global RNG: every row drawn at once
            refs, alphas = _draw(n_bg, steps, r_count, None, dev)
        else:  # image i's draws depend on (seed, i) alone; its K targets share them
            draws = [_draw(n_bg, steps, 1, make_generator(derive_seed(self.seed, _STREAM, i), dev), dev)
                     for i in range(x.shape[0])]
            refs = torch.cat([d[0] for d in draws]).repeat_interleave(k, 0)
            alphas = torch.cat([d[1] for d in draws]).repeat_interleave(k, 0)

        # F(b) of every drawn reference, for the completeness check: one forward per distinct one
        used, where = torch.unique(refs, return_inverse=True)
        rows_all = torch.arange(r_count, device=dev).repeat_interleave(steps)

        def base_inputs(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            q = torch.arange(start, stop, device=dev)
            return bg[refs.flatten()[q]], rows_all[q]

        fb: Optional[torch.Tensor] = None
        if details and used.numel() < refs.numel() and isinstance(runner.target, ClassTarget):
            fb = _class_scores(runner, runner.target, bg[used], where.flatten(), rows_all)
        elif details:
            fb = runner.scores(base_inputs, refs.numel()).scores

        if layer is None:
            return _integrate(runner, x, bg, k, refs, alphas, fb)
        with layer_space(runner, x, k, layer, self.layer_input) as (lr, a_x, swap):
            return _integrate(lr, a_x, record(runner, swap, bg, per_image=False), k, refs, alphas, fb)


def _integrate(runner: ModelRunner, x: torch.Tensor, bg: torch.Tensor, k: int, refs: torch.Tensor,
               alphas: torch.Tensor, fb: Optional[torch.Tensor]) -> Paths:
    """The Monte Carlo sum for rows with references ``refs`` ``(R, S)`` (indices into ``bg``) and
    path positions ``alphas`` ``(R, S)``, in the space of ``x`` and ``bg`` (images, or a layer's
    activations with a layer runner)."""
    r_count, steps = refs.shape
    dev = x.device
    a = alphas.to(x.dtype)
    weights = torch.full((r_count * steps,), 1.0 / steps, dtype=_F64, device=dev)
    ones = [1] * (x.ndim - 1)

    def points(start: int, stop: int) -> PathSamples:
        n = torch.arange(start, stop, device=dev)
        r, s = n // steps, n % steps
        xi, bi = x[r // k], bg[refs[r, s]]
        z = bi + a[r, s].view(-1, *ones) * (xi - bi)
        return PathSamples(z, r, r, weights[start:stop], xi.to(_F64) - bi.to(_F64))

    run = integrate(runner, points, r_count * steps, r_count, tuple(x.shape[1:]))
    view = (r_count, 1, steps)
    fb = None if fb is None else fb.view(r_count, steps).mean(1, keepdim=True)
    return Paths(run.acc, fb, alphas.view(view),
                 run.scores.view(view), None if run.probs is None else run.probs.view(view),
                 run.grad_abs.view(view))


def _class_scores(runner: ModelRunner, target: ClassTarget, images: torch.Tensor, which: torch.Tensor,
                  rows: torch.Tensor) -> torch.Tensor:
    """Class-target scores of ``images[which[n]]`` for rows ``rows[n]``, forwarding each image
    once: a class score only needs the image's output row."""

    def chunk(start: int, stop: int) -> torch.Tensor:
        out = class_output(runner.forward(images[start:stop]))  # a dict / object: its logits
        if not isinstance(out, torch.Tensor):
            raise XaiError("a class target needs a model output of shape (B, num_classes) (or a dict / object "
                           f"with such `logits`); this model returned a {describe(out)}. Pick the scores with "
                           "select_output=.")
        return out

    out = torch.cat(runner.map(chunk, images.shape[0]))
    return target.scores(out[which], rows)[0]
