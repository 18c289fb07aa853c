"""Integrated Gradients (Sundararajan et al. 2017) on the shared engine.

IG integrates the gradient along the straight line from a baseline ``b`` to the image ``x``::

    IG(x; b) = (x - b) * integral_0^1 dF(b + a (x - b)) / dx da
             ~ (x - b) * sum_k w_k dF(b + a_k (x - b)) / dx

with a fixed quadrature rule (:mod:`~xai_torch.path.quadrature`) or the adaptive one
(:mod:`~xai_torch.path.adaptive`).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import XaiError, check_choice, check_positive_int, describe
from ..runner import ModelRunner
from .adaptive import MIN_STEPS, adaptive_paths
from .base import PathExplainer, Paths
from .color import COLOR_PATHS, check_color_path, color_paths
from .engine import integrate
from .layer import Layer, layer_space, record_baselines
from .line import baseline_scores, line_factor, line_points
from .quadrature import RULES, get_rule


def line_paths(runner: ModelRunner, x: torch.Tensor, k: int, base: torch.Tensor, alphas: torch.Tensor,
               weights: torch.Tensor, details: bool, fb: Optional[torch.Tensor] = None,
               multiply: bool = True) -> Paths:
    """Straight-line IG for every row (image x target) and baseline, with one shared rule
    (``fb``: the baselines' scores when the caller has them; ``multiply``: times ``x - b``)."""
    j_count, b_count = base.shape[:2]
    r_count = b_count * k
    n_paths, steps = r_count * j_count, alphas.shape[0]
    if fb is None and details:
        fb = baseline_scores(runner, base, k)
    dev = x.device
    paths = torch.arange(n_paths, device=dev).repeat_interleave(steps)
    points = line_points(x, base, k, paths, alphas.to(dev).repeat(n_paths), weights.to(dev).repeat(n_paths))
    run = integrate(runner, points, n_paths * steps, n_paths, tuple(x.shape[1:]),
                    post=lambda p: line_factor(x, base, k, p))
    for p in range(n_paths if multiply else 0):
        run.acc[p] *= line_factor(x, base, k, p)
    attr = run.acc.view(r_count, j_count, *x.shape[1:]).mean(1)

    def curve(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.view(r_count, j_count, steps)

    scores, grad = curve(run.scores), curve(run.grad_abs)
    assert scores is not None and grad is not None
    return Paths(attr, fb, alphas, scores, curve(run.probs), grad)


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
        layer: ``None`` (attribute to the input), or one layer (dotted name or module): the
            paths then run in that layer's space, from its activations for the baseline to
            those for the image (Captum ``LayerIntegratedGradients``), and the attributions
            are shaped like them (see :mod:`xai_torch.path.layer`). A list of layers gives a
            dict name -> attributions (one integration per layer, each in its own space;
            ``explain().layers`` holds each layer's explanation).
        layer_input: integrate in the space of the layer's first input instead of its output
            (Captum's ``attribute_to_layer_input=True``).
        path: ``"line"`` (default, the straight line from the baseline), ``"luminosity"``
            (CIE L* from the baseline's lightness, black by default, to the image's, the image's
            chroma kept) or ``"saturation"`` (from the image's own grey to its colours; no
            baseline): curved paths through CIE L*a*b* on the same quadratures, RGB images
            only, not with ``layer=`` or ``method="adaptive"`` (see :mod:`xai_torch.path.color`).

        multiply_by_inputs: ``True`` (default): the attributions are ``(x - b)`` times the
            integrated gradient; ``False``: the integrated gradient alone,
            ``integral_0^1 dF(b + a (x - b))/dx da`` (Captum's ``multiply_by_inputs=False``, its
            "local" attribution; with ``layer=``, in the layer's space). Completeness does not
            hold then: ``explain`` reports ``delta = relative_delta = None``. Not with a colour
            ``path``.

    Call arguments:
        baseline: where the paths start (default ``"black"``); a name, a tensor, a callable
            or a list of them (attributions averaged over the list). See
            :mod:`xai_torch.space`. For a tuple ``x`` (an image and metadata...; attributions
            are then a tuple, one per member; not with ``layer=``): a tuple with one number or
            tensor per member, or one number for all (default ``0.0``, as Captum).

    Returns:
        ``(B, C, H, W)`` signed attributions whose sum approximates ``F(x) - F(baseline)``
        (``(B, K, C, H, W)`` for ``(B, K)`` targets). With ``layer=``, shaped like the layer's
        tensor, ``(B, [K,] C', H', W')``, and completeness holds in the layer's space: they sum
        to ``F(x) - F(baseline)`` up to the quadrature error when the score depends on the
        input only through the layer. ``explain`` returns a :class:`~xai_torch.path.PathExplanation` with the
        completeness ``delta`` and the path curve.

    Cost:
        ``steps`` forward + backward passes per image and baseline, in chunks of at most
        ``batch_size`` samples, plus one forward per image and per baseline (with
        ``layer=``: the same, the forwards recording the layer's activations).

    Example:
        >>> ig = xt.IntegratedGradients(model, steps=64, normalize=xt.zoo.NORMALIZE)
        >>> res = ig.explain(x, target=281, baseline="black")
        >>> res.attributions.shape, res.relative_delta       # (B, C, H, W), (B,)
        >>> xt.IntegratedGradients(model, layer="layer4")(x, target=281).shape   # resnet18, 224 px
        torch.Size([8, 512, 7, 7])
    """

    tuple_inputs = True

    def __init__(self, model: Any, *, steps: int = 50, method: str = "gauss_legendre", normalize: Any = None,
                 input_range: Any = None, seed: Optional[int] = None, layer: Any = None, layer_input: bool = False,
                 path: str = "line", multiply_by_inputs: bool = True, batch_size: Optional[int] = None,
                 progress: Optional[bool] = None) -> None:
        super().__init__(model, normalize=normalize, input_range=input_range, seed=seed,
                         batch_size=batch_size, progress=progress)
        self._set_layers(model, layer, layer_input)
        self.method = check_choice(method, "method", [*RULES, "adaptive"])
        self.steps = check_positive_int(steps, "steps", minimum=2 if "trapezoid" in method else 1)
        if method == "adaptive":
            self.steps = check_positive_int(steps, "steps", minimum=MIN_STEPS)
        self.path = check_choice(path, "path", ["line", *COLOR_PATHS])
        if self.path != "line" and (self.layers is not None or method == "adaptive"):
            raise XaiError(f"path={path!r} runs on the input with a fixed quadrature rule: not with layer= or "
                           f"method='adaptive'.")
        if not isinstance(multiply_by_inputs, bool):
            raise XaiError(f"multiply_by_inputs must be True or False; got {describe(multiply_by_inputs)}.")
        if not multiply_by_inputs and self.path != "line":
            raise XaiError(f"multiply_by_inputs=False is for straight-line paths; path={path!r} has its own factor.")
        self.multiply_by_inputs = self.complete = multiply_by_inputs

    def _config(self) -> dict[str, Any]:
        cfg = {"steps": self.steps, "method": self.method, **self._layer_config(),
               **({} if self.multiply_by_inputs else {"multiply_by_inputs": False})}
        return {**cfg, **({"path": self.path} if self.path != "line" else {}), **super()._config()}

    def _prepare(self, x: torch.Tensor, baseline: Any, generator: Optional[torch.Generator]) -> Any:
        if self.path != "line":
            check_color_path(x, self.path, baseline)
        return super()._prepare(x, baseline, generator)

    def _paths(self, runner: ModelRunner, x: torch.Tensor, k: int, prepared: Any,
               generator: Optional[torch.Generator], details: bool, layer: Optional[Layer] = None) -> Paths:
        if self.path != "line":
            return color_paths(runner, x, k, prepared, self.path, *get_rule(self.method, self.steps), details,
                               self.normalize, self.input_range)
        if layer is None:
            return self._line(runner, x, k, prepared, details)
        with layer_space(runner, x, k, layer, self.layer_input) as (lr, a_x, swap):
            a_b, fb = record_baselines(runner, swap, prepared, k)
            return self._line(lr, a_x, k, a_b, details, fb)

    def _line(self, runner: ModelRunner, x: torch.Tensor, k: int, base: torch.Tensor, details: bool,
              fb: Optional[torch.Tensor] = None) -> Paths:
        if self.method == "adaptive":
            return adaptive_paths(runner, x, k, base, self.steps, fb, self.multiply_by_inputs)
        alphas, weights = get_rule(self.method, self.steps)
        return line_paths(runner, x, k, base, alphas, weights, details, fb, self.multiply_by_inputs)
