"""Render an evaluation report: the ``report.json`` data dict -> PNG, HTML and Markdown.

Pure functions, no file I/O: :mod:`lmbuild.evaluate` builds the dict and writes the files.
The HTML page is self-contained (inline CSS, the loss curve as a base64 data URI, no
external resources) and every text taken from the data is HTML-escaped. Missing values
render as a dash, so a report of a partial run still renders.
"""

from __future__ import annotations

import html
import io
import json
import math
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

DASH = "\u2014"
HEADLINE_LABELS = {
    "initial_val_loss": "initial val loss",
    "final_val_loss": "final val loss",
    "heldout_token_loss": "held-out loss (nats/token)",
    "heldout_token_perplexity": "held-out token perplexity",
    "heldout_word_perplexity": "held-out word perplexity",
    "heldout_bits_per_byte": "held-out bits per byte",
    "heldout_docs": "held-out documents",
    "heldout_tokens": "held-out tokens",
}
HELDOUT_NOTE = (
    "Held-out loss is lm-eval's total negative log-likelihood of the held-out documents divided by "
    "their token count (windows of the model's context, each document from a fresh context): "
    "comparable with the training val loss. Word perplexity is per whitespace-separated word."
)
SUMMARY_LABELS = {
    "tokens_seen": "tokens seen",
    "tokens_per_second": "tokens / s",
    "parameters": "parameters",
}


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


def _arrow(higher_is_better) -> str:
    return {True: "\u2191", False: "\u2193"}.get(higher_is_better, "")


# --------------------------------------------------------------------------- figure


