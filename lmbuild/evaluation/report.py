"""Stage ``report``: eval_report's ``report.json`` rendered as one self-contained HTML page.

The data is checked against ``lmbuild/schemas/report.schema.json`` first (one shape, no fallbacks),
shaped into plain rows here, and laid out by the jinja2 template
``lmbuild/evaluation/templates/report.html.j2`` (autoescaped). The charts are matplotlib's SVG, inlined:
every metric of every checkpoint, each metric against tokens seen along a training run that
has two or more checkpoints, the training curves, and the data funnel. Missing values render
as a dash.

What it does not do: evaluate, read anything but report.json, or fetch anything (the page
has no script and no external resource). Rendering is its own stage so that a change of the
page re-renders in seconds and re-runs no evaluation.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import jinja2
import jsonschema
import matplotlib
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from lmbuild.errors import UserError

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"
TEMPLATE = "report.html.j2"
DASH = "\u2014"
HEADLINE_LABELS = {
    "initial_val_loss": "initial val loss",
    "final_val_loss": "final val loss",
    "heldout_token_loss": "held-out loss (nats/token)",
    "heldout_token_perplexity": "held-out token perplexity",
    "heldout_word_perplexity": "held-out word perplexity",
    "heldout_bits_per_byte": "held-out bits per byte",
    "heldout_byte_perplexity": "held-out byte perplexity",
    "heldout_docs": "held-out documents",
    "heldout_tokens": "held-out tokens",
    "heldout_bytes": "held-out bytes",
}
HELDOUT_NOTE = (
    "Held-out loss is lm-eval's total negative log-likelihood of the held-out documents divided by "
    "their token count (windows of the model's context, each document from a fresh context): "
    "comparable with the training val loss. Word perplexity is per whitespace-separated word."
)
SUMMARY_LABELS = {"tokens_seen": "tokens seen", "tokens_per_second": "tokens / s", "parameters": "parameters"}
COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a3069", "#e16f24", "#57606a"]
# Stages whose counts are documents, bytes and tokens in and out (the funnel).
DATA_STAGES = ("raw", "cleaned", "deduplicated", "shards")


# --------------------------------------------------------------------------- the stage


def build(ctx) -> dict:
    """report.html from the eval_report artifact's report.json."""
    path = Path(ctx.inputs["eval_report"]) / "report.json"
    data = load(path)
    page = render_html(data)
    (Path(ctx.out) / "report.html").write_text(page, encoding="utf-8")
    # No page size here: the page shows timings, so its size varies from run to run.
    return {"eval_report": data["key"], "checkpoints": len(data["checkpoints"]), "charts": page.count("<svg")}


def load(path: Path) -> dict:
    """report.json, checked against the schema; a mismatch is one line naming the field."""
    data = json.loads(path.read_text(encoding="utf-8"))
    try:
        jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise UserError(f"report: {path}: {where}: {exc.message} (lmbuild/schemas/report.schema.json)") from None
    return data


# --------------------------------------------------------------------------- numbers


def fmt(value) -> str:
    """Numbers for people: ints with separators, floats with 4 significant digits."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 1e7 or (value and abs(value) < 1e-3):
            return f"{value:.3e}"
        if abs(value) >= 1000 or value.is_integer():
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _arrow(higher_is_better) -> str:
    return {True: "\u2191", False: "\u2193"}.get(higher_is_better, "")


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested settings -> (dotted key, value) rows; lists and empty dicts as JSON."""
    rows = []
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            rows += _flat(v, f"{prefix}{k}.")
        else:
            plain = v is None or isinstance(v, (int, float, str))  # bool is an int
            rows.append((f"{prefix}{k}", v if plain else json.dumps(v, ensure_ascii=False)))
    return rows


# --------------------------------------------------------------------------- charts (matplotlib)


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
    series = [(label, sorted((x, y) for x, y in pts if _finite(x) and _finite(y))) for label, pts in series]
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
    rows = [(k, v) for k, v in rows if _finite(v)]
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


