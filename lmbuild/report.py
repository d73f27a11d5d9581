"""Render an evaluation report: the ``report.json`` data dict -> PNG, HTML and Markdown.

Pure functions, no file I/O: :mod:`lmbuild.evaluate` builds the dict and writes the files.
The HTML page is self-contained (inline CSS, the loss curve as a base64 data URI, no
external resources) and every text taken from the data is HTML-escaped. Missing values
render as a dash, so a report of a partial run still renders.
"""

from __future__ import annotations

import base64
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
            [(k, fmt(v)) for k, v in _flat({k: lm[k] for k in ("model", "batch_size", "device", "limit", "max_length", "seeds", "bootstrap_iters", "include_path", "include_path_digest") if k in lm})]
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
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:980px;
padding:0 1rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
.sub{color:#57606a;margin-top:0}.lead{font-size:1.05rem}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .8rem;min-width:9rem}
.card .v{font-size:1.25rem;font-weight:600}.card .l{color:#57606a;font-size:.8rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.6rem;white-space:pre-wrap;word-break:break-word;font-size:.85rem}
.prompt{font-weight:700;color:#0550ae}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:0 1.5rem}
img{max-width:100%;border:1px solid #d0d7de;border-radius:6px}code{font-size:.85rem}
"""


def _table(headers: list[str], rows: list[tuple], numeric: set[int] = frozenset()) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{e(str(c))}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict, png: bytes | None) -> str:
    """One self-contained HTML page; ``png`` is embedded as a data URI."""
    e = html.escape
    key = data.get("key") or DASH
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>lmbuild evaluation report {e(key)}</title><style>{CSS}</style></head><body>",
        "<h1>lmbuild evaluation report</h1>",
        f'<p class=sub>eval_report <code>{e(key)}</code> of trained_checkpoint <code>{e(str(data.get("artifacts", {}).get("trained_checkpoint") or DASH))}</code></p>',
        f"<p class=lead>{e(headline_sentence(data))}</p>",
        "<div class=cards>"
        + "".join(f"<div class=card><div class=v>{e(v)}</div><div class=l>{e(label)}</div></div>" for label, v in _headline_cards(data))
        + "</div>",
        f"<p class=sub>{e(HELDOUT_NOTE)}</p>",
        "<h2>Metrics (lm-eval)</h2>",
        _table(["task", "metric", "value", "stderr", "samples"], metric_rows(data), numeric={2, 3, 4}),
        "<p class=sub>\u2191 higher is better, \u2193 lower is better. Perplexities are over the held-out validation documents; "
        "stderr where lm-eval gives one.</p>",
        "<h2>Loss curve</h2>",
        f'<img alt="training and validation loss against tokens" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        if png
        else "<p>No loss curve.</p>",
        "<h2>Sample generations (greedy)</h2>",
    ]
    gens = data.get("generations") or []
    for g in gens:
        note = f'{g.get("new_tokens", DASH)} new tokens' + (", stopped at end of text" if g.get("stopped_at_eos") else "")
        parts.append(f'<pre><span class=prompt>{e(g.get("prompt", ""))}</span>{e(g.get("completion", ""))}</pre><p class=sub>{e(note)}</p>')
    if not gens:
        parts.append("<p>No prompts configured.</p>")
    parts.append("<h2>Configuration and provenance</h2><div class=grid>")
    for title, rows in _kv_sections(data):
        if rows:
            parts.append(f"<div><h3>{e(title)}</h3>{_table(['key', 'value'], rows)}</div>")
    parts.append("</div></body></html>\n")
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
        *_md_table(["task", "metric", "value", "stderr", "samples"], metric_rows(data)),
        "## Loss curve",
        "",
        f"![training and validation loss against tokens]({image})" if image else "No loss curve.",
        "",
        "## Sample generations (greedy)",
        "",
    ]
    for i, g in enumerate(data.get("generations") or [], 1):
        prompt, completion = g.get("prompt", ""), g.get("completion", "")
        end = ", stopped at end of text" if g.get("stopped_at_eos") else ""
        lines += [f"**{i}. Prompt**", "", _fence(prompt) + "text", prompt, _fence(prompt), ""]
        lines += [f"**Completion** ({g.get('new_tokens', DASH)} new tokens{end})", "", _fence(completion) + "text", completion, _fence(completion), ""]
    lines += ["## Configuration and provenance", ""]
    for title, rows in _kv_sections(data):
        if rows:
            lines += [f"### {title}", "", *_md_table(["key", "value"], rows)]
    return "\n".join(lines)
