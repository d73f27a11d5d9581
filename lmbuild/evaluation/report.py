"""Stage ``report``: eval_report's ``report.json`` rendered as one self-contained HTML page.

The data is checked against ``lmbuild/schemas/report.schema.json`` first (one shape, no fallbacks),
shaped into plain rows (:mod:`lmbuild.evaluation.report_rows`, and from the lineage
:mod:`lmbuild.evaluation.report_lineage`), drawn as matplotlib's SVG, inlined
(:mod:`lmbuild.evaluation.report_charts`): every metric of every checkpoint, each metric against
tokens seen along a training run that has two or more checkpoints, the training curves, the
data funnel and the data's statistics (:mod:`lmbuild.evaluation.report_data`); and laid out here by the jinja2 template ``lmbuild/evaluation/templates/report.html.j2``
(autoescaped). Missing values render as a dash.

What it does not do: evaluate, read anything but report.json, or fetch anything (the page
has no script and no external resource). Rendering is its own stage so that a change of the
page re-renders in seconds and re-runs no evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import jsonschema

from lmbuild.errors import UserError
from lmbuild.evaluation.report_data import data_section
from lmbuild.evaluation.report_charts import bar_chart, metrics_chart, metrics_vs_tokens_chart, training_charts
from lmbuild.evaluation.report_lineage import dedup_rows, drop_reasons, funnel_rows, lineage_entries, lineage_sorted
from lmbuild.evaluation.report_rows import (
    SUMMARY_LABELS, flat, fmt, generation_rows, headline_cards, headline_sentence, metric_matrix, model_rows, run_label,
    skipped_rows, training_runs,
)

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"
TEMPLATE = "report.html.j2"
HELDOUT_NOTE = (
    "Held-out loss is lm-eval's total negative log-likelihood of the held-out documents divided by "
    "their token count (windows of the model's context, each document from a fresh context): "
    "comparable with the training val loss. Word perplexity is per whitespace-separated word."
)


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
        "runs": [(run_label(cs), [(c["label"], fmt(c["tokens_seen"])) for c in cs]) for cs in training_runs(data).values()],
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
        "data": data_section(data),
        "tokenizers": [(a["key"], [(k, fmt(v)) for k, v in flat(a.get("counts") or {})]) for a in tokenizer_arts],
        "tokenizer_rows": [(c["label"], *(fmt(c["tokenizer"].get(k)) for k in ("vocab_size", "tokens", "words", "bytes", "tokens_per_word", "tokens_per_byte"))) for c in cks],
        "model_rows": model_rows(cks),
        "flops_formula": next((c["model"]["flops_formula"] for c in cks if c["model"].get("flops_formula")), None),
        "lineage": lineage_entries(data),
        "provenance": [(k, fmt(v)) for k, v in flat({k: v for k, v in lm.items() if k != "versions"})]
        + [(f"version {k}", fmt(v)) for k, v in lm["versions"].items()]
        + [(f"seconds {k}", fmt(v)) for k, v in flat(data["seconds"])],
        "per_checkpoint_lm_eval": [(c["label"], [(k, fmt(v)) for k, v in flat(c["lm_eval"])]) for c in cks],
    }


def render_html(data: dict) -> str:
    """One self-contained page: inline CSS and SVG, no script, no external resource."""
    return _environment().get_template(TEMPLATE).render(**context(data))