def metric_names(data: dict) -> list[tuple[str, str]]:
    """Every (task, metric) any checkpoint has, in first-seen order: whatever lm-eval (or the
    masked-LM evaluation) reported, not a fixed list."""
    out = []
    for c in data["checkpoints"]:
        for task, entry in c["metrics"].items():
            out += [(task, m) for m in entry["metrics"] if (task, m) not in out]
    return out


def _metric(c: dict, task: str, name: str) -> dict:
    return (c["metrics"].get(task) or {"metrics": {}})["metrics"].get(name) or {}


def metrics_chart(data: dict) -> Markup | None:
    """One panel per metric: a bar per checkpoint, with lm-eval's standard error."""
    names = [(t, m) for t, m in metric_names(data) if any(_finite(_metric(c, t, m).get("value")) for c in data["checkpoints"])]
    if not names:
        return None
    cks = data["checkpoints"]
    fig, axes = _grid(len(names), row_height=0.9 + 0.32 * len(cks))
    for ax, (task, name) in zip(axes, names):
        ms = [_metric(c, task, name) for c in cks]
        values = [m.get("value") if _finite(m.get("value")) else 0.0 for m in ms]
        errs = [m.get("stderr") if _finite(m.get("stderr")) else 0.0 for m in ms]
        ax.barh([c["label"] for c in cks], values, xerr=errs, color=[COLORS[i % len(COLORS)] for i in range(len(cks))])
        ax.invert_yaxis()
        hib = next((m.get("higher_is_better") for m in ms if m.get("higher_is_better") is not None), None)
        ax.set_title(f"{task}: {name} {_arrow(hib)}".strip(), fontsize=9)
        ax.tick_params(labelsize=7)
    return _svg(fig, "metrics")


def training_runs(data: dict) -> dict[str, list[dict]]:
    """Checkpoints by training run (``run``), each run's in tokens-seen order: only runs with two
    or more checkpoints whose tokens seen are known."""
    runs: dict[str, list[dict]] = {}
    for c in data["checkpoints"]:
        if _finite(c.get("tokens_seen")):
            runs.setdefault(c["run"], []).append(c)
    return {r: sorted(cs, key=lambda c: c["tokens_seen"]) for r, cs in runs.items() if len(cs) >= 2}


def _run_label(cks: list[dict]) -> str:
    return cks[-1]["label"]  # the run's furthest checkpoint names it


def metrics_vs_tokens_chart(data: dict) -> Markup | None:
    """One panel per metric: a line per training run through its checkpoints, against tokens seen."""
    runs = training_runs(data)
    # A metric is drawn where some run has it at two points or more: a line, not a dot.
    names = [(t, m) for t, m in metric_names(data) if any(sum(_finite(_metric(c, t, m).get("value")) for c in cs) >= 2 for cs in runs.values())]
    if not runs or not names:
        return None
    fig, axes = _grid(len(names))
    for ax, (task, name) in zip(axes, names):
        for i, cks in enumerate(runs.values()):
            pts = [(c["tokens_seen"], _metric(c, task, name).get("value")) for c in cks]
            pts = [(x, y) for x, y in pts if _finite(y)]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3.5, lw=1.5, color=COLORS[i % len(COLORS)], label=_run_label(cks))
        hib = next((_metric(c, task, name).get("higher_is_better") for cs in runs.values() for c in cs if _metric(c, task, name).get("higher_is_better") is not None), None)
        ax.set_title(f"{task}: {name} {_arrow(hib)}".strip(), fontsize=9)
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
        cols += [k for k, v in r.items() if k not in cols and _finite(v)]
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
        if any(_finite(r.get(k)) for r in rows):
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
        last = max((r[x] for r in rows if _finite(r.get(x))), default=None)
        if "loss" in groups and last is not None:
            groups["loss"].append((f"held-out, lm-eval ({c['label']})", [(last, c["headline"].get("heldout_token_loss"))]))
    xlabel = " / ".join(sorted(xs))
    charts = [line_chart(f"train-{i}", series, group, xlabel, "nats / token" if group == "loss" else group) for i, (group, series) in enumerate(groups.items())]
    return [c for c in charts if c is not None]


# --------------------------------------------------------------------------- tables


