"""What the path explainers share: the result type, baselines in pixel space, seeding, and
the steps of a call (score ``x``, pin the targets, integrate, check completeness).

Constructor arguments shared by the path explainers (besides ``model``, ``batch_size``,
``progress``, see :mod:`xai_torch.explainer`):

Args:
    normalize: ``(mean, std)`` of the model's input normalisation for pixels in ``[0, 1]``
        (numbers or one per channel), so that ``"black"`` and ``"white"`` baselines are black
        and white. For the packaged model: ``xt.zoo.NORMALIZE``.
    input_range: ``(lo, hi)``: the model-space values of black and white, instead of
        ``normalize``. Without either, each image's own min and max are used.
    seed: seed of the random draws (stochastic baselines, noise, background samples); the
        same seed repeats bit-for-bit on the same device. ``None`` uses torch's global RNG.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from ..explainer import Explainer, Explanation
from ..hooks import HookSession
from ..runner import ModelRunner, result_dtype
from ..seeding import check_seed, make_generator
from ..space import check_baselines, check_space, make_baselines, value_range
from ..targets import ClassTarget, Target
from .layer import Layer, check_layers


@dataclass
class PathExplanation(Explanation):
    """:class:`~xai_torch.explainer.Explanation` of a path method (from ``explain``; calling
    the explainer skips the forwards that only ``scores``, ``delta`` and ``baseline_scores`` need).

    Attributes:
        delta: ``(B,)`` (or ``(B, K)``) completeness error, signed:
            ``sum(attributions) - (F(x) - mean_j F(b_j))``.
        relative_delta: ``|delta| / |F(x) - mean_j F(b_j)|``.
        baseline_scores: ``(B, [K,] J)`` target score ``F(b_j)`` of each of the J baselines
            (the start of each path).
        alphas: path positions of the samples: ``(S,)`` when every path uses the same ones,
            else ``(B, [K,] J, S)``.
        path_scores: ``(B, [K,] J, S)`` target score at every sample of every path.
        path_probs: the same for the softmax probability of the target class (``None`` for
            targets that are not classes): the curve of the IG chapter's figures 4-3 and 4-5.
        path_grad: ``(B, [K,] J, S)`` mean ``|dF/dx|`` at every sample (figure 4-6).
        model_calls: samples the model evaluated (forward, or forward + backward).
        layers: for a list of layers (``layer=[...]``), each layer's own explanation, by name
            (``attributions`` is then a dict name -> tensor and the per-path fields are
            ``None`` here); else ``None``.
    """

    delta: Optional[torch.Tensor] = None
    relative_delta: Optional[torch.Tensor] = None
    baseline_scores: Optional[torch.Tensor] = None
    alphas: Optional[torch.Tensor] = None
    path_scores: Optional[torch.Tensor] = None
    path_probs: Optional[torch.Tensor] = None
    path_grad: Optional[torch.Tensor] = None
    model_calls: int = 0
    layers: Optional[dict[str, PathExplanation]] = None


@dataclass
class Paths:
    """What a path method computes for the ``R = B * K`` rows and ``J`` paths per row."""

    attributions: torch.Tensor  # (R, C, H, W) float64, averaged over the J paths
    baseline_scores: Optional[torch.Tensor]  # (R, J), None when the call does not report them
    alphas: torch.Tensor  # (S,) or (R, J, S)
    scores: torch.Tensor  # (R, J, S)
    probs: Optional[torch.Tensor]  # (R, J, S)
    grad: torch.Tensor  # (R, J, S)


class PathExplainer(Explainer):
    """Base of the IG family. A variant implements :meth:`_paths`."""

    call_keywords: tuple[str, ...] = ("baseline",)
    #: the baseline used when the call gives none.
    default_baseline: Any = "black"
    #: the layers of ``layer=`` (``None``: the input) and whether they were given as a list
    layers: Optional[list[Layer]] = None
    layer_list = False
    #: whether the attributions sum to ``F(x) - F(b)`` (completeness), so that ``delta`` is defined
    complete = True

    def __init__(self, model: Any, *, normalize: Any = None, input_range: Any = None, seed: Optional[int] = None,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        super().__init__(model, batch_size=batch_size, progress=progress)
        self.normalize, self.input_range = check_space(normalize, input_range)
        self.seed = check_seed(seed)

    def _config(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "input_range": self.input_range, "seed": self.seed,
                **super()._config()}

    def baselines(self, x: torch.Tensor, baseline: Any = None,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The baselines this explainer would use for ``x``: ``(J, B, C, H, W)``."""
        specs = check_baselines(self.default_baseline if baseline is None else baseline)
        x4 = x if x.ndim == 4 else x[None]
        lo, hi = value_range(x4, self.normalize, self.input_range)
        return make_baselines(specs, x4, lo, hi, generator)

    def _prepare(self, x: torch.Tensor, baseline: Any, generator: Optional[torch.Generator]) -> Any:
        """Build and check what the path needs before any model call (the baselines)."""
        return self.baselines(x, baseline, generator)

    def _paths(self, runner: ModelRunner, x: torch.Tensor, k: int, prepared: Any,
               generator: Optional[torch.Generator], details: bool, layer: Optional[Layer] = None) -> Paths:
        """The paths of every row; ``details``: whether the call reports baseline scores;
        ``layer``: the layer whose space they run in (``None``: the input)."""
        raise NotImplementedError

    def _set_layers(self, model: Any, layer: Any, layer_input: Any) -> None:
        """Check and keep ``layer=`` / ``layer_input=``."""
        self.layers = check_layers(model, layer, layer_input, type(self).__name__)
        self.layer_list = self.layers is not None and not isinstance(layer, (str, nn.Module))
        self.layer_input = bool(layer_input)

    def _layer_config(self) -> dict[str, Any]:
        if self.layers is None:
            return {}
        names = [n for n, _ in self.layers]
        return {"layer": names if self.layer_list else names[0], **({"layer_input": True} if self.layer_input else {})}

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 baseline: Any = None, **kwargs: Any) -> PathExplanation:
        if self.layers is None or not self.layer_list:
            return self._explain_one(x, target, details, baseline, None if self.layers is None else self.layers[0])
        # a list of layers: one path integration per layer, each in its own space
        parts = {name: self._explain_one(x, target, details, baseline, (name, m)) for name, m in self.layers}
        first = next(iter(parts.values()))
        return PathExplanation(attributions={n: p.attributions for n, p in parts.items()},  # type: ignore[arg-type]
                               targets=first.targets, scores=first.scores, layers=parts,
                               model_calls=sum(p.model_calls for p in parts.values()))

    def _explain_one(self, x: torch.Tensor, target: Target, details: bool, baseline: Any,
                     layer: Optional[Layer]) -> PathExplanation:
        runner = self.runner(x, target)
        xd = runner.place(x)
        generator = make_generator(self.seed, runner.device)
        prepared = self._prepare(xd, baseline, generator)  # bad baselines fail before any model call
        fx = classes = None
        if details or (isinstance(target, ClassTarget) and target.classes is None):
            target, fx, classes, _ = runner.pin(xd, target)
        k = target.k or 1
        paths = self._paths(runner, xd, k, prepared, generator, details, layer)

        dtype = result_dtype(x)
        b = x.shape[0]
        shape = (b, target.k) if target.k is not None else (b,)

        def out(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.reshape(*shape, *t.shape[1:]).to(device=x.device, dtype=dtype)

        attr = paths.attributions
        delta = relative = None
        if fx is not None and paths.baseline_scores is not None and self.complete:
            gap = fx.double() - paths.baseline_scores.double().mean(1)
            delta = attr.flatten(1).sum(1) - gap
            # x == baseline (a constant image and its own min as "black"): 0 when delta is 0 too
            relative = torch.where(gap != 0, delta.abs() / gap.abs(),
                                   torch.where(delta == 0, torch.zeros_like(delta), torch.full_like(delta, math.inf)))
        alphas = paths.alphas if paths.alphas.ndim == 1 else out(paths.alphas)
        attributions = out(attr)
        assert alphas is not None and attributions is not None
        return PathExplanation(
            attributions=attributions, targets=None if classes is None else classes.reshape(shape).to(x.device),
            scores=out(fx), delta=out(delta), relative_delta=out(relative),
            baseline_scores=out(paths.baseline_scores), alphas=alphas.to(x.device),
            path_scores=out(paths.scores), path_probs=out(paths.probs), path_grad=out(paths.grad),
            model_calls=runner.calls,
        )
