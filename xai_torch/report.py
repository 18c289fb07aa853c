"""The HTML report of ``xai-torch demo`` / ``xai-torch explain``: one self-contained folder.

:func:`write_report` turns the summary the command line builds (also written as
``summary.json``) into ``report.html`` next to the PNGs it shows: inline CSS, relative image
paths, no script and no external resource, so the folder can be copied, zipped or opened from
disk in any browser. With matplotlib installed (the ``plots`` extra) it adds two small plots:
seconds per method and the mean deletion / insertion curves.

The summary (see :func:`xai_torch.cli.explain_images`)::

    {"command": "demo", "model": "efficientnet_lite0", "weights": "packaged", "device": "cpu",
     "layer": "_conv_head", "target": "top", "metrics": {"step": 1792, ...} or None,
     "budget": "demo" or None, "estimate_seconds": 85.0, "wall_seconds": 80.2,
     "images": {name: {"file": ..., "input": "name.png", "grid": "name_grid.png", "target": 282,
                       "predictions": [{"class": 282, "label": "tiger cat", "probability": 0.53}, ...],
                       "overlays": {method: "name_method.png"},
                       "deletion_auc": {method: float}, "insertion_auc": {method: float}}},
     "methods": {method: {"kind": "map", "family": "cam", "seconds": 1.2, "seconds_per_image": 0.6,
                          "estimate_seconds": 1.0, "budget": "16 steps (full: 64)" (demo only),
                          "deletion_auc_mean": float, "insertion_auc_mean": float,
                          "fractions": [...], "deletion_curve_mean": [...], "insertion_curve_mean": [...]}},
     "layer_attribution" (with --layer-attribution only): {"layer": "layer4", "methods": [...],
         "shape": [512, 7, 7], "matplotlib": True, "note": None or why the charts are missing,
         "seconds": {method: float}, "images": {name: {method: {"channels": [...], "top_channels": [[c, v], ...],
         "chart": "name_method_layer_channels.png" or None, "map": "name_method_layer_map.png" or None,
         "map_shape": [7, 7] or None}}}}}
"""
from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import quote