def headline_sentence(h: dict) -> str:
    """One line: where val loss went, and the held-out perplexity."""
    parts = []
    if h.get("final_val_loss") is not None:
        loss = f"Validation loss {fmt(h.get('initial_val_loss'))} \u2192 {fmt(h['final_val_loss'])}"
        if _finite(h.get("initial_val_loss")) and _finite(h["final_val_loss"]):
            loss += f" ({h['final_val_loss'] - h['initial_val_loss']:+.3f})"
        parts.append(loss)
    if h.get("heldout_word_perplexity") is not None:
        parts.append(
            f"held-out word perplexity {fmt(h['heldout_word_perplexity'])}, token perplexity "
            f"{fmt(h.get('heldout_token_perplexity'))}, {fmt(h.get('heldout_bits_per_byte'))} bits/byte "
            f"over {fmt(h.get('heldout_docs'))} documents"
        )
    return "; ".join(parts) + "." if parts else "No headline figures."


def headline_cards(c: dict) -> list[tuple[str, str]]:
    """Every headline figure of a checkpoint (whatever it has; the known ones first, in
    HEADLINE_LABELS order), then its extra tasks' main metrics."""
    order = {k: i for i, k in enumerate(HEADLINE_LABELS)}
    figures = sorted((k for k, v in c["headline"].items() if v is not None), key=lambda k: (order.get(k, len(order)), k))
    cards = [(HEADLINE_LABELS.get(k, k.replace("_", " ")), fmt(c["headline"][k])) for k in figures]
    for task, m in c["extra_tasks"].items():
        value = fmt(m.get("value")) + (f" \u00b1 {fmt(m['stderr'])}" if m.get("stderr") is not None else "")
        cards.append((f"{task} {m['metric']}", value))
    return cards


def metric_matrix(data: dict) -> tuple[list[str], list[tuple]]:
    """Every (task, metric) row with 'value ± stderr' per checkpoint, and the samples scored."""
    cks = data["checkpoints"]
    labels = [c["label"] for c in cks]
    rows = []
    for task, name in metric_names(data):
        cells = []
        for c in cks:
            m = _metric(c, task, name)
            cells.append(fmt(m.get("value")) + (f" \u00b1 {fmt(m['stderr'])}" if m.get("stderr") is not None else "") if m else DASH)
        hib = next((_metric(c, task, name).get("higher_is_better") for c in cks if _metric(c, task, name).get("higher_is_better") is not None), None)
        samples = next((((c["metrics"].get(task) or {}).get("n_samples") or {}).get("effective") for c in cks if task in c["metrics"]), None)
        rows.append((task, f"{name} {_arrow(hib)}".strip(), *cells, fmt(samples)))
    return labels, rows


def lineage_sorted(data: dict) -> list[dict]:
    """The lineage's artifacts upstream first: by depth in the input graph (the stage table's
    order follows from the inputs, so it is not repeated here), then stage and key."""
    arts = {(a["stage"], a["key"]): a for a in data["lineage"].values()}
    depth: dict = {}

    def of(ref, seen=()):
        if ref not in depth:
            ins = [(i.get("stage"), i.get("key")) for i in (arts[ref].get("inputs") or {}).values()]
            depth[ref] = 1 + max((of(i, (*seen, ref)) for i in ins if i in arts and i not in seen), default=-1)
        return depth[ref]

    return sorted(arts.values(), key=lambda a: (of((a["stage"], a["key"])), a["stage"], str(a["key"])))


def _first(counts: dict, *names):
    for n in names:
        if _finite(counts.get(n)):
            return counts[n]
    return None


def funnel_rows(data: dict) -> list[dict]:
    """Documents, bytes and tokens in and out of every data stage, from the manifests' counts."""
    rows = []
    for a in lineage_sorted(data):
        if a["stage"] not in DATA_STAGES:
            continue
        c = a.get("counts") or {}
        docs_out = _first(c, "documents_out", "documents")
        if a["stage"] == "shards" and docs_out is None:
            docs_out = sum(v for k, v in c.items() if k.endswith("_documents") and _finite(v)) or None
        tokens = _first(c, "tokens")
        if tokens is None and a["stage"] == "shards":
            tokens = sum(v for k, v in c.items() if k.endswith("_tokens") and "dropped" not in k and _finite(v)) or None
        rows.append({
            "stage": a["stage"], "key": a["key"],
            "documents_in": _first(c, "documents_in"), "documents_out": docs_out,
            "bytes_in": _first(c, "bytes_in"), "bytes_out": _first(c, "bytes_out", "bytes"),
            "tokens": tokens,
        })
    return rows


