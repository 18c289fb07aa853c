"""``xai-torch explain --metrics``: which metrics a run computes, and the catalogue's metrics per
image x method beside the deletion / insertion curves.

``--metrics`` alone (or ``metrics=True``) keeps its old meaning: the deletion and insertion
curves. ``--metrics all``, a group (``faithfulness``, ``robustness``, ``complexity``...) or a
comma list of catalogue names (:data:`xai_torch.metrics.catalogue.CATALOGUE`) adds every named
metric with its CPU-cheap configuration; deletion / insertion, when named, are the curves at
``--metric-step``. A metric that cannot judge a method (e.g. one that needs gradients through a
perturbation method) is recorded with its reason, and the run goes on.

The summary gains, per image, ``"metrics": {metric: {method: value}}`` and, per method,
``"metrics": {metric: mean}``, plus ``summary["metric_catalogue"] = {metric: {"higher_is_better",
"family", "budget"}}`` and ``summary["metric_failures"] = {"metric / method": message}``.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, Union

import torch

from ..errors import XaiError, XaiWarning, describe
from ..metrics.catalogue import CATALOGUE, measure, resolve_metrics

#: what ``--metrics`` alone computes (the curves)
CURVES = ("deletion", "insertion")
Metrics = Union[bool, str, list[str], tuple[str, ...], None]


def plan_metrics(metrics: Metrics) -> tuple[bool, list[str]]:
    """``(curves, extra)``: whether the deletion / insertion curves run, and the other catalogue
    metrics in order. ``True`` is the curves only; ``False`` / ``None`` / ``""`` nothing.

    Raises:
        XaiError: an unknown metric name (the closest named), or a metric that needs
            ground-truth masks (the command line has none).
    """
    if metrics is None or metrics is False or (isinstance(metrics, str) and metrics.strip().lower() in ("", "none")):
        return False, []
    if metrics is True:
        return True, []
    if not isinstance(metrics, (str, list, tuple)):
        raise XaiError(f"--metrics takes 'all', a group or a comma list of metric names; got {describe(metrics)}.")
    names = resolve_metrics(metrics)
    masked = [n for n in names if "masks" in CATALOGUE[n].needs]
    if masked:
        raise XaiError(f"metric(s) {masked} need ground-truth masks, which xai-torch explain does not take; use "
                       "xt.metrics in Python for them.")
    return any(n in CURVES for n in names), [n for n in names if n not in CURVES]


def catalogue_entry(names: list[str]) -> dict[str, Any]:
    """The summary's description of the metrics it holds."""
    return {n: {"higher_is_better": CATALOGUE[n].higher_is_better, "family": CATALOGUE[n].family,
                "budget": CATALOGUE[n].cheap} for n in names}


def score_method(summary: dict[str, Any], names: list[str], method: str, model: Any, x: torch.Tensor,
                 attributions: torch.Tensor, explainer: Any, targets: torch.Tensor, image_names: list[str],
                 normalize: Any, entry: dict[str, Any]) -> None:
    """Run each of ``names`` on one method's attributions and record them in ``summary`` and the
    method's ``entry`` (a failure is recorded in ``summary["metric_failures"]``)."""
    failures = summary.setdefault("metric_failures", {})
    means = entry.setdefault("metrics", {})
    for metric in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", XaiWarning)
                values = measure(metric, model, x, attribution=attributions, explainer=explainer, target=targets,
                                 normalize=normalize).cpu()
        except (XaiError, RuntimeError, ValueError) as err:
            failures[f"{metric} / {method}"] = f"{type(err).__name__}: {err}"
            continue
        for name, v in zip(image_names, values.tolist()):
            summary["images"][name].setdefault("metrics", {}).setdefault(metric, {})[method] = round(v, 6)
        means[metric] = round(float(values.mean()), 6)


def print_table(summary: dict[str, Any], file: Any = None) -> None:
    """The catalogue metrics per image x method, one block per image (stdout by default)."""
    names = list(summary.get("metric_catalogue") or {})
    if not names:
        return
    out = file or sys.stdout
    methods = list(summary["methods"])
    width = max(len(n) for n in names) + 2
    for image, info in summary["images"].items():
        print(f"metrics of {image} (↑ higher is better, ↓ lower):", file=out)
        print(" " * (width + 2) + "".join(f"{m[:12]:>13}" for m in methods), file=out)
        for n in names:
            row = info.get("metrics", {}).get(n, {})
            arrow = "↑" if CATALOGUE[n].higher_is_better else "↓"
            cells = "".join(f"{row[m]:>13.4g}" if m in row else f"{'–':>13}" for m in methods)
            print(f"  {n + ' ' + arrow:<{width}}{cells}", file=out)
    for key, why in summary.get("metric_failures", {}).items():
        print(f"  note: {key} not computed: {why.splitlines()[0][:200]}", file=out)
    out.flush()


__all__ = ["CURVES", "catalogue_entry", "plan_metrics", "print_table", "score_method"]
