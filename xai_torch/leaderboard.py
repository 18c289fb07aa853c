"""The leaderboard: every method x every metric on the same images, with bootstrap confidence
intervals, model-call counts and Tomsett's reliability figures, as a markdown table and an HTML
page in the report's style (``python -m benchmarks evaluate`` runs it on the packaged model).

Each method explains the images once; the metrics that read attributions share them, the
metrics that explain again (robustness, randomisation) call the explainer themselves. A
(metric, method) cell that fails is recorded with its message and left empty, never guessed.

Example:
    >>> from xai_torch.leaderboard import evaluate, write
    >>> board = evaluate(model, x, {"gradient": xt.Gradient(model)}, ["deletion", "insertion", "sparseness"])
    >>> write(board, "out/leaderboard")       # leaderboard.md, leaderboard.html, leaderboard.json
"""
from __future__ import annotations

import html
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .errors import XaiError, XaiWarning, describe
from .files import atomic_write, check_folder
from .metrics._common import Scorer
from .metrics.catalogue import CATALOGUE, measure, resolve_metrics
from .metrics.reliability import MIN_IMAGES, MIN_METHODS, Estimate, ReliabilityResult, mean_estimate, reliability
from .metrics.stability import ModelCalls
from .report import _CSS


@dataclass
class Leaderboard:
    """What :func:`evaluate` returns.

    Attributes:
        methods, metrics: the names, in order.
        images: N.
        scores: ``scores[metric][method]`` -> ``(N,)`` float64 per-image values (missing: failed).
        estimates: ``estimates[metric][method]`` -> the mean with its bootstrap interval.
        seconds: ``seconds[method]``: explaining; ``metric_seconds[metric][method]``: that metric.
        calls: ``calls[method]``: images the model forwarded explaining; ``metric_calls[metric][method]``.
        failures: ``"metric / method"`` -> the error message.
        reliability: Tomsett's figures over the complete metrics (None: too few images or methods).
        note: why ``reliability`` is None, or which metrics it left out.
        settings: what the run was (model, device, budgets...), shown by the page.
    """

    methods: list[str]
    metrics: list[str]
    images: int
    scores: dict[str, dict[str, torch.Tensor]]
    estimates: dict[str, dict[str, Estimate]]
    seconds: dict[str, float]
    metric_seconds: dict[str, dict[str, float]]
    calls: dict[str, Optional[int]]
    metric_calls: dict[str, dict[str, Optional[int]]]
    failures: dict[str, str]
    reliability: Optional[ReliabilityResult]
    note: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def ranks(self) -> dict[str, dict[str, float]]:
        """``ranks[metric][method]``: 1 = the best mean (ties share), over the methods it scored."""
        out: dict[str, dict[str, float]] = {}
        for metric in self.metrics:
            better = CATALOGUE[metric].higher_is_better
            means = {m: e.value for m, e in self.estimates.get(metric, {}).items() if not math.isnan(e.value)}
            ordered = sorted(means.values(), reverse=better)
            out[metric] = {m: ordered.index(v) + (ordered.count(v) + 1) / 2 for m, v in means.items()}
        return out

    def mean_rank(self) -> dict[str, float]:
        """Each method's mean rank over the metrics that ranked it (lower is better)."""
        ranks = self.ranks()
        out = {}
        for m in self.methods:
            got = [r[m] for r in ranks.values() if m in r]
            out[m] = sum(got) / len(got) if got else float("nan")
        return out