def drop_reasons(data: dict) -> list[tuple[str, str, float]]:
    """(stage, reason, documents) from every count whose name says drop/filter and holds numbers per reason."""
    out = []
    for a in lineage_sorted(data):
        for name, value in (a.get("counts") or {}).items():
            if isinstance(value, dict) and any(w in name for w in ("drop", "filter", "removed")):
                for reason, n in value.items():
                    if _finite(n):
                        out.append((a["stage"], reason, n))
                    elif isinstance(n, dict) and _finite(n.get("documents")):
                        out.append((a["stage"], reason, n["documents"]))
    return out


def dedup_rows(data: dict) -> list[tuple[str, str, str]]:
    """(stage, count, value) of every count about duplicates or clusters."""
    out = []
    for a in lineage_sorted(data):
        if a["stage"] not in DATA_STAGES:
            continue
        for k, v in _flat(a.get("counts") or {}):
            if any(w in k for w in ("dup", "cluster", "group")) and not k.startswith("dropped"):
                out.append((a["stage"], k, fmt(v)))
    return out


def model_rows(cks: list[dict]) -> list[tuple]:
    keys = []
    for c in cks:
        keys += [k for k in c["model"]["config"] if k not in keys]
    flops = [c["model"].get("flops_per_token") or {} for c in cks]
    rows = [("parameters", *(fmt(c["model"]["parameters"]) for c in cks)),
            ("training FLOPs per token", *(fmt(f.get("total")) for f in flops)),
            ("  of which 6N", *(fmt(f.get("dense")) for f in flops)),
            ("  of which attention", *(fmt(f.get("attention")) for f in flops)),
            ("sequence length", *(fmt(c["model"]["seq_len"]) for c in cks))]
    return rows + [(k, *(fmt(c["model"]["config"].get(k)) for c in cks)) for k in keys]


def skipped_rows(cks: list[dict]) -> list[tuple[str, str, str]]:
    """(checkpoint, what, why) for what an entry says was not run for it (an encoder: lm-eval's
    tasks and the generations), one row per checkpoint and reason."""
    rows = []
    for c in cks:
        by_reason: dict[str, list[str]] = {}
        for what, why in (c.get("skipped") or {}).items():
            by_reason.setdefault(why, []).append(what)
        rows += [(c["label"], ", ".join(sorted(whats)), why) for why, whats in by_reason.items()]
    return rows


def generation_rows(cks: list[dict]) -> list[dict]:
    """One row per prompt: the completion of each checkpoint (None where it has none)."""
    prompts = []
    for c in cks:
        prompts += [g["prompt"] for g in c["generations"] if g["prompt"] not in prompts]
    rows = []
    for p in prompts:
        cells = []
        for c in cks:
            g = next((g for g in c["generations"] if g["prompt"] == p), None)
            if g is not None:
                g = {**g, "note": f"{g['new_tokens']} new tokens" + (", stopped at end of text" if g["stopped_at_eos"] else "")}
            cells.append(g)
        rows.append({"prompt": p, "cells": cells})
    return rows


def lineage_entries(data: dict) -> list[dict]:
    """Every artifact of the lineage and the eval_report itself, with what it uses and what uses it."""
    me = {"stage": "eval_report", "key": data["key"], "settings": data["settings"],
          "inputs": {c["label"]: {"stage": c["stage"], "key": c["key"]} for c in data["checkpoints"]}}
    me["inputs"]["shards"] = {"stage": "shards", "key": data["artifacts"]["shards"]}
    arts = [*lineage_sorted(data), me]
    out = []
    for a in arts:
        ins = a.get("inputs") or {}
        out.append({
            "stage": a["stage"], "key": a["key"], "path": a.get("path"), "seconds": a.get("seconds"),
            "code_hash": str(a["code_hash"]) if a.get("code_hash") else None,
            "inputs": [(n, i.get("stage"), i.get("key")) for n, i in ins.items()],
            "used_by": [(b["stage"], b["key"]) for b in arts if any(i.get("stage") == a["stage"] and i.get("key") == a["key"] for i in (b.get("inputs") or {}).values())],
            "settings_rows": [(k, fmt(v)) for k, v in _flat(a.get("settings") or {})],
            "counts_rows": [(k, fmt(v)) for k, v in _flat(a.get("counts") or {})],
        })
    return out


