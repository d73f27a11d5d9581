"""The report page's charts: matplotlib figures as inline SVG (stage ``report``).

Every metric of every checkpoint (a bar each, with lm-eval's standard error), each metric
against tokens seen along a training run that has two or more checkpoints, the training
curves (whatever columns the trainer logged, grouped by name), and bar charts such as the
data funnel's. Text stays text, in the page's font; each chart's ids are its own.

What it does not do: read anything but the data handed in, or embed a raster image or a script.
"""

from __future__ import annotations

import io
import math

import matplotlib
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from lmbuild.evaluation.report_rows import arrow, fmt, metric_names, metric_of, run_label, training_runs
from lmbuild.numbers import finite

COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a3069", "#e16f24", "#57606a"]


def _svg(fig: Figure, name: str) -> Markup:
    """The figure as inline SVG. Text stays text (the page's font); the hash salt gives each
    chart's clip-path ids their own names, since all charts share one HTML document."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    return Markup(text[text.index("<svg") :])


def line_chart(name: str, series: list[tuple[str, list[tuple[float, float]]]], title: str, xlabel: str, ylabel: str) -> Markup | None:
    """Lines (dots where points are few) per series; None when no series has a point."""
    series = [(label, sorted((x, y) for x, y in pts if finite(x) is not None and finite(y) is not None)) for label, pts in series]
    series = [(label, pts) for label, pts in series if pts]
    if not series:
        return None
    fig = Figure(figsize=(5.6, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for i, (label, pts) in enumerate(series):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=label, color=COLORS[i % len(COLORS)], lw=1.6, marker="o" if len(pts) <= 40 else None, ms=3.5)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig, name)


def bar_chart(name: str, rows: list[tuple[str, float]], title: str) -> Markup | None:
    """Horizontal bars (e.g. documents out of each stage), first row on top."""
    rows = [(k, v) for k, v in rows if finite(v) is not None]
    if not rows:
        return None
    fig = Figure(figsize=(5.6, 0.6 + 0.4 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    labels, values = zip(*rows)
    ax.barh(labels, values, color=COLORS[0])
    ax.invert_yaxis()
    ax.bar_label(ax.containers[0], labels=[fmt(v) for v in values], fontsize=8, padding=3)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_title(title)
    ax.margins(x=0.18)
    return _svg(fig, name)


def _grid(n: int, width: float = 10.5, row_height: float = 2.3) -> tuple[Figure, list]:
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width, 0.4 + row_height * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def metrics_chart(data: dict) -> Markup | None:
    """One panel per metric: a bar per checkpoint, with lm-eval's standard error."""
    names = [(t, m) for t, m in metric_names(data) if any(finite(metric_of(c, t, m).get("value")) is not None for c in data["checkpoints"])]
    if not names:
        return None
    cks = data["checkpoints"]
    fig, axes = _grid(len(names), row_height=0.9 + 0.32 * len(cks))
    for ax, (task, name) in zip(axes, names):
        ms = [metric_of(c, task, name) for c in cks]
        values = [m.get("value") if finite(m.get("value")) is not None else 0.0 for m in ms]
        errs = [m.get("stderr") if finite(m.get("stderr")) is not None else 0.0 for m in ms]
        ax.barh([c["label"] for c in cks], values, xerr=errs, color=[COLORS[i % len(COLORS)] for i in range(len(cks))])
        ax.invert_yaxis()
        hib = next((m.get("higher_is_better") for m in ms if m.get("higher_is_better") is not None), None)
        ax.set_title(f"{task}: {name} {arrow(hib)}".strip(), fontsize=9)
        ax.tick_params(labelsize=7)
    return _svg(fig, "metrics")


def metrics_vs_tokens_chart(data: dict) -> Markup | None:
    """One panel per metric: a line per training run through its checkpoints, against tokens seen."""
    runs = training_runs(data)
    # A metric is drawn where some run has it at two points or more: a line, not a dot.
    names = [(t, m) for t, m in metric_names(data) if any(sum(finite(metric_of(c, t, m).get("value")) is not None for c in cs) >= 2 for cs in runs.values())]
    if not runs or not names:
        return None
    fig, axes = _grid(len(names))
    for ax, (task, name) in zip(axes, names):
        for i, cks in enumerate(runs.values()):
            pts = [(c["tokens_seen"], metric_of(c, task, name).get("value")) for c in cks]
            pts = [(x, y) for x, y in pts if finite(y) is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3.5, lw=1.5, color=COLORS[i % len(COLORS)], label=run_label(cks))
        hib = next((metric_of(c, task, name).get("higher_is_better") for cs in runs.values() for c in cs if metric_of(c, task, name).get("higher_is_better") is not None), None)
        ax.set_title(f"{task}: {name} {arrow(hib)}".strip(), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.supxlabel("tokens seen", fontsize=9)
    return _svg(fig, "metrics-vs-tokens")


def curve_columns(rows: list[dict]) -> dict[str, list[str]]:
    """Groups loss_curve.csv's numeric columns into charts by name (whatever the trainer logs)."""
    cols = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and finite(v) is not None]
    groups: dict[str, list[str]] = {"loss": [], "learning rate": [], "throughput (tokens/s)": [], "gradient norm": [], "other": []}
    for c in cols:
        if c in ("step", "tokens", "epoch") or c.startswith("tokens_seen"):
            continue
        lc = c.lower()
        if "loss" in lc:
            groups["loss"].append(c)
        elif "lr" in lc.split("_") or "learning_rate" in lc:
            groups["learning rate"].append(c)
        elif "per_s" in lc or "throughput" in lc or "/s" in lc or ("tok" in lc and lc.endswith("_s")):
            groups["throughput (tokens/s)"].append(c)
        elif "grad" in lc:
            groups["gradient norm"].append(c)
        else:
            groups["other"].append(c)
    return {k: v for k, v in groups.items() if v}


def _x_of(rows: list[dict]) -> str:
    for k in ("tokens", "tokens_seen", "step"):
        if any(finite(r.get(k)) is not None for r in rows):
            return k
    return "step"


def training_charts(runs: list[dict]) -> list[Markup]:
    """A chart per group of logged columns, a line per column and run; lm-eval's held-out
    loss as one point at the end of each run."""
    groups: dict[str, list] = {}
    xs = set()
    for c in runs:
        rows = c["training"]["loss_curve"]
        x = _x_of(rows)
        xs.add(x)
        for group, cols in curve_columns(rows).items():
            for col in cols:
                label = col.replace("_", " ") + (f" ({c['label']})" if len(runs) > 1 else "")
                groups.setdefault(group, []).append((label, [(r.get(x), r.get(col)) for r in rows]))
        last = max((r[x] for r in rows if finite(r.get(x)) is not None), default=None)
        if "loss" in groups and last is not None:
            groups["loss"].append((f"held-out, lm-eval ({c['label']})", [(last, c["headline"].get("heldout_token_loss"))]))
    xlabel = " / ".join(sorted(xs))
    charts = [line_chart(f"train-{i}", series, group, xlabel, "nats / token" if group == "loss" else group) for i, (group, series) in enumerate(groups.items())]
    return [c for c in charts if c is not None]