def evaluate(model: Any, x: torch.Tensor, methods: Mapping[str, Any], metrics: Union[str, Sequence[str]] = "all",
             *, target: Any = None, normalize: Any = None, bootstrap: int = 1000, confidence: float = 0.95,
             seed: int = 0, overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
             log: Optional[Callable[[str], None]] = None, settings: Optional[Mapping[str, Any]] = None) -> Leaderboard:
    """Every method x every metric on ``x``.

    Args:
        model: the classifier (never modified).
        x: ``(N, C, H, W)`` images in the model's input space.
        methods: name -> explainer (an xai_torch explainer or a callable ``(x, target=) -> (N, C, H, W)``).
        metrics: catalogue names, a group or ``"all"`` (:func:`xai_torch.metrics.catalogue.resolve_metrics`).
        target: the class per image (None: the top-1 class of each image, for every method).
        normalize: the model's input normalisation (PIC's pixel space).
        bootstrap, confidence, seed: the percentile bootstrap of every interval.
        overrides: ``overrides[metric]``: keywords replacing the catalogue's cheap configuration.
        log: called with one line per step (progress).
        settings: recorded in the result (shown on the page).

    Returns:
        :class:`Leaderboard`.

    Raises:
        XaiError: no method, an unknown metric, ``x`` not ``(N, C, H, W)``.
    """
    names = resolve_metrics(metrics)
    if not isinstance(methods, Mapping) or not methods:
        raise XaiError(f"methods must be a non-empty mapping name -> explainer; got {describe(methods)}.")
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise XaiError(f"x must be a (N, C, H, W) tensor; got {describe(x)}.")
    say = log or (lambda line: None)
    if target is None:  # the top-1 class of each image, pinned for every method (model buffers kept)
        classes = Scorer(model, x, None, score="logit", name="leaderboard").classes
        target = classes.cpu() if classes is not None else None
    board = Leaderboard(list(methods), names, x.shape[0], {n: {} for n in names}, {n: {} for n in names}, {},
                        {n: {} for n in names}, {}, {n: {} for n in names}, {}, None,
                        settings=dict(settings or {}))
    for method, explainer in methods.items():
        counter = ModelCalls(model)
        start = time.perf_counter()
        try:
            with counter:
                attribution = explainer(x.clone(), target=target).detach()
        except XaiError as err:
            board.failures[f"explain / {method}"] = str(err)
            say(f"{method}: failed ({err})")
            continue
        board.seconds[method] = time.perf_counter() - start
        board.calls[method] = counter.images
        say(f"{method}: explained in {board.seconds[method]:.1f} s ({counter.images} images forwarded)")
        for metric in names:
            counter = ModelCalls(model)
            start = time.perf_counter()
            try:
                with counter, warnings.catch_warnings():
                    warnings.simplefilter("ignore", XaiWarning)
                    values = measure(metric, model, x, attribution=attribution, explainer=explainer, target=target,
                                     normalize=normalize, **dict((overrides or {}).get(metric, {})))
            except (XaiError, RuntimeError, ValueError) as err:
                board.failures[f"{metric} / {method}"] = f"{type(err).__name__}: {err}"
                say(f"  {metric}: failed ({err})")
                continue
            board.metric_seconds[metric][method] = time.perf_counter() - start
            board.metric_calls[metric][method] = counter.images
            board.scores[metric][method] = values.cpu()
            board.estimates[metric][method] = mean_estimate(values.cpu(), resamples=bootstrap, confidence=confidence,
                                                            seed=seed)
            say(f"  {metric}: {board.estimates[metric][method].value:.4g} "
                f"({board.metric_seconds[metric][method]:.1f} s)")
    _reliability(board, bootstrap, confidence, seed)
    return board


def _reliability(board: Leaderboard, bootstrap: int, confidence: float, seed: int) -> None:
    ran = [m for m in board.methods if m in board.seconds]
    complete = [k for k in board.metrics if all(m in board.scores[k] and bool(torch.isfinite(board.scores[k][m]).all())
                                                for m in ran)]
    left = [k for k in board.metrics if k not in complete]
    if board.images < MIN_IMAGES or len(ran) < MIN_METHODS or not complete:
        board.note = (f"no reliability figures: they need at least {MIN_IMAGES} images and {MIN_METHODS} methods "
                      f"with every cell scored (here {board.images} images, {len(ran)} methods, "
                      f"{len(complete)} complete metrics).")
        return
    table = {k: {m: board.scores[k][m] for m in ran} for k in complete}
    board.reliability = reliability(table, higher_is_better={k: CATALOGUE[k].higher_is_better for k in complete},
                                    bootstrap_resamples=bootstrap, confidence=confidence, seed=seed)
    if left:
        board.note = f"left out of the reliability figures (a failed or NaN cell): {', '.join(left)}."


