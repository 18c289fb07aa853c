"""Plots of explanation diagnostics with matplotlib (an optional extra: ``pip install xai_torch[plots]``).

* :func:`plot_path_curve`: the IG path curve of the seed chapter (figures 4-3, 4-5, 4-6): the
  target's probability (or score) along the path, and the mean gradient magnitude.
* :func:`plot_causal_curves`: deletion / insertion curves with their AUC (RISE).
* :func:`plot_randomization` / :func:`randomization_table`: the model-randomisation sanity
  check (Adebayo et al.): similarity to the intact model's map, layer by layer.

matplotlib is imported inside the functions, never at import time, and only through
``matplotlib.figure.Figure`` (no ``pyplot``): no global figure state, no GUI backend, safe
under Agg and in threads. Each function returns the ``Figure``; pass ``ax`` to draw into
your own axes. Also reachable as ``xai_torch.viz.plot_*``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch

from ..errors import XaiError, describe

if TYPE_CHECKING:  # matplotlib is an optional extra, imported on first use
    from matplotlib.figure import Figure

#: what a path curve is drawn from: an explanation with path fields, or a mapping of arrays
PathCurve = Union[Any, Mapping[str, Any]]


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.4)) -> tuple[Figure, list[Any]]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise XaiError("plots need matplotlib: pip install xai_torch[plots] (or pip install matplotlib).") from None
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def _axes(ax: Any, panels: int, nrows: int = 1) -> tuple[Figure, list[Any]]:
    """(figure, one Axes per panel): new ones, or the caller's (one Axes is shared by all panels)."""
    if ax is None:
        return _figure(ncols=panels // nrows, nrows=nrows)
    axes = list(ax) if isinstance(ax, (Sequence, np.ndarray)) else [ax] * panels
    if len(axes) != panels or not all(hasattr(a, "plot") and hasattr(a, "figure") for a in axes):
        raise XaiError(f"ax must be one matplotlib Axes or a sequence of {panels}; got {describe(ax)}.")
    return axes[0].figure, axes


def _np(t: Any) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def _named(obj: Any, cls_name: str, attrs: Sequence[str]) -> dict[str, Any]:
    """``{label: obj}`` from one result or a mapping of them, checking the fields exist."""
    items = dict(obj) if isinstance(obj, Mapping) and not all(hasattr(obj, a) for a in attrs) else {"": obj}
    if not items:
        raise XaiError(f"expected a {cls_name} or a non-empty mapping name -> {cls_name}; got an empty mapping.")
    for name, value in items.items():
        missing = [a for a in attrs if not hasattr(value, a)]
        if missing:
            raise XaiError(f"expected a {cls_name} (with {', '.join(attrs)}); {name or 'the argument'} is "
                           f"{describe(value)}, missing {', '.join(missing)}.")
    return items


# --- path curve -------------------------------------------------------------------------------------
def _path_arrays(exp: PathCurve, index: int, target: int, probability: bool) -> dict[str, Any]:
    if isinstance(exp, Mapping):
        alphas = exp.get("alphas")
        curve = exp.get("probs") if probability and exp.get("probs") is not None else exp.get("scores")
        is_prob = curve is exp.get("probs") and curve is not None
        grad = exp.get("grad")
        if alphas is None or curve is None:
            raise XaiError("a path-curve mapping needs 'alphas' and 'probs' or 'scores' (arrays (S,) or (J, S)); "
                           f"got keys {sorted(exp)}.")
        out: dict[str, Any] = {"alphas": _np(alphas), "curve": _np(curve), "grad": None if grad is None else _np(grad)}
    else:
        _named(exp, "PathExplanation", ("alphas", "path_scores", "path_grad"))
        use_probs = probability and getattr(exp, "path_probs", None) is not None
        is_prob = use_probs
        raw = {"alphas": exp.alphas, "curve": exp.path_probs if use_probs else exp.path_scores, "grad": exp.path_grad}
        if raw["curve"] is None:
            raise XaiError("this explanation has no path curve; use explain(...) rather than calling the explainer.")
        batched = raw["curve"].ndim  # (B, J, S) or (B, K, J, S)
        out = {}
        for key, t in raw.items():
            if t is None:
                out[key] = None
                continue
            t = _np(t)
            if t.ndim == batched:  # per-row tensors: pick the image (and target)
                if not -t.shape[0] <= index < t.shape[0]:
                    raise XaiError(f"index {index} is out of range for a batch of {t.shape[0]}.")
                t = t[index]
                if batched == 4:
                    t = t[target]
            out[key] = t
    curve = np.atleast_2d(out["curve"])
    alphas = np.broadcast_to(np.atleast_2d(out["alphas"]), curve.shape)
    grad = None if out["grad"] is None else np.broadcast_to(np.atleast_2d(out["grad"]), curve.shape)
    if alphas.shape[-1] != curve.shape[-1]:
        raise XaiError(f"alphas have {alphas.shape[-1]} samples but the curve has {curve.shape[-1]}.")
    return {"alphas": alphas, "curve": curve, "grad": grad, "is_prob": is_prob}


def plot_path_curve(explanation_or_arrays: Union[PathCurve, Sequence[PathCurve]], ax: Any = None, *, index: int = 0,
                    target: int = 0, probability: bool = True, labels: Optional[Sequence[str]] = None) -> Figure:
    """The path curve of a path method (seed figures 4-3, 4-5 and 4-6).

    Top: the target's softmax probability (``path_probs``; ``path_scores`` when there is none
    or ``probability=False``) against the path position ``alpha``; bottom: the mean gradient
    magnitude ``path_grad`` (figure 4-6), when available. One line per path (baseline); several
    explanations (e.g. black, white and noise baselines, figure 4-5) go in one plot.

    Args:
        explanation_or_arrays: a :class:`~xai_torch.path.PathExplanation` (from ``explain``),
            a mapping ``{"alphas", "probs" or "scores", "grad" (optional)}`` of arrays ``(S,)``
            or ``(J, S)``, or a sequence of these.
        ax: ``None`` (a new figure, two panels), one Axes (the gradient on a twin axis) or two.
        index: which image of the batch; ``target``: which of ``K`` targets per image.
        probability: plot the probability when present (else the raw score).
        labels: legend label per explanation (default none for one, ``"1", "2"...`` for more).

    Returns:
        the matplotlib ``Figure``.

    Shape:
        ``alphas`` ``(S,)`` or like ``path_scores`` ``(B, [K,] J, S)``.

    Example:
        >>> res = {b: xt.IntegratedGradients(model, steps=64).explain(x, baseline=b) for b in ("black", "white")}
        >>> viz.plot_path_curve(list(res.values()), labels=list(res)).savefig("path.png")
    """
    many = isinstance(explanation_or_arrays, (list, tuple))
    items = list(explanation_or_arrays) if many else [explanation_or_arrays]
    if not items:
        raise XaiError("plot_path_curve needs at least one explanation.")
    labels = list(labels) if labels is not None else ([str(i + 1) for i in range(len(items))] if many else [""])
    if len(labels) != len(items):
        raise XaiError(f"got {len(labels)} labels for {len(items)} explanations.")
    data = [_path_arrays(e, index, target, probability) for e in items]
    has_grad = all(d["grad"] is not None for d in data)
    if ax is None:
        fig, axes = _figure(nrows=2 if has_grad else 1, size=(5.0, 2.8))
        top, bottom = axes[0], axes[-1] if has_grad else None
    else:
        single = not isinstance(ax, (Sequence, np.ndarray))
        fig, axes = _axes(ax, 1 if single else 2)
        top = axes[0]
        bottom = (top.twinx() if single else axes[1]) if has_grad else None
    for k, (d, label) in enumerate(zip(data, labels)):
        color = f"C{k}"
        for j in range(d["curve"].shape[0]):
            name = " ".join(p for p in (label, f"path {j + 1}" if d["curve"].shape[0] > 1 else "") if p) or None
            top.plot(d["alphas"][j], d["curve"][j], color=color, alpha=1.0 if j == 0 else 0.6, label=name)
            if bottom is not None:
                twin = ax is not None and not isinstance(ax, (Sequence, np.ndarray))
                bottom.plot(d["alphas"][j], d["grad"][j], color=color, alpha=0.8, ls="--" if twin else "-")
    top.set_xlabel("alpha (baseline → image)")
    top.set_ylabel("target probability" if all(d["is_prob"] for d in data) else "target score")
    if any(d["is_prob"] for d in data):
        top.set_ylim(-0.02, 1.02)
    if bottom is not None:
        bottom.set_ylabel("mean |∂F/∂x|")
        bottom.set_xlabel("alpha (baseline → image)")
    if any(labels) or any(d["curve"].shape[0] > 1 for d in data):
        top.legend(fontsize=8)
    return fig


# --- deletion / insertion ---------------------------------------------------------------------------
def plot_causal_curves(deletion_result: Any, insertion_result: Any = None, ax: Any = None, *,
                       index: Optional[int] = None) -> Figure:
    """Deletion and insertion curves (RISE) with their AUC in the legend.

    Args:
        deletion_result: a :class:`~xai_torch.metrics.CausalCurve` (from
            ``xt.metrics.deletion``) or a mapping ``{method name: CausalCurve}`` to compare
            methods in one panel.
        insertion_result: the same for ``xt.metrics.insertion``, or ``None``.
        ax: ``None`` (a new figure, one panel per result), one Axes (everything in it;
            insertion dashed) or one Axes per result.
        index: which image; ``None``: the mean curve (and mean AUC) over the batch.

    Returns:
        the matplotlib ``Figure``.

    Shape:
        ``curve`` ``(B, n + 1)`` against ``fractions`` ``(n + 1,)``.

    Example:
        >>> d = xt.metrics.deletion(model, x, attr)
        >>> i = xt.metrics.insertion(model, x, attr)
        >>> viz.plot_causal_curves(d, i).savefig("causal.png")
    """
    groups = [_named(deletion_result, "CausalCurve", ("curve", "fractions", "auc"))]
    if insertion_result is not None:
        groups.append(_named(insertion_result, "CausalCurve", ("curve", "fractions", "auc")))
    fig, axes = _axes(ax, len(groups))
    shared = len(set(map(id, axes))) == 1 and len(groups) > 1
    for g, (group, a) in enumerate(zip(groups, axes)):
        mode = next(iter(group.values())).mode if hasattr(next(iter(group.values())), "mode") else ""
        for k, (name, res) in enumerate(group.items()):
            curve, auc, frac = _np(res.curve), _np(res.auc), _np(res.fractions)
            if curve.ndim == 1:
                curve, auc = curve[None], np.atleast_1d(auc)
            if index is None:
                y, area = curve.mean(0), float(auc.mean())
            else:
                if not -curve.shape[0] <= index < curve.shape[0]:
                    raise XaiError(f"index {index} is out of range for a batch of {curve.shape[0]}.")
                y, area = curve[index], float(auc[index])
            label = f"{name + ' ' if name else ''}{mode + ' ' if shared or not name else ''}(AUC {area:.3f})"
            a.plot(frac, y, color=f"C{k}", ls="--" if shared and g else "-", label=label)
            if len(group) == 1 and not shared:
                a.fill_between(frac, y, color=f"C{k}", alpha=0.15)
        verb = {"deletion": "deleted", "insertion": "inserted"}.get(mode, "changed")
        a.set_xlabel("fraction of pixels " + (verb if not shared else "changed"))
        a.set_ylabel("target score")
        a.set_xlim(0, 1)
        a.set_ylim(bottom=min(0.0, a.get_ylim()[0]))  # the AUC is the area down to 0: show it
        if not shared:
            a.set_title(mode.capitalize())
        a.legend(fontsize=8)
    return fig


# --- model randomisation ----------------------------------------------------------------------------
def _randomization_lines(result: Any, similarity: Optional[str], index: Optional[int]
                         ) -> tuple[list[str], dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """(layer labels, {line label: (L,) mean}, {line label: (L,) std or rerun})."""
    items = _named(result, "RandomizationResult", ("layers", "scores"))
    single = list(items) == [""]
    layers = list(next(iter(items.values())).layers)
    lines, spread, rerun = {}, {}, {}
    for name, res in items.items():
        if list(res.layers) != layers:
            raise XaiError(f"results must randomise the same layers to share a plot; {name!r} differs.")
        sims = [similarity] if similarity is not None else (list(res.scores) if single else list(res.scores)[:1])
        for sim in sims:
            if sim not in res.scores:
                raise XaiError(f"similarity {sim!r} is not in the result; it has {', '.join(res.scores)}.")
            s = np.atleast_2d(_np(res.scores[sim]))
            reruns = getattr(res, "rerun", None) or {}
            r = _np(reruns[sim]).reshape(-1) if sim in reruns else None
            if index is not None:
                if not -s.shape[0] <= index < s.shape[0]:
                    raise XaiError(f"index {index} is out of range for a batch of {s.shape[0]}.")
                s, r = s[index:index + 1], None if r is None else r[index:index + 1]
            label = sim if single else name
            lines[label] = s.mean(0)
            spread[label] = s.std(0) if s.shape[0] > 1 else None
            rerun[label] = None if r is None else float(r.mean())
    return layers, lines, {"std": spread, "rerun": rerun}


def plot_randomization(result: Any, ax: Any = None, *, similarity: Optional[str] = None,
                       index: Optional[int] = None) -> Figure:
    """Model-randomisation sanity check: similarity of each step's map to the intact model's.

    A method that passes falls towards 0 as more layers are randomised. The first point,
    "intact (rerun)", is a second explanation of the intact model (``result.rerun``): the
    similarity an unchanged model reaches, 1 for deterministic methods.

    Args:
        result: a :class:`~xai_torch.metrics.RandomizationResult` (one line per similarity),
            or a mapping ``{method name: RandomizationResult}`` (one line per method, for
            ``similarity``, default the first one).
        ax: ``None`` (a new figure) or an Axes.
        similarity: plot only this similarity (e.g. ``"spearman_abs"``).
        index: which image; ``None``: the mean over the batch, with ±1 std shaded.

    Returns:
        the matplotlib ``Figure``.

    Shape:
        ``scores[name]`` ``(B, L)`` for ``L = len(layers)`` steps.

    Example:
        >>> res = xt.metrics.model_randomization(model, xt.GradCAM(model, layer="layer4"), x)
        >>> viz.plot_randomization(res).savefig("sanity.png")
    """
    layers, lines, extra = _randomization_lines(result, similarity, index)
    fig, (a,) = _axes(ax, 1) if ax is not None else _figure(size=(max(5.0, 0.45 * len(layers) + 2), 3.8))
    x = np.arange(1, len(layers) + 1)
    for k, (label, y) in enumerate(lines.items()):
        color = f"C{k}"
        r = extra["rerun"][label]
        xs, ys = (np.r_[0, x], np.r_[r, y]) if r is not None else (x, y)
        a.plot(xs, ys, marker="o", ms=3, color=color, label=label or None)
        if extra["std"][label] is not None:
            a.fill_between(x, y - extra["std"][label], y + extra["std"][label], color=color, alpha=0.15)
    a.axhline(0, color="0.6", lw=0.8)
    if any(r is not None for r in extra["rerun"].values()):
        a.set_xticks(np.r_[0, x], ["intact (rerun)", *layers], rotation=60, ha="right", fontsize=7)
    else:
        a.set_xticks(x, list(layers), rotation=60, ha="right", fontsize=7)
    a.set_ylabel("similarity to the intact map")
    mode = getattr(next(iter(_named(result, "RandomizationResult", ("layers",)).values())), "mode", "")
    a.set_title(f"model randomisation ({mode})" if mode else "model randomisation")
    if any(lines):
        a.legend(fontsize=8)
    return fig


def randomization_table(result: Any, *, similarity: Optional[str] = None, index: Optional[int] = None,
                        digits: int = 3) -> str:
    """The model-randomisation result as a Markdown table (rows: steps; columns: similarities or methods).

    Needs no matplotlib.

    Args:
        result, similarity, index: as :func:`plot_randomization` (values are batch means when
            ``index`` is ``None``).
        digits: decimals shown.

    Returns:
        a Markdown table as a string, first row ``intact (rerun)`` when the result has reruns.

    Shape:
        ``scores[name]`` ``(B, L)`` -> ``L (+1)`` table rows.

    Example:
        >>> print(viz.randomization_table({"gradcam": res_cam, "ig": res_ig}, similarity="spearman_abs"))
    """
    layers, lines, extra = _randomization_lines(result, similarity, index)
    cols = list(lines)
    head = ["step", *[c or "similarity" for c in cols]]
    rows = []
    if any(extra["rerun"][c] is not None for c in cols):
        rows.append(["intact (rerun)", *[("" if extra["rerun"][c] is None else f"{extra['rerun'][c]:.{digits}f}")
                                         for c in cols]])
    for i, layer in enumerate(layers):
        rows.append([layer, *[f"{lines[c][i]:.{digits}f}" for c in cols]])
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def plot_channels(values: Any, ax: Any = None, *, title: Optional[str] = None, top: int = 5) -> Figure:
    """A layer attribution per channel (summed over space) as a bar chart, one bar per channel.

    Args:
        values: ``(C,)`` per-channel values, e.g. ``xt.Gradient(model, layer="layer4")(x)[0].sum((1, 2))``.
        ax: an Axes to draw into (default: a new figure).
        title: the Axes title.
        top: label the ``top`` channels of largest ``|value|`` with their index.

    Returns:
        the matplotlib ``Figure`` (bars red for positive values, blue for negative ones).

    Example:
        >>> fig = viz.plots.plot_channels(attr[0].sum((1, 2)), title="gradient at layer4")
    """
    v = _np(values).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise XaiError(f"plot_channels needs finite per-channel values; got {describe(values)}.")
    fig, (a,) = _figure(size=(float(min(16.0, 5.0 + 0.01 * v.size)), 3.0)) if ax is None else _axes(ax, 1)
    a.bar(np.arange(v.size), v, width=0.8 if v.size < 100 else 1.0,
          color=np.where(v >= 0, "#c44e52", "#4c72b0").tolist())
    a.axhline(0.0, color="black", lw=0.5)
    for c in np.argsort(-np.abs(v), kind="stable")[:max(int(top), 0)]:
        a.annotate(str(int(c)), (float(c), float(v[c])), fontsize=7, ha="center",
                   va="bottom" if v[c] >= 0 else "top")
    a.set_xlim(-0.5, v.size - 0.5)
    a.margins(y=0.12)  # room for the labels
    a.set_xlabel(f"channel ({v.size})")
    a.set_ylabel("attribution, summed over space")
    if title:
        a.set_title(title, fontsize=9)
    return fig