from .errors import XaiError, describe
from .files import atomic_write, check_folder

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
table.grid td { padding: 2px; text-align: center; font-size: 0.75em; }
table.grid img { width: 150px; height: 150px; display: block; }
table.grid th { position: sticky; top: 0; font-size: 0.8em; }
.cards { display: flex; flex-wrap: wrap; gap: 1.2em; }
.card { border: 1px solid #ddd; padding: 0.6em; border-radius: 4px; }
.card img { width: 160px; height: 160px; display: block; margin-bottom: 0.4em; }
.plots img { max-width: 48%; min-width: 320px; }
.note { color: #666; font-size: 0.85em; }
.layer img { display: block; margin-bottom: 0.3em; }
.layer img.map { width: 160px; height: 160px; image-rendering: pixelated; }
.layer img.chart { max-width: 520px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _src(path: str) -> str:
    return _e(quote(str(path)))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _img(path: str, alt: str, title: Optional[str] = None) -> str:
    t = f' title="{_e(title)}"' if title else ""
    return f'<img src="{_src(path)}" alt="{_e(alt)}"{t}>'


def _header(summary: dict[str, Any]) -> str:
    images, methods = summary.get("images", {}), summary.get("methods", {})
    weights = summary.get("weights")
    target = summary.get("target", "top")
    parts = [
        f"model <b>{_e(summary.get('model', '?'))}</b>",
        f"weights {_e(weights if weights else 'none (random initialisation)')}",
        f"device {_e(summary.get('device', '?'))}",
        f"{len(images)} image(s) × {len(methods)} method(s)",
        "target: the top-1 class of each image" if target == "top" else f"target: class {_e(target)}",
    ]
    if summary.get("layer"):
        parts.append(f"CAM layer <code>{_e(summary['layer'])}</code>")
    if summary.get("wall_seconds") is not None:
        parts.append(f"wall time {_fmt(summary['wall_seconds'], 1)} s (estimated beforehand: "
                     f"{_fmt(summary.get('estimate_seconds'), 0)} s of model time)")
    if summary.get("budget") == "demo":
        parts.append("each slow method with its CPU budget (named in the methods table)")
    return f'<p class="meta">{" · ".join(parts)}</p>'


def _grid(summary: dict[str, Any]) -> str:
    images, methods = summary["images"], list(summary["methods"])
    head = "<tr><th>image</th>" + "".join(f"<th>{_e(m)}</th>" for m in methods) + "</tr>"
    rows = []
    for name, info in images.items():
        cells = [f"<td>{_img(info['input'], name)}{_e(name)}</td>"] if info.get("input") else [f"<td>{_e(name)}</td>"]
        for m in methods:
            png = info.get("overlays", {}).get(m)
            dele, ins = info.get("deletion_auc", {}).get(m), info.get("insertion_auc", {}).get(m)
            caption = f"del {_fmt(dele, 2)} · ins {_fmt(ins, 2)}" if dele is not None else ""
            cells.append(f"<td>{_img(png, f'{name} {m}', f'{name}: {m}')}{caption}</td>" if png else "<td>–</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table class="grid">{head}{"".join(rows)}</table></div>'


def _predictions(summary: dict[str, Any]) -> str:
    cards = []
    for name, info in summary["images"].items():
        rows = "".join(
            f"<tr><td>{i + 1}</td><td>{_e(p.get('label', p['class']))}</td><td class='num'>{_e(p['class'])}</td>"
            f"<td class='num'>{_fmt(p['probability'], 3)}</td></tr>"
            for i, p in enumerate(info.get("predictions", []))
        )
        img = _img(info["input"], name) if info.get("input") else ""
        src = f'<div class="note">{_e(info["file"])}</div>' if info.get("file") else ""
        explained = f'<div class="note">explained class: {_e(info["target"])}</div>' if "target" in info else ""
        cards.append(
            f'<div class="card"><b>{_e(name)}</b>{src}{img}<table><tr><th>#</th><th>class</th><th>id</th>'
            f"<th>p</th></tr>{rows}</table>{explained}</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _methods(summary: dict[str, Any]) -> str:
    metrics = summary.get("metrics")
    budgets = any(info.get("budget") for info in summary["methods"].values())
    head = "<tr><th>method</th><th>picture</th><th>seconds (all images)</th><th>seconds / image</th>"
    if budgets:
        head += "<th>CPU budget (the full run: <code>--full</code>)</th>"
    if metrics:
        head += "<th>deletion AUC ↓</th><th>insertion AUC ↑</th>"
    rows = []
    for m, info in summary["methods"].items():
        row = (f"<tr><td>{_e(m)}</td><td>{_e(info.get('kind', ''))}</td><td class='num'>{_fmt(info['seconds'], 2)}"
               f"</td><td class='num'>{_fmt(info.get('seconds_per_image'), 3)}</td>")
        if budgets:
            row += f"<td>{_e(info.get('budget', ''))}</td>"
        if metrics:
            row += (f"<td class='num'>{_fmt(info.get('deletion_auc_mean'))}</td>"
                    f"<td class='num'>{_fmt(info.get('insertion_auc_mean'))}</td>")
        rows.append(row + "</tr>")
    note = ""
    if metrics:
        note = (f'<p class="note">Deletion / insertion AUC: mean over the images of the {_e(metrics.get("score"))} '
                f"of the explained class as the most relevant pixels are removed (to "
                f"{_e(metrics.get('deletion_substrate'))}) or inserted (into "
                f"{_e(metrics.get('insertion_substrate'))}), {_e(metrics.get('step'))} pixels per step "
                "(RISE, Petsiuk et al. 2018). Lower deletion and higher insertion are better. Wall time includes "
                "only the explanation, not the metrics.</p>")
    else:
        note = '<p class="note">Metrics were not computed (pass <code>--metrics</code>).</p>'
    return f"<table>{head}{''.join(rows)}</table>{note}"


def _catalogue(summary: dict[str, Any]) -> str:
    """The ``--metrics LIST`` section: per image, the catalogue metrics x methods (xai_torch.cli.metrics)."""
    names, methods = list(summary["metric_catalogue"]), list(summary["methods"])
    head = "<tr><th>image</th><th>metric</th>" + "".join(f"<th>{_e(m)}</th>" for m in methods) + "</tr>"
    rows = []
    for image, info in summary["images"].items():
        for n in names:
            spec, row = summary["metric_catalogue"][n], info.get("metrics", {}).get(n, {})
            arrow = "↑" if spec.get("higher_is_better") else "↓"
            rows.append(f"<tr><td>{_e(image)}</td><td title='{_e(spec.get('budget', ''))}'>{_e(n)} {arrow}</td>"
                        + "".join(f"<td class='num'>{_fmt(row.get(m), 4)}</td>" for m in methods) + "</tr>")
    fails = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in summary.get("metric_failures", {}).items())
    note = ('<p class="note">↑ higher is better, ↓ lower; each metric with a CPU-cheap configuration (hover its '
            "name). The leaderboard (<code>python -m benchmarks evaluate</code>) adds bootstrap intervals.</p>")
    return (f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>{note}'
            + (f'<p class="note">Not computed:</p><ul class="note">{fails}</ul>' if fails else ""))


def _layers(info: dict[str, Any]) -> str:
    """The ``--layer-attribution`` section: per image x method, the per-channel chart and the layer map."""
    methods, shape = info.get("methods", []), info.get("shape")
    head = "<tr><th>image</th>" + "".join(f"<th>{_e(m)}</th>" for m in methods) + "</tr>"
    rows = []
    for name, per in info.get("images", {}).items():
        cells = [f"<td>{_e(name)}</td>"]
        for m in methods:
            r = per.get(m)
            if r is None:
                cells.append("<td>–</td>")
                continue
            chart = f'<img class="chart" src="{_src(r["chart"])}" alt="{_e(name)} {_e(m)} per channel">' \
                if r.get("chart") else ""
            lmap = f'<img class="map" src="{_src(r["map"])}" alt="{_e(name)} {_e(m)} layer map">' \
                if r.get("map") else ""
            top = ", ".join(f"{c} ({v:+.3g})" for c, v in r.get("top_channels", []))
            cells.append(f"<td>{chart}{lmap}<span class='note'>top channels: {_e(top)}</span></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    seconds = ", ".join(f"{_e(m)} {_fmt(v, 2)} s" for m, v in info.get("seconds", {}).items())
    note = (f'<p class="note">Attributions to the output of <code>{_e(info.get("layer"))}</code> (shape '
            f"{_e(shape)} per image): bars are the attribution per channel summed over space (red positive, "
            "blue negative; the largest |value| labelled), the map is the sum over channels at the layer's "
            f"resolution (blue-white-red, scaled by its largest |value|). Time at the layer: {seconds}.</p>")
    missing = f'<p class="note"><b>No bar charts:</b> {_e(info["note"])}.</p>' if info.get("note") else ""
    return f'{note}{missing}<div class="scroll layer"><table>{head}{"".join(rows)}</table></div>'


def _save(fig: Any, path: Path) -> None:
    """A matplotlib figure as PNG, written through :func:`~xai_torch.files.atomic_write`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())


def _plots(out: Path, summary: dict[str, Any]) -> list[str]:
    """PNG plots (matplotlib, no pyplot state); [] when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return []
    methods = summary["methods"]
    written = []
    names = list(methods)
    fig = Figure(figsize=(6, 0.28 * len(names) + 1.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh(range(len(names)), [methods[m]["seconds_per_image"] for m in names], color="#4c72b0")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"seconds per image ({summary.get('device', '?')})")
    fig.tight_layout()
    _save(fig, out / "plot_seconds.png")
    written.append("plot_seconds.png")
    curves = [m for m in names if methods[m].get("fractions")]
    if curves:
        fig = Figure(figsize=(10, 3.8), dpi=100)
        FigureCanvasAgg(fig)
        for k, mode in enumerate(("deletion", "insertion")):
            ax = fig.add_subplot(1, 2, k + 1)
            for m in curves:
                info = methods[m]
                ax.plot(info["fractions"], info[f"{mode}_curve_mean"], lw=1.2,
                        label=f"{m} ({info[f'{mode}_auc_mean']:.3f})")
            ax.set_xlabel("fraction of pixels " + ("removed" if mode == "deletion" else "inserted"))
            ax.set_ylabel("score of the explained class")
            ax.set_title(f"{mode} (mean over images)", fontsize=10)
            ax.legend(fontsize=6, ncol=2 if len(curves) > 8 else 1)
        fig.tight_layout()
        _save(fig, out / "plot_curves.png")
        written.append("plot_curves.png")
    return written


def write_report(out: Union[str, Path], summary: dict[str, Any], *, title: str = "xai_torch report",
                 plots: bool = True) -> Path:
    """Write ``out/report.html`` for a command-line summary; the PNGs it names must be in ``out``.

    The page and its plots are written with :func:`xai_torch.files.atomic_write`: a link of the
    same name in ``out`` is replaced, never written through.

    Args:
        out: the output folder of ``xai-torch demo`` / ``explain`` (holds the PNGs).
        summary: the summary dict those commands build (see the module docstring).
        title: the page title.
        plots: add matplotlib plots (seconds per method, mean deletion / insertion curves)
            when matplotlib is installed; silently left out otherwise.

    Returns:
        The path of ``report.html``.

    Shape:
        One HTML file with relative ``<img>`` paths, inline CSS, no script or external resource.

    Example:
        >>> from xai_torch.cli import demo
        >>> from xai_torch.report import write_report
        >>> summary = demo("out/demo", ["chelsea"], ["gradcam"], "cpu")   # writes the report itself
        >>> write_report("out/demo", summary, title="my title")          # e.g. again, retitled
        PosixPath('out/demo/report.html')
    """
    out = check_folder(out, "out")
    if not isinstance(summary, dict) or not isinstance(summary.get("images"), dict) \
            or not isinstance(summary.get("methods"), dict):
        raise XaiError(f"write_report takes the summary dict of xai-torch demo / explain (with 'images' and "
                       f"'methods'); got {describe(summary)}.")
    missing = [p for info in summary["images"].values()
               for p in [info.get("input"), *info.get("overlays", {}).values()] if p and not (out / p).is_file()]
    if missing:
        raise XaiError(f"the report would show images that are not in {out}: {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''}.")
    out.mkdir(parents=True, exist_ok=True)
    plot_pngs = _plots(out, summary) if plots and summary["methods"] else []
    sections = [
        f"<h1>{_e(title)}</h1>",
        _header(summary),
        "<h2>Overlays: images × methods</h2>",
        _grid(summary),
        "<h2>Top-5 predictions</h2>",
        _predictions(summary),
        "<h2>Methods: wall time and faithfulness</h2>",
        _methods(summary),
    ]
    if summary.get("metric_catalogue"):
        sections += ["<h2>Metrics per image</h2>", _catalogue(summary)]
    if summary.get("layer_attribution"):
        sections += [f"<h2>Layer attribution at <code>{_e(summary['layer_attribution'].get('layer'))}</code></h2>",
                     _layers(summary["layer_attribution"])]
    if plot_pngs:
        sections += ["<h2>Plots</h2>", '<div class="plots">' + "".join(_img(p, p) for p in plot_pngs) + "</div>"]
    sections.append('<p class="note">Written by xai_torch. Files: summary.json (all numbers), '
                    "&lt;image&gt;_&lt;method&gt;.png (overlays), &lt;image&gt;_grid.png (one row per image).</p>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{_e(title)}</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n")
    return atomic_write(out / "report.html", page.encode("utf-8"))