# --------------------------------------------------------------------------- the page


def anchor(stage: str, key) -> str:
    return f"a-{stage}-{key}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lmbuild.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the template misspells fails, not renders empty
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.globals["anchor"] = anchor
    return env


def context(data: dict) -> dict:
    """Everything the template shows, as rows of formatted strings and inline SVG charts."""
    cks = data["checkpoints"]
    primary = next(c for c in cks if c["label"] == data["primary"])
    trained = [c for c in cks if "training" in c]
    funnel = funnel_rows(data)
    labels, metric_rows = metric_matrix(data)
    summary_keys = []
    for c in trained:
        summary_keys += [k for k in c["training"]["summary"] if k not in summary_keys]
    lm = data["lm_eval"]
    tokenizer_arts = [a for a in lineage_sorted(data) if a["stage"] == "tokenizer"]
    return {
        "key": data["key"],
        "labels": labels,
        "primary": data["primary"],
        "sentence": headline_sentence(primary["headline"]),
        "cards": headline_cards(primary),
        "metric_rows": metric_rows,
        "metrics_chart": metrics_chart(data),
        "metrics_vs_tokens": metrics_vs_tokens_chart(data),
        "runs": [(_run_label(cs), [(c["label"], fmt(c["tokens_seen"])) for c in cs]) for cs in training_runs(data).values()],
        "heldout_note": HELDOUT_NOTE,
        "skipped": skipped_rows(cks),
        "generations": generation_rows(cks),
        "trained_labels": [c["label"] for c in trained],
        "training_charts": training_charts(trained),
        "summary_rows": [(SUMMARY_LABELS.get(k, k.replace("_", " ")), *(fmt(c["training"]["summary"].get(k)) for c in trained)) for k in summary_keys],
        "funnel": [{**r, **{k: fmt(r[k]) for k in ("documents_in", "documents_out", "bytes_in", "bytes_out", "tokens")}} for r in funnel],
        "funnel_charts": [c for c in (bar_chart("docs", [(r["stage"], r["documents_out"]) for r in funnel], "documents out of each stage"),
                                      bar_chart("bytes", [(r["stage"], r["bytes_out"]) for r in funnel], "bytes out of each stage")) if c is not None],
        "drops": [(s, r, fmt(n)) for s, r, n in drop_reasons(data)],
        "dedup": dedup_rows(data),
        "tokenizers": [(a["key"], [(k, fmt(v)) for k, v in _flat(a.get("counts") or {})]) for a in tokenizer_arts],
        "tokenizer_rows": [(c["label"], *(fmt(c["tokenizer"].get(k)) for k in ("vocab_size", "tokens", "words", "bytes", "tokens_per_word", "tokens_per_byte"))) for c in cks],
        "model_rows": model_rows(cks),
        "flops_formula": next((c["model"]["flops_formula"] for c in cks if c["model"].get("flops_formula")), None),
        "lineage": lineage_entries(data),
        "provenance": [(k, fmt(v)) for k, v in _flat({k: v for k, v in lm.items() if k != "versions"})]
        + [(f"version {k}", fmt(v)) for k, v in lm["versions"].items()]
        + [(f"seconds {k}", fmt(v)) for k, v in _flat(data["seconds"])],
        "per_checkpoint_lm_eval": [(c["label"], [(k, fmt(v)) for k, v in _flat(c["lm_eval"])]) for c in cks],
    }


def render_html(data: dict) -> str:
    """One self-contained page: inline CSS and SVG, no script, no external resource."""
    return _environment().get_template(TEMPLATE).render(**context(data))
