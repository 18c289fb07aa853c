"""The registry of every metric: what it needs, which way is better, a CPU-cheap configuration,
and one way to call it that gives one float64 value per image.

:data:`CATALOGUE` maps a metric's name to its :class:`MetricSpec`; :func:`measure` runs one on
a batch (with the attributions already computed, and the explainer for the metrics that
explain again) and reads the per-image value of its result; :func:`available` says which
metrics a setting can run (no ground-truth masks: the localisation metrics are left out).
The leaderboard (``python -m benchmarks evaluate``) and ``xai-torch explain --metrics`` use it.

Example:
    >>> from xai_torch.metrics.catalogue import CATALOGUE, measure
    >>> CATALOGUE["deletion"].higher_is_better
    False
    >>> measure("deletion", model, x, attribution=maps, explainer=g)      # (B,) float64
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import XaiError, closest_names, describe

#: what a metric can need: the model, the attributions, the explainer (to explain again, e.g.
#: on noisy or shifted images or a randomised model), ground-truth masks, the input space
NEEDS = ("model", "attribution", "explainer", "masks", "space")
#: how a metric function is called (its positional arguments)
STYLES = {
    "attribution": "fn(model, x, attribution, target, **kw)",
    "explainer": "fn(explainer, x, target, model=model, **kw)",
    "model_explainer": "fn(model, explainer, x, target, **kw)",
    "model_x_explainer": "fn(model, x, explainer, target, attribution=attribution, **kw)",
    "map": "fn(attribution, **kw)",
    "masks": "fn(attribution, masks, **kw)",
}
Config = Callable[[int, int], dict[str, Any]]


def _none(h: int, w: int) -> dict[str, Any]:
    return {}


def _steps(points: int, key: str = "step") -> Config:
    """``key`` = pixels per step for about ``points`` points on an ``h x w`` map."""
    return lambda h, w: {key: max(1, math.ceil(h * w / points))}


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the catalogue.

    Attributes:
        name: the catalogue name (``"deletion"``, ``"pic_sic"``).
        function: the function's name in ``xai_torch.metrics``.
        style: how it is called (a key of :data:`STYLES`).
        read: the per-image field of its result (dotted: ``"sensitivity.spearman"``; ``""``: the
            result is the ``(B,)`` tensor); a ``(B, n)`` field is averaged over its last dim.
        higher_is_better: the direction of a better explanation.
        family: faithfulness, robustness, complexity, localisation, randomisation or stability.
        needs: a subset of :data:`NEEDS`.
        config: ``(H, W) -> keywords``: a CPU-cheap configuration (fewer steps / samples than the
            paper's, named in :attr:`cheap`).
        cheap: that configuration in words.
        fixed: keywords always passed (``kind="aic"``).
    """

    name: str
    function: str
    style: str
    read: str
    higher_is_better: bool
    family: str
    needs: tuple[str, ...]
    config: Config = field(default=_none, repr=False)
    cheap: str = "the function's defaults"
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def keywords(self, h: int, w: int, **overrides: Any) -> dict[str, Any]:
        """The keywords :func:`measure` passes for ``h x w`` images."""
        return {**self.fixed, **self.config(h, w), **overrides}


