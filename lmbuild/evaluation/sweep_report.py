"""The sweep's comparison report: one table of final metrics per run, the loss curves
overlaid, the best run marked (``sweep.metric``, ``sweep.goal``).

A cheap step of its own over the runs' finished artifacts: each run's ``trained_checkpoint``
(its manifest's counts and ``loss_curve.csv``) and ``eval_report`` (its manifest's counts and
``report.json``'s headline). Writes ``report.json``, ``loss_curves.svg``, ``report.html`` (the
SVG inlined, rendered from ``templates/sweep_report.html.j2``) and ``report.md``.

What it does not do: train or evaluate anything, or read a run's TensorBoard files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import jinja2

from lmbuild.errors import UserError
from lmbuild.numbers import finite
from lmbuild.store.artifact import read_manifest, write_json
from lmbuild.training import curve

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Columns shown after the ranking metric, where the runs have them.
COLUMNS = (
    "final_val_loss",
    "final_train_loss",
    "heldout_bits_per_byte",
    "heldout_token_perplexity",
    "heldout_word_perplexity",
    "parameters",
    "tokens_per_second",
    "train_seconds",
)


def read_curve(path: Path) -> dict[str, list]:
    """``loss_curve.csv`` -> {"train_loss": [[step, value], ...], "val_loss": [...]}."""
    rows = curve.read_curve(path)
    return {col: [[r["step"], r[col]] for r in rows if r.get(col) is not None] for col in ("train_loss", "val_loss")}


def run_metrics(trained: Path, evaluated: Path) -> dict[str, float]:
    """A run's final figures: training's counts, the evaluation's counts (the run's own model;
    ``<task>/<metric>`` for extra tasks), and report.json's headline where it has more."""
    found: dict[str, float] = {}
    counts = (read_manifest(trained).get("counts") or {}) | (read_manifest(evaluated).get("counts") or {})
    try:
        headline = json.loads((evaluated / "report.json").read_text()).get("headline") or {}
    except (OSError, ValueError):
        headline = {}
    for name, value in [*counts.items(), *headline.items()]:
        if name.startswith("trained_checkpoint/") or name == "seconds":
            continue  # the per-label copies of the same figures; the evaluation's wall time
        v = finite(value)
        if v is not None:
            found.setdefault(name, v)
    return found


def rank(rows: list[dict], metric: str, goal: str) -> str:
    """The best run's name; UserError where no run has the metric."""
    scored = [r for r in rows if r["metrics"].get(metric) is not None]
    if not scored:
        have = sorted({m for r in rows for m in r["metrics"]})
        raise UserError(f"sweep.metric: {metric!r} is not a metric of the runs (they have: {', '.join(have)})")
    pick = min if goal == "min" else max
    return pick(scored, key=lambda r: r["metrics"][metric])["run"]


def curves_svg(rows: list[dict], best: str) -> str:
    """Training and validation loss of every run, overlaid, the best run drawn thick; SVG text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lmbuild"}):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, col, title in zip(axes, ("train_loss", "val_loss"), ("training loss", "validation loss")):
            for i, r in enumerate(rows):
                pts = r["curve"][col]
                if not pts:
                    continue
                is_best = r["run"] == best
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=f"C{i % 10}",
                    linewidth=3 if is_best else 1.2,
                    marker="o" if col == "val_loss" else None,
                    markersize=3,
                    label=f"{r['run']} (best)" if is_best else r["run"],
                    zorder=3 if is_best else 2,
                )
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("loss")
        axes[1].legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
        plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # inlined: no XML declaration or doctype


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    if isinstance(value, float):
        return f"{int(value):d}"
    return json.dumps(value) if not isinstance(value, str) else value


def table(data: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the comparison table, in run order."""
    keys, metric = data["keys"], data["metric"]
    shown = [metric, *(c for c in COLUMNS if c != metric and any(c in r["metrics"] for r in data["rows"]))]
    header = ["run", *keys, *shown]
    body = []
    for r in data["rows"]:
        body.append([r["run"], *(_fmt(r["values"].get(k)) for k in keys), *(_fmt(r["metrics"].get(c)) for c in shown)])
    return header, body


def render_markdown(data: dict) -> str:
    header, body = table(data)
    lines = [
        f"# Sweep: {len(data['rows'])} runs",
        "",
        f"Best run by {data['metric']} ({data['goal']}): **{data['best']}** ({_fmt(data['best_value'])}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in body:
        mark = " **best**" if row[0] == data["best"] else ""
        lines.append("| " + " | ".join([row[0] + mark, *row[1:]]) + " |")
    return "\n".join(lines) + "\n\n![loss curves](loss_curves.svg)\n"


def render_html(data: dict, svg: str) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    header, body = table(data)
    return env.get_template("sweep_report.html.j2").render(data=data, header=header, body=body, svg=svg, best_value=_fmt(data["best_value"]))


def build(ctx) -> dict:
    s = ctx.settings
    runs = s["runs"]
    rows = []
    for run, values in runs.items():
        trained, evaluated = Path(ctx.inputs[f"{run}__trained_checkpoint"]), Path(ctx.inputs[f"{run}__eval_report"])
        rows.append({
            "run": run,
            "values": values,
            "metrics": run_metrics(trained, evaluated),
            "curve": read_curve(trained / "loss_curve.csv"),
            "artifacts": {"trained_checkpoint": read_manifest(trained)["key"], "eval_report": read_manifest(evaluated)["key"]},
        })
    best = rank(rows, s["metric"], s["goal"])
    data = {
        "key": ctx.key,
        "metric": s["metric"],
        "goal": s["goal"],
        "keys": sorted({k for v in runs.values() for k in v}),
        "best": best,
        "best_value": next(r["metrics"][s["metric"]] for r in rows if r["run"] == best),
        "rows": rows,
    }
    out = Path(ctx.out)
    write_json(out / "report.json", data)
    svg = curves_svg(rows, best)
    (out / "loss_curves.svg").write_text(svg, encoding="utf-8")
    (out / "report.html").write_text(render_html(data, svg), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(data), encoding="utf-8")
    return {"runs": len(rows), "best": best, "metric": s["metric"], "best_value": data["best_value"]}