def _num(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"


def _cell(e: Optional[Estimate]) -> str:
    return "–" if e is None else f"{_num(e.value)} [{_num(e.low)}, {_num(e.high)}]"


def to_markdown(board: Leaderboard) -> str:
    """The leaderboard as markdown: per metric and method the mean [bootstrap interval], the
    best method in bold, the mean rank; then the reliability figures and the costs."""
    ranks, mean_rank = board.ranks(), board.mean_rank()
    arrows = {True: "↑", False: "↓"}
    head = "| metric | " + " | ".join(board.methods) + " |"
    lines = [head, "|" + "---|" * (len(board.methods) + 1)]
    for k in board.metrics:
        cells = []
        for m in board.methods:
            text = _cell(board.estimates[k].get(m))
            cells.append(f"**{text}**" if ranks[k].get(m) == 1 else text)
        lines.append(f"| {k} {arrows[CATALOGUE[k].higher_is_better]} | " + " | ".join(cells) + " |")
    lines.append("| mean rank ↓ | " + " | ".join(_num(mean_rank[m], 2) for m in board.methods) + " |")
    lines.append("| seconds / calls (explaining) | "
                 + " | ".join(f"{board.seconds.get(m, float('nan')):.1f} s / {board.calls.get(m)}"
                              for m in board.methods) + " |")
    r = board.reliability
    if r is not None:
        lines += ["", "| metric | inter-rater α (ordinal) | inter-method ρ |", "|---|---|---|"]
        lines += [f"| {k} | {_cell(r.inter_rater[k])} | {_cell(r.inter_method[k])} |" for k in r.metrics]
        if r.internal_consistency is not None:
            lines += ["", f"Internal consistency (Cronbach's α over {len(r.metrics)} metrics): "
                          f"{_cell(r.internal_consistency)}."]
    if board.note:
        lines += ["", board.note]
    if board.failures:
        failed = "; ".join(f"{k}: {v.splitlines()[0][:160]}" for k, v in board.failures.items())
        lines += ["", f"Failed cells: {failed}"]
    return "\n".join(lines) + "\n"


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def to_html(board: Leaderboard, title: str = "xai_torch leaderboard") -> str:
    """The leaderboard as one self-contained HTML page (the report's CSS, no script)."""
    ranks, mean_rank = board.ranks(), board.mean_rank()
    head = "<tr><th>metric</th><th>better</th>" + "".join(f"<th>{_e(m)}</th>" for m in board.methods) + "</tr>"
    rows = []
    for k in board.metrics:
        spec = CATALOGUE[k]
        cells = []
        for m in board.methods:
            e = board.estimates[k].get(m)
            calls = board.metric_calls[k].get(m)
            tip = f"{board.metric_seconds[k].get(m, float('nan')):.2f} s, {calls} images forwarded"
            style = " style='font-weight:bold'" if ranks[k].get(m) == 1 else ""
            cells.append(f"<td class='num' title='{_e(tip)}'{style}>{_e(_cell(e))}</td>")
        rows.append(f"<tr><td title='{_e(spec.cheap)}'>{_e(k)}</td><td>{'higher' if spec.higher_is_better else 'lower'}"
                    f"</td>{''.join(cells)}</tr>")
    rows.append("<tr><td>mean rank</td><td>lower</td>" + "".join(
        f"<td class='num'>{_e(_num(mean_rank[m], 2))}</td>" for m in board.methods) + "</tr>")
    rows.append("<tr><td>explaining</td><td></td>" + "".join(
        f"<td class='num'>{board.seconds.get(m, float('nan')):.1f} s, {_e(board.calls.get(m))} images</td>"
        for m in board.methods) + "</tr>")
    parts = [f"<h1>{_e(title)}</h1>",
             '<p class="meta">' + " · ".join(f"{_e(k)}: {_e(v)}" for k, v in board.settings.items())
             + f" · {board.images} images</p>",
             "<h2>Methods × metrics: mean [bootstrap interval]</h2>",
             f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>',
             '<p class="note">Bold: the best mean. Hover a cell for its seconds and model calls, a metric for its '
             "CPU budget.</p>"]
    r = board.reliability
    if r is not None:
        rel = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_e(_cell(r.inter_rater[k]))}</td>"
                      f"<td class='num'>{_e(_cell(r.inter_method[k]))}</td></tr>" for k in r.metrics)
        parts += ["<h2>Metric reliability (Tomsett et al. 2020)</h2>",
                  "<table><tr><th>metric</th><th>inter-rater α (ordinal)</th><th>inter-method ρ</th></tr>"
                  f"{rel}</table>"]
        if r.internal_consistency is not None:
            parts.append(f"<p>Internal consistency (Cronbach's α): {_e(_cell(r.internal_consistency))}</p>")
    if board.note:
        parts.append(f'<p class="note">{_e(board.note)}</p>')
    if board.failures:
        parts.append("<h2>Failed cells</h2><ul>" + "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>"
                                                          for k, v in board.failures.items()) + "</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(parts)
            + "\n</body>\n</html>\n")