_A = ("model", "attribution")
_E = ("model", "explainer")
_SPECS = (
    # faithfulness: remove or keep the relevant pixels and watch the score
    MetricSpec("deletion", "deletion", "attribution", "auc", False, "faithfulness", _A, _steps(16),
               "16 steps"),
    MetricSpec("insertion", "insertion", "attribution", "auc", True, "faithfulness", _A, _steps(16), "16 steps"),
    MetricSpec("pic_sic", "pic", "attribution", "auc", True, "faithfulness", _A + ("space",),
               lambda h, w: {"thresholds": (0.01, 0.05, 0.2, 0.5), "min_pred_value": 0.0, "workers": 1},
               "4 thresholds, every image kept", {"kind": "sic"}),
    MetricSpec("pic_aic", "pic", "attribution", "auc", True, "faithfulness", _A + ("space",),
               lambda h, w: {"thresholds": (0.01, 0.05, 0.2, 0.5), "min_pred_value": 0.0, "workers": 1},
               "4 thresholds, every image kept", {"kind": "aic"}),
    MetricSpec("road", "road", "attribution", "combined", True, "faithfulness", _A,
               lambda h, w: {"fractions": (0.2, 0.5, 0.8)}, "3 fractions"),
    MetricSpec("infidelity", "infidelity", "attribution", "infidelity", False, "faithfulness", _A,
               lambda h, w: {"samples": 8}, "8 perturbations"),
    MetricSpec("sensitivity_n", "sensitivity_n", "attribution", "correlation", True, "faithfulness", _A,
               lambda h, w: {"n": max(1, h * w // 10), "subsets": 16}, "n = a tenth of the pixels, 16 subsets"),
    MetricSpec("completeness", "completeness", "attribution", "relative", False, "faithfulness", _A),
    MetricSpec("average_drop", "average_drop", "attribution", "", False, "faithfulness", _A),
    MetricSpec("increase_in_confidence", "increase_in_confidence", "attribution", "", True, "faithfulness", _A),
    MetricSpec("arcc", "arcc", "model_x_explainer", "arcc", True, "faithfulness", _A + ("explainer",)),
    MetricSpec("faithfulness_correlation", "faithfulness_correlation", "attribution", "correlation", True,
               "faithfulness", _A, lambda h, w: {"runs": 10, "subset_size": max(1, h * w // 20)},
               "10 runs of a twentieth of the pixels"),
    MetricSpec("monotonicity_arya", "monotonicity_arya", "attribution", "fraction", True, "faithfulness", _A,
               _steps(16, "features_in_step"), "16 steps"),
    MetricSpec("monotonicity_nguyen", "monotonicity_nguyen", "attribution", "correlation", True, "faithfulness", _A,
               lambda h, w: {"samples": 4, "features_in_step": max(1, math.ceil(h * w / 16))},
               "16 steps, 4 samples each"),
    MetricSpec("pixel_flipping", "pixel_flipping", "attribution", "auc", False, "faithfulness", _A,
               _steps(16, "features_in_step"), "16 steps"),
    MetricSpec("region_perturbation", "region_perturbation", "attribution", "aopc", True, "faithfulness", _A,
               lambda h, w: {"patch_size": max(1, min(h, w) // 8), "regions": 10}, "10 regions of 1/8 side"),
    MetricSpec("irof", "irof", "attribution", "score", True, "faithfulness", _A),
    MetricSpec("sufficiency", "sufficiency", "attribution", "sufficiency", True, "faithfulness", _A),
    # robustness: explain again near x
    MetricSpec("max_sensitivity", "max_sensitivity", "explainer", "max_sensitivity", False, "robustness", _E,
               lambda h, w: {"samples": 3}, "3 noisy copies"),
    MetricSpec("local_lipschitz_estimate", "local_lipschitz_estimate", "explainer", "", False, "robustness", _E,
               lambda h, w: {"samples": 3}, "3 noisy copies"),
    MetricSpec("relative_input_stability", "relative_input_stability", "explainer", "stability", False,
               "robustness", _E, lambda h, w: {"samples": 3}, "3 noisy copies"),
    MetricSpec("relative_output_stability", "relative_output_stability", "explainer", "stability", False,
               "robustness", _E, lambda h, w: {"samples": 3}, "3 noisy copies"),
    MetricSpec("relative_representation_stability", "relative_representation_stability", "explainer", "stability",
               False, "robustness", _E, lambda h, w: {"samples": 3}, "3 noisy copies"),
    MetricSpec("input_invariance", "input_invariance", "model_explainer", "relative_change", False, "robustness",
               _E),
    MetricSpec("fragility", "fragility", "model_explainer", "topk_intersection", True, "robustness", _E,
               lambda h, w: {"steps": 3}, "3 attack steps"),
    MetricSpec("stability", "stability", "explainer", "sensitivity.spearman", True, "stability", _E,
               lambda h, w: {"seeds": None, "copies": 1, "bootstrap": 100}, "1 noisy copy (same seed)"),
    # complexity of the map itself
    MetricSpec("sparseness", "sparseness", "map", "", True, "complexity", ("attribution",)),
    MetricSpec("complexity", "complexity", "map", "", False, "complexity", ("attribution",)),
    MetricSpec("effective_complexity", "effective_complexity", "map", "", False, "complexity", ("attribution",)),
    # randomisation: the map should change with the model / the class
    MetricSpec("model_randomization", "model_randomization", "model_explainer", "scores.spearman", False,
               "randomisation", _E, lambda h, w: {"mode": "independent", "similarity": ("spearman",), "rerun": False},
               "each layer randomised alone, Spearman"),
    MetricSpec("random_logit", "random_logit", "explainer", "similarity", False, "randomisation", _E),
    # localisation: needs ground-truth masks
    MetricSpec("pointing_game", "pointing_game", "masks", "hit", True, "localisation", ("attribution", "masks")),
    MetricSpec("relevance_mass", "relevance_mass", "masks", "score", True, "localisation", ("attribution", "masks")),
    MetricSpec("relevance_rank", "relevance_rank", "masks", "score", True, "localisation", ("attribution", "masks")),
    MetricSpec("top_k_intersection", "top_k_intersection", "masks", "", True, "localisation",
               ("attribution", "masks"), lambda h, w: {"k": max(1, h * w // 10)}, "k = a tenth of the pixels"),
    MetricSpec("auc", "auc", "masks", "", True, "localisation", ("attribution", "masks")),
    # masks = the (B, 4) quadrant labels of xt.metrics.make_mosaics
    MetricSpec("focus", "focus", "masks", "", True, "localisation", ("attribution", "masks"),
               cheap="on mosaics (make_mosaics): masks are the quadrant labels"),
)

#: metric name -> its record
CATALOGUE: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
#: ``all``: every metric that needs no ground-truth masks; ``faithfulness``, ``robustness``,
#: ``complexity_metrics``...: by family
GROUPS: dict[str, list[str]] = {
    "all": [n for n, s in CATALOGUE.items() if "masks" not in s.needs],
    # a family named like a metric (complexity, stability) is the group ``<family>_metrics``
    **{f if f not in CATALOGUE else f"{f}_metrics": [n for n, s in CATALOGUE.items() if s.family == f]
       for f in dict.fromkeys(s.family for s in _SPECS)},
}


def function_of(spec: MetricSpec) -> Callable[..., Any]:
    """The metric function (from ``xai_torch.metrics``; None-safe for metrics not yet exported)."""
    from .. import metrics

    fn = getattr(metrics, spec.function, None)
    if not callable(fn):
        raise XaiError(f"metric {spec.name!r} needs xai_torch.metrics.{spec.function}, which this version lacks.")
    return fn  # type: ignore[no-any-return]


def installed() -> list[str]:
    """The catalogue's metrics whose function this version of ``xai_torch.metrics`` exports."""
    from .. import metrics

    return [n for n, s in CATALOGUE.items() if callable(getattr(metrics, s.function, None))]


def available(*, masks: bool = False, explainer: bool = True) -> list[str]:
    """Metrics that can run with what is at hand: ground-truth ``masks`` or not, an explainer
    to call again or only attributions."""
    have = {"model", "attribution", "space"} | ({"masks"} if masks else set()) | ({"explainer"} if explainer else set())
    return [n for n in installed() if set(CATALOGUE[n].needs) <= have]


def resolve_metrics(names: Any) -> list[str]:
    """``"all"``, a group, or a comma list of names -> catalogue names, in order, once each.

    Raises:
        XaiError: an unknown name (the closest known names suggested).
    """
    words = names.split(",") if isinstance(names, str) else list(names) if isinstance(names, Iterable) else None
    if words is None:
        raise XaiError(f"metrics must be 'all', a group or a comma list of names; got {describe(names)}.")
    out: list[str] = []
    for raw in words:
        w = str(raw).strip().lower().replace("-", "_")
        if not w:
            continue
        if w in CATALOGUE:  # a metric's own name first
            out.append(w)
        elif w in GROUPS:
            out += GROUPS[w]
        else:
            close = closest_names(w, list(CATALOGUE), n=3)
            raise XaiError(f"unknown metric {raw!r}; choose from {', '.join(CATALOGUE)} or a group "
                           f"({', '.join(GROUPS)}).{' Did you mean ' + ', '.join(close) + '?' if close else ''}")
    if not out:
        raise XaiError(f"no metric named in {names!r}.")
    return list(dict.fromkeys(out))


def read_field(result: Any, path: str) -> torch.Tensor:
    """The per-image value ``(B,)`` float64 at ``path`` of a metric's result."""
    value = result
    for part in filter(None, path.split(".")):
        value = value[part] if isinstance(value, Mapping) else getattr(value, part)
    if isinstance(value, tuple):  # PIC with kind="both"
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise XaiError(f"the metric's result has no per-image tensor at {path!r}; got {describe(value)}.")
    v = value.detach().double()
    if v.ndim == 2:  # per image x step / layer / n: the mean
        v = v.mean(1)
    return v


def measure(name: str, model: Any, x: torch.Tensor, *, attribution: Any = None, explainer: Any = None,
            target: Any = None, masks: Any = None, normalize: Any = None, **overrides: Any) -> torch.Tensor:
    """Run catalogue metric ``name`` with its CPU-cheap configuration and return one value per image.

    Args:
        name: a key of :data:`CATALOGUE`.
        model, x, target: see :mod:`xai_torch.metrics._common`.
        attribution: the ``(B, C, H, W)`` attributions of ``explainer`` on ``x`` (computed once
            and shared by the metrics that read them).
        explainer: the explainer, for the metrics that explain again.
        masks: ``(B, H, W)`` ground-truth masks for the localisation metrics.
        normalize: the model's input normalisation, for the metrics that need the pixel space (PIC).
        **overrides: keywords that replace the cheap configuration's.

    Returns:
        ``(B,)`` float64 (see :attr:`MetricSpec.higher_is_better` for the direction).

    Raises:
        XaiError: an unknown metric, or one whose needs are not given (named).
    """
    if name not in CATALOGUE:
        raise XaiError(f"unknown metric {name!r}; choose from {', '.join(CATALOGUE)}.")
    spec = CATALOGUE[name]
    given = {"model": model, "attribution": attribution, "explainer": explainer, "masks": masks}
    missing = [n for n in spec.needs if n in given and given[n] is None]
    if missing:
        raise XaiError(f"metric {name!r} needs {' and '.join(missing)}.")
    fn = function_of(spec)
    h, w = x.shape[-2:]
    kw = spec.keywords(h, w, **overrides)
    if "space" in spec.needs:
        kw.setdefault("normalize", normalize)
    params = inspect.signature(fn).parameters
    if spec.style == "attribution":
        out = fn(model, x, attribution, target, **kw)
    elif spec.style == "explainer":
        out = fn(explainer, x, target, **({"model": model} if "model" in params else {}), **kw)
    elif spec.style == "model_explainer":
        out = fn(model, explainer, x, target, **kw)
    elif spec.style == "model_x_explainer":
        out = fn(model, x, explainer, target, attribution=attribution, **kw)
    elif spec.style == "map":
        out = fn(attribution, **kw)
    else:
        out = fn(attribution, masks, **kw)
    return read_field(out, spec.read).to(x.device)


def directions(names: Iterable[str]) -> dict[str, bool]:
    """``higher_is_better`` of each metric (for :func:`xai_torch.metrics.reliability`)."""
    return {n: CATALOGUE[n].higher_is_better for n in names}


__all__ = ["CATALOGUE", "GROUPS", "NEEDS", "STYLES", "MetricSpec", "available", "directions", "function_of",
           "installed", "measure", "read_field", "resolve_metrics"]