def loss_curve_png(rows: list[dict], heldout_loss: float | None = None) -> bytes:
    """Train and val loss against tokens (step where tokens are missing), as PNG bytes.

    ``heldout_loss`` (nats/token, from lm-eval) is drawn as a marker at the last point.
    """
    fig = Figure(figsize=(7.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x_key = "tokens" if any(r.get("tokens") is not None for r in rows) else "step"
    plotted = False
    for key, style in (("train_loss", {"lw": 1.2, "color": "#1f77b4"}), ("val_loss", {"lw": 1.8, "marker": "o", "ms": 4, "color": "#d62728"})):
        pts = [(r[x_key], r[key]) for r in rows if r.get(x_key) is not None and _finite(r.get(key))]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=key.replace("_", " "), **style)
            plotted = True
    if plotted and _finite(heldout_loss):
        last = max(r[x_key] for r in rows if r.get(x_key) is not None)
        ax.plot([last], [heldout_loss], "k*", ms=11, label="held-out loss (lm-eval)")
    if plotted:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_xlabel(x_key)
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title("Training loss curve")
    else:
        ax.text(0.5, 0.5, "no loss data in loss_curve.csv", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# --------------------------------------------------------------------------- shared pieces


def headline_sentence(data: dict) -> str:
    """One line: where val loss went, and the held-out perplexity."""
    h = data.get("headline", {})
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


def metric_rows(data: dict) -> list[tuple[str, str, str, str, str]]:
    """(task, metric, value, stderr, samples) for every lm-eval metric, formatted."""
    rows = []
    for task, entry in data.get("metrics", {}).items():
        n = (entry.get("n_samples") or {}).get("effective")
        for name, m in entry.get("metrics", {}).items():
            stderr = m.get("stderr")
            rows.append((task, f"{name} {_arrow(m.get('higher_is_better'))}".strip(), fmt(m.get("value")), "\u00b1 " + fmt(stderr) if stderr is not None else DASH, fmt(n)))
    return rows


def _flat(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings -> (dotted key, value) rows; lists and empty dicts as JSON."""
    rows = []
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            rows += _flat(v, f"{prefix}{k}.")
        else:
            plain = v is None or isinstance(v, (int, float, str))  # bool is an int
            rows.append((f"{prefix}{k}", v if plain else json.dumps(v, ensure_ascii=False)))
    return rows


def _kv_sections(data: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    t = data.get("training", {})
    lm = data.get("lm_eval", {})
    return [
        ("Training summary", [(SUMMARY_LABELS.get(k, k.replace("_", " ")), fmt(v)) for k, v in (t.get("summary") or {}).items()]),
        ("Model", [(k, fmt(v)) for k, v in _flat(t.get("model", {}))]),
        ("Training settings", [(k, fmt(v)) for k, v in _flat(t.get("settings", {}))]),
        ("Evaluation settings", [(k, fmt(v)) for k, v in _flat(data.get("settings", {}))]),
        (
            "lm-eval",
            [(k, fmt(v)) for k, v in _flat({k: lm[k] for k in ("model", "batch_size", "device", "dtype", "limit", "max_length", "seeds", "bootstrap_iters", "include_path", "include_path_digest") if k in lm})]
            + [(f"version {k}", fmt(v)) for k, v in (lm.get("versions") or {}).items()],
        ),
        ("Artifacts", [(k, fmt(v)) for k, v in _flat(data.get("artifacts", {}))]),
        ("Seconds", [(k, fmt(v)) for k, v in (data.get("seconds") or {}).items()]),
    ]


def _headline_cards(data: dict) -> list[tuple[str, str]]:
    h = data.get("headline", {})
    cards = [(label, fmt(h.get(k))) for k, label in HEADLINE_LABELS.items() if k in h]
    for task, m in (data.get("extra_tasks") or {}).items():
        value = fmt(m.get("value")) + (f" \u00b1 {fmt(m['stderr'])}" if m.get("stderr") is not None else "")
        cards.append((f"{task} {m.get('metric')}", value))
    return cards


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#1b1f24;line-height:1.45;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:2px solid #d0d7de;padding-bottom:.2rem}
h3{font-size:1.02rem;margin:1.2rem 0 .3rem}
.sub{color:#57606a;margin-top:0;font-size:.9rem}.lead{font-size:1.05rem}
nav{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.4rem .8rem;font-size:.9rem}
nav a{margin-right:1rem}a{color:#0550ae;text-decoration:none}a:hover{text-decoration:underline}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .8rem;min-width:9rem;background:#f6f8fa}
.card .v{font-size:1.25rem;font-weight:600}.card .l{color:#57606a;font-size:.8rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.86rem}th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.5rem;white-space:pre-wrap;word-break:break-word;font-size:.8rem;margin:0}
.prompt{font-weight:700;color:#0550ae}.charts{display:flex;flex-wrap:wrap;gap:1rem}
.charts svg{border:1px solid #d0d7de;border-radius:6px;background:#fff}
code{font-size:.82rem}.art{border:1px solid #d0d7de;border-radius:6px;padding:.3rem .8rem;margin:.6rem 0}
.art:target{border-color:#bf8700;background:#fff8c5}details{margin:.3rem 0}summary{cursor:pointer;color:#57606a}
.bar{fill:#0969da}.bar.drop{fill:#cf222e}
"""
COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a3069", "#e16f24", "#57606a"]
STAGE_ORDER = ["raw", "cleaned", "deduplicated", "tokenizer", "shards", "init_checkpoint", "trained_checkpoint", "eval_report"]
DATA_STAGES = ("raw", "cleaned", "deduplicated", "shards")


def _esc(value) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[tuple], numeric: set[int] = frozenset(), raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells already HTML)."""
    cell = (lambda c: str(c)) if raw else _esc
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{cell(c)}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def anchor(stage: str, key) -> str:
    return f"a-{stage}-{key}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _tick(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:.3g}"


def svg_chart(series: list[tuple[str, list[tuple[float, float]]]], title: str, xlabel: str, ylabel: str, width: int = 520, height: int = 300) -> str:
    """A line chart as inline SVG: one polyline (and dots where points are few) per series."""
    pts = [(x, y) for _, p in series for x, y in p if _finite(x) and _finite(y)]
    e = _esc
    if not pts:
        return f'<svg width="{width}" height="60" role="img"><text x="10" y="35" font-size="13" fill="#57606a">{e(title)}: no data</text></svg>'
    named = [name for name, p in series if any(_finite(x) and _finite(y) for x, y in p)]
    left, right, top, bottom = 58, 12, 28, 44 + 14 * len(named)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
           f'<text x="{width / 2}" y="17" text-anchor="middle" font-size="13" font-weight="600">{e(title)}</text>']
    for t in _nice_ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eaeef2"/>'
                   f'<text x="{left - 5}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="10" fill="#57606a">{_tick(t)}</text>')
    for t in _nice_ticks(x0, x1):
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top}" y2="{top + ph}" stroke="#eaeef2"/>'
                   f'<text x="{sx(t):.1f}" y="{top + ph + 14}" text-anchor="middle" font-size="10" fill="#57606a">{_tick(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 30}" text-anchor="middle" font-size="11">{e(xlabel)}</text>')
    out.append(f'<text transform="translate(13 {top + ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">{e(ylabel)}</text>')
    lx, i = left, -1
    for k, (name, p) in enumerate(series):
        p = sorted((x, y) for x, y in p if _finite(x) and _finite(y))
        if not p:
            continue
        i += 1
        color = COLORS[k % len(COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in p)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{coords}"/>')
        if len(p) <= 40:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.6" fill="{color}"/>' for x, y in p]
        ly = top + ph + 42 + 14 * i  # legend under the plot, one line per series
        out.append(f'<rect x="{lx}" y="{ly - 4}" width="12" height="3" fill="{color}"/>'
                   f'<text x="{lx + 16}" y="{ly}" font-size="10">{e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_bars(rows: list[tuple[str, float]], title: str, width: int = 520) -> str:
    """Horizontal bars (e.g. documents per stage) as inline SVG."""
    rows = [(k, v) for k, v in rows if _finite(v)]
    if not rows:
        return ""
    bar, gap, left, top = 18, 6, 150, 26
    height = top + len(rows) * (bar + gap) + 6
    hi = max(v for _, v in rows) or 1
    out = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
           f'<text x="4" y="16" font-size="13" font-weight="600">{_esc(title)}</text>']
    for i, (label, v) in enumerate(rows):
        y = top + i * (bar + gap)
        w = max(1.0, (width - left - 90) * v / hi)
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="11">{_esc(label)}</text>'
                   f'<rect class="bar" x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{COLORS[0]}"/>'
                   f'<text x="{left + w + 5:.1f}" y="{y + 13}" font-size="11">{_esc(fmt(v))}</text>')
    out.append("</svg>")
    return "".join(out)


# ---- sections


def _lineage_sorted(data: dict) -> list[dict]:
    arts = list((data.get("lineage") or {}).values())
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    return sorted(arts, key=lambda a: (order.get(a.get("stage"), len(order)), str(a.get("key"))))


def _link(stage, key) -> str:
    return f'<a href="#{_esc(anchor(stage, key))}"><code>{_esc(stage)}/{_esc(key)}</code></a>'


def _first(counts: dict, *names):
    for n in names:
        if _finite(counts.get(n)):
            return counts[n]
    return None


def funnel_rows(data: dict) -> list[dict]:
    """Documents, bytes and tokens in and out of every data stage, from the manifests' counts."""
    rows = []
    for a in _lineage_sorted(data):
        if a.get("stage") not in DATA_STAGES:
            continue
        c = a.get("counts") or {}
        docs_out = _first(c, "documents_out", "documents")
        if a["stage"] == "shards" and docs_out is None:
            docs_out = sum(v for k, v in c.items() if k.endswith("_documents") and _finite(v)) or None
        tokens = _first(c, "tokens")
        if tokens is None and a["stage"] == "shards":
            tokens = sum(v for k, v in c.items() if k.endswith("_tokens") and "dropped" not in k and _finite(v)) or None
        rows.append({
            "stage": a["stage"], "key": a.get("key"),
            "documents_in": _first(c, "documents_in"), "documents_out": docs_out,
            "bytes_in": _first(c, "bytes_in"), "bytes_out": _first(c, "bytes_out", "bytes"),
            "tokens": tokens,
        })
    return rows


def drop_reasons(data: dict) -> list[tuple[str, str, float]]:
    """(stage, reason, documents) from every count whose name says drop/filter and holds numbers per reason."""
    out = []
    for a in _lineage_sorted(data):
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
    for a in _lineage_sorted(data):
        if a.get("stage") not in DATA_STAGES:
            continue
        for k, v in _flat(a.get("counts") or {}):
            if any(w in k for w in ("dup", "cluster", "group")) and not k.startswith("dropped"):
                out.append((a["stage"], k, fmt(v)))
    return out


def _section_data(data: dict) -> str:
    rows = funnel_rows(data)
    if not rows:
        return "<p>No data-stage manifests in the lineage.</p>"
    parts = [
        _table(["stage", "documents in", "documents out", "bytes in", "bytes out", "tokens"],
               [(_link(r["stage"], r["key"]), *(_esc(fmt(r[k])) for k in ("documents_in", "documents_out", "bytes_in", "bytes_out", "tokens"))) for r in rows],
               numeric={1, 2, 3, 4, 5}, raw=True),
        '<div class="charts">' + svg_bars([(r["stage"], r["documents_out"]) for r in rows], "documents out of each stage")
        + svg_bars([(r["stage"], r["bytes_out"]) for r in rows if r["bytes_out"] is not None], "bytes out of each stage") + "</div>",
    ]
    drops = drop_reasons(data)
    parts.append("<h3>Drops by reason</h3>" + (_table(["stage", "reason", "documents"], [(s, r, fmt(n)) for s, r, n in drops], numeric={2}) if drops else "<p>None recorded.</p>"))
    dedup = dedup_rows(data)
    parts.append("<h3>Deduplication</h3>" + (_table(["stage", "count", "value"], dedup, numeric={2}) if dedup else "<p>None recorded.</p>"))
    return "".join(parts)


def _section_tokenizer(data: dict) -> str:
    parts = []
    for a in _lineage_sorted(data):
        if a.get("stage") == "tokenizer":
            c = a.get("counts") or {}
            parts.append(f"<p>{_link('tokenizer', a.get('key'))}</p>" + _table(["count", "value"], [(k, fmt(v)) for k, v in _flat(c)], numeric={1}))
    cks = data.get("checkpoints") or []
    if cks:
        rows = [(c["label"], *(fmt((c.get("tokenizer") or {}).get(k)) for k in ("vocab_size", "tokens", "words", "bytes", "tokens_per_word", "tokens_per_byte"))) for c in cks]
        parts.append("<h3>On the held-out documents</h3>"
                     + _table(["checkpoint", "vocabulary", "tokens", "words", "bytes", "tokens / word", "tokens / byte"], rows, numeric={1, 2, 3, 4, 5, 6})
                     + "<p class=sub>Words are whitespace-separated; bytes are UTF-8. The held-out documents are those of the lmbuild_heldout task.</p>")
    return "".join(parts) or "<p>No tokenizer figures.</p>"


def _section_model(data: dict) -> str:
    cks = data.get("checkpoints") or []
    if not cks:
        return "<p>No model figures.</p>"
    keys = []
    for c in cks:
        keys += [k for k in (c.get("model") or {}).get("config", {}) if k not in keys]
    rows = [("parameters", *(fmt((c.get("model") or {}).get("parameters")) for c in cks)),
            ("training FLOPs per token", *(fmt(((c.get("model") or {}).get("flops_per_token") or {}).get("total")) for c in cks)),
            ("  of which 6N", *(fmt(((c.get("model") or {}).get("flops_per_token") or {}).get("dense")) for c in cks)),
            ("  of which attention", *(fmt(((c.get("model") or {}).get("flops_per_token") or {}).get("attention")) for c in cks)),
            ("sequence length", *(fmt((c.get("model") or {}).get("seq_len")) for c in cks))]
    rows += [(k, *(fmt((c.get("model") or {}).get("config", {}).get(k)) for c in cks)) for k in keys]
    formula = next(((c.get("model") or {}).get("flops_formula") for c in cks if (c.get("model") or {}).get("flops_formula")), None)
    return _table(["", *[c["label"] for c in cks]], rows, numeric=set(range(1, len(cks) + 1))) + (f"<p class=sub>FLOPs: {_esc(formula)}.</p>" if formula else "")


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


def _section_training(data: dict) -> str:
    runs = [c for c in data.get("checkpoints") or [] if c.get("training")]
    if not runs and data.get("loss_curve"):
        runs = [{"label": "trained_checkpoint", "training": {"loss_curve": data["loss_curve"], "summary": (data.get("training") or {}).get("summary")}}]
    if not runs:
        return "<p>No trained checkpoint.</p>"
    parts = []
    groups: dict[str, list] = {}
    xs = set()
    for c in runs:
        rows = c["training"].get("loss_curve") or []
        x = _x_of(rows)
        xs.add(x)
        for group, cols in curve_columns(rows).items():
            for col in cols:
                name = col.replace("_", " ") + (f" ({c['label']})" if len(runs) > 1 else "")
                groups.setdefault(group, []).append((name, [(r.get(x), r.get(col)) for r in rows]))
    xlabel = " / ".join(sorted(xs)) if xs else "step"
    for c in runs:  # lm-eval's held-out loss as one point at the end of each run
        rows = c["training"].get("loss_curve") or []
        x = _x_of(rows)
        last = max((r[x] for r in rows if _finite(r.get(x))), default=None)
        value = (c.get("headline") or {}).get("heldout_token_loss")
        if "loss" in groups and _finite(value) and last is not None:
            groups["loss"].append((f"held-out, lm-eval ({c['label']})", [(last, value)]))
    charts = [svg_chart(series, group, xlabel, "nats / token" if group == "loss" else group) for group, series in groups.items()]
    parts.append('<div class="charts">' + "".join(charts) + "</div>" if charts else "<p>No loss curve.</p>")
    summary_keys = []
    for c in runs:
        summary_keys += [k for k in (c["training"].get("summary") or {}) if k not in summary_keys]
    parts.append(_table(["", *[c["label"] for c in runs]],
                        [(SUMMARY_LABELS.get(k, k.replace("_", " ")), *(fmt((c["training"].get("summary") or {}).get(k)) for c in runs)) for k in summary_keys],
                        numeric=set(range(1, len(runs) + 1))))
    return "".join(parts)


def metric_matrix(data: dict) -> tuple[list[str], list[tuple]]:
    """Every (task, metric) row with 'value ± stderr' per checkpoint, and the samples scored."""
    cks = data.get("checkpoints") or [{"label": "trained_checkpoint", "metrics": data.get("metrics", {})}]
    labels = [c["label"] for c in cks]
    rows: dict[tuple, dict] = {}
    samples: dict[str, object] = {}
    for c in cks:
        for task, entry in (c.get("metrics") or {}).items():
            samples.setdefault(task, (entry.get("n_samples") or {}).get("effective"))
            for name, m in (entry.get("metrics") or {}).items():
                cell = fmt(m.get("value")) + (f" \u00b1 {fmt(m['stderr'])}" if m.get("stderr") is not None else "")
                rows.setdefault((task, f"{name} {_arrow(m.get('higher_is_better'))}".strip()), {})[c["label"]] = cell
    out = [(task, metric, *(cells.get(lab, DASH) for lab in labels), fmt(samples.get(task))) for (task, metric), cells in rows.items()]
    return labels, out


def _section_eval(data: dict) -> str:
    labels, rows = metric_matrix(data)
    return (_table(["task", "metric", *labels, "samples"], rows, numeric=set(range(2, len(labels) + 3)))
            + "<p class=sub>Value \u00b1 standard error where lm-eval gives one (mean metrics; the perplexities of the held-out task "
            "have none). \u2191 higher is better, \u2193 lower is better. " + _esc(HELDOUT_NOTE) + "</p>")


def _section_generations(data: dict) -> str:
    cks = data.get("checkpoints") or [{"label": "trained_checkpoint", "generations": data.get("generations") or []}]
    prompts = []
    for c in cks:
        prompts += [g.get("prompt", "") for g in c.get("generations") or [] if g.get("prompt", "") not in prompts]
    if not prompts:
        return "<p>No prompts configured.</p>"
    rows = []
    for p in prompts:
        cells = [f"<pre><span class=prompt>{_esc(p)}</span></pre>"]
        for c in cks:
            g = next((g for g in c.get("generations") or [] if g.get("prompt") == p), None)
            if g is None:
                cells.append(DASH)
                continue
            note = f'{g.get("new_tokens", DASH)} new tokens' + (", stopped at end of text" if g.get("stopped_at_eos") else "")
            cells.append(f'<pre><span class=prompt>{_esc(p)}</span>{_esc(g.get("completion", ""))}</pre><span class=sub>{_esc(note)}</span>')
        rows.append(cells)
    return _table(["prompt", *[c["label"] for c in cks]], rows, raw=True) + "<p class=sub>Greedy decoding from an end-of-text token followed by the prompt.</p>"


def _section_lineage(data: dict) -> str:
    arts = _lineage_sorted(data)
    me = {"stage": "eval_report", "key": data.get("key"), "settings": data.get("settings"),
          "inputs": {c["label"]: {"stage": c.get("stage"), "key": c.get("key")} for c in data.get("checkpoints") or []}}
    shards_key = (data.get("artifacts") or {}).get("shards")
    if shards_key:
        me["inputs"]["shards"] = {"stage": "shards", "key": shards_key}
    parts = []
    for a in [*arts, me]:
        ins = a.get("inputs") or {}
        used_by = [b for b in [*arts, me] if any(i.get("stage") == a.get("stage") and i.get("key") == a.get("key") for i in (b.get("inputs") or {}).values())]
        head = (f'<div class=art id="{_esc(anchor(a.get("stage"), a.get("key")))}"><h3>{_esc(a.get("stage"))} <code>{_esc(a.get("key"))}</code></h3>'
                f'<p class=sub>inputs: {", ".join(f"{_esc(n)} = " + _link(i.get("stage"), i.get("key")) for n, i in ins.items()) or "none"}'
                f'; used by: {", ".join(_link(b.get("stage"), b.get("key")) for b in used_by) or "none"}'
                + (f'; path <code>{_esc(a["path"])}</code>' if a.get("path") else "")
                + (f'; code <code>{_esc(str(a["code_hash"])[:12])}</code>' if a.get("code_hash") else "")
                + (f'; {_esc(fmt(a["seconds"]))} s' if _finite(a.get("seconds")) else "") + "</p>")
        settings = _flat(a.get("settings") or {})
        counts = _flat(a.get("counts") or {})
        body = ""
        if settings:
            body += f"<details open><summary>settings ({len(settings)})</summary>{_table(['key', 'value'], [(k, fmt(v)) for k, v in settings])}</details>"
        if counts:
            body += f"<details><summary>counts ({len(counts)})</summary>{_table(['count', 'value'], [(k, fmt(v)) for k, v in counts], numeric={1})}</details>"
        parts.append(head + body + "</div>")
    return "".join(parts)


def _section_provenance(data: dict) -> str:
    lm = data.get("lm_eval", {})
    rows = [(k, fmt(v)) for k, v in _flat({k: lm[k] for k in lm if k != "versions"})]
    rows += [(f"version {k}", fmt(v)) for k, v in (lm.get("versions") or {}).items()]
    rows += [(f"seconds {k}", fmt(v)) for k, v in _flat(data.get("seconds") or {})]
    return _table(["key", "value"], rows)


SECTIONS = [
    ("evaluation", "Evaluation", _section_eval),
    ("generations", "Sample generations", _section_generations),
    ("training", "Training", _section_training),
    ("data", "Data funnel", _section_data),
    ("tokenizer", "Tokenizer", _section_tokenizer),
    ("model", "Model", _section_model),
    ("lineage", "Lineage", _section_lineage),
    ("lm-eval", "lm-eval run", _section_provenance),
]


def render_html(data: dict, png: bytes | None = None) -> str:
    """One self-contained page: inline CSS and SVG, no script, no external resource.

    ``png`` is not used (the charts are SVG); the parameter stays for callers of the old API.
    """
    key = data.get("key") or DASH
    labels = [c["label"] for c in data.get("checkpoints") or []]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>lmbuild report {_esc(key)}</title><style>{CSS}</style></head><body>",
        "<h1>lmbuild report</h1>",
        f'<p class=sub>eval_report <a href="#{_esc(anchor("eval_report", key))}"><code>{_esc(key)}</code></a>'
        + (f'; checkpoints: {", ".join(_esc(x) for x in labels)} (headline: {_esc(data.get("primary"))})' if labels else "") + "</p>",
        f"<p class=lead>{_esc(headline_sentence(data))}</p>",
        "<div class=cards>" + "".join(f"<div class=card><div class=v>{_esc(v)}</div><div class=l>{_esc(label)}</div></div>" for label, v in _headline_cards(data)) + "</div>",
        "<nav>" + "".join(f'<a href="#{sid}">{_esc(title)}</a>' for sid, title, _ in SECTIONS) + "</nav>",
    ]
    for sid, title, fn in SECTIONS:
        try:
            body = fn(data)
        except Exception as exc:  # noqa: BLE001 - one odd manifest must not lose the whole report
            body = f"<p>Could not render this section: {_esc(type(exc).__name__)}: {_esc(exc)}</p>"
        parts.append(f'<h2 id="{sid}">{_esc(title)}</h2>{body}')
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- Markdown


def _md_cell(value) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(data: dict, image: str | None) -> str:
    """The same report in Markdown; ``image`` is the loss curve's path relative to the file."""
    key = data.get("key") or DASH
    lines = [
        "# lmbuild evaluation report",
        "",
        f"eval_report `{key}` of trained_checkpoint `{data.get('artifacts', {}).get('trained_checkpoint') or DASH}`",
        "",
        headline_sentence(data),
        "",
        *_md_table(["headline", "value"], _headline_cards(data)),
        HELDOUT_NOTE,
        "",
        "## Metrics (lm-eval)",
        "",
        *_md_table(["task", "metric", *metric_matrix(data)[0], "samples"], metric_matrix(data)[1]),
        "## Loss curve",
        "",
        f"![training and validation loss against tokens]({image})" if image else "No loss curve.",
        "",
        "## Sample generations (greedy)",
        "",
    ]
    cks = data.get("checkpoints") or [{"label": "trained_checkpoint", "generations": data.get("generations") or []}]
    prompts = []
    for c in cks:
        prompts += [g.get("prompt", "") for g in c.get("generations") or [] if g.get("prompt", "") not in prompts]
    for i, prompt in enumerate(prompts, 1):
        lines += [f"**{i}. Prompt**", "", _fence(prompt) + "text", prompt, _fence(prompt), ""]
        for c in cks:
            g = next((g for g in c.get("generations") or [] if g.get("prompt") == prompt), None)
            if g is None:
                continue
            completion = g.get("completion", "")
            end = ", stopped at end of text" if g.get("stopped_at_eos") else ""
            lines += [f"**{c['label']}** ({g.get('new_tokens', DASH)} new tokens{end})", "", _fence(completion) + "text", completion, _fence(completion), ""]
    lines += ["## Configuration and provenance", ""]
    for title, rows in _kv_sections(data):
        if rows:
            lines += [f"### {title}", "", *_md_table(["key", "value"], rows)]
    return "\n".join(lines)