def to_json(board: Leaderboard) -> dict[str, Any]:
    """Every number of the leaderboard as plain JSON types."""
    r = board.reliability
    return {
        "methods": board.methods, "metrics": board.metrics, "images": board.images, "settings": board.settings,
        "scores": {k: {m: v.tolist() for m, v in row.items()} for k, row in board.scores.items()},
        "estimates": {k: {m: vars(e) for m, e in row.items()} for k, row in board.estimates.items()},
        "seconds": board.seconds, "metric_seconds": board.metric_seconds, "calls": board.calls,
        "metric_calls": board.metric_calls, "failures": board.failures, "mean_rank": board.mean_rank(),
        "reliability": None if r is None else {
            "metrics": r.metrics, "inter_rater": {k: vars(e) for k, e in r.inter_rater.items()},
            "inter_method": {k: vars(e) for k, e in r.inter_method.items()},
            "internal_consistency": None if r.internal_consistency is None else vars(r.internal_consistency),
            "metric_agreement": r.metric_agreement.tolist()},
        "note": board.note,
    }


def write(board: Leaderboard, out: Union[str, Path], title: str = "xai_torch leaderboard") -> list[Path]:
    """Write ``leaderboard.md``, ``leaderboard.html`` and ``leaderboard.json`` into ``out`` (created)."""
    folder = check_folder(out, "out")
    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write(folder / "leaderboard.md", to_markdown(board).encode("utf-8")),
            atomic_write(folder / "leaderboard.html", to_html(board, title).encode("utf-8")),
            atomic_write(folder / "leaderboard.json",
                         json.dumps(to_json(board), indent=1, allow_nan=True).encode("utf-8"))]




#: the leaderboard's metrics on a CPU (those that cost about a hundred forwards per image and
#: method or less; the metrics that explain again, PIC, ROAD and IROF join on a GPU)
CPU_METRICS = ("deletion", "insertion", "faithfulness_correlation", "monotonicity_arya", "monotonicity_nguyen",
               "pixel_flipping", "region_perturbation", "infidelity", "sensitivity_n", "sufficiency", "completeness",
               "average_drop", "increase_in_confidence", "sparseness", "complexity", "effective_complexity")
#: the packaged photos the leaderboard explains (at least MIN_IMAGES for the reliability figures)
IMAGES = ("chelsea", "coffee", "motorcycle")


def packaged(methods: Optional[Sequence[str]] = None, metrics: Union[str, Sequence[str], None] = None, *,
             images: Sequence[str] = IMAGES, device: Union[str, torch.device] = "cpu", demo: bool = True,
             bootstrap: int = 1000, log: Optional[Callable[[str], None]] = None) -> Leaderboard:
    """The leaderboard of the packaged EfficientNet-Lite0 on the packaged photos.

    Args:
        methods: registry names (default: the default demo's methods, ``presets.GROUPS["demo"]``).
        metrics: catalogue names or a group (default: :data:`CPU_METRICS` on a CPU, ``"all"`` on a GPU).
        images: packaged photo names; device: where it runs.
        demo: each method with its CPU budget (:attr:`~xai_torch.presets.MethodSpec.demo`).
        bootstrap: resamples of each interval; log: progress lines.

    Returns:
        :class:`Leaderboard` (its ``settings`` name the model, device, images and budgets).
    """
    from . import zoo
    from .presets import FULL_ONLY_FAMILIES, GROUPS, METHODS

    dev = torch.device(device)
    names = list(methods) if methods is not None else [m for m in GROUPS["demo"]
                                                        if METHODS[m].family not in FULL_ONLY_FAMILIES]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise XaiError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}.")
    chosen = metrics if metrics is not None else (list(CPU_METRICS) if dev.type == "cpu" else "all")
    model = zoo.efficientnet_lite0(dev)
    x = zoo.preprocess([zoo.image(n) for n in images]).to(dev)
    explainers = {m: METHODS[m].build(model, normalize=zoo.NORMALIZE, demo=demo) for m in names}
    settings = {"model": "efficientnet_lite0 (packaged)", "device": str(dev), "images": ", ".join(images),
                "budget": "each method's demo budget" if demo else "full presets", "bootstrap": bootstrap}
    return evaluate(model, x, explainers, chosen, normalize=zoo.NORMALIZE, bootstrap=bootstrap, log=log,
                    settings=settings)


__all__ = ["CPU_METRICS", "IMAGES", "Leaderboard", "evaluate", "packaged", "to_html", "to_json", "to_markdown",
           "write"]
