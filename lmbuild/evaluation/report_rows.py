"""The rows the report page shows of its checkpoints, shaped from ``report.json`` (stage ``report``).

Plain data, every figure formatted for people (:func:`fmt`; a missing value is a dash): the
headline sentence and cards, every metric of every checkpoint with its standard error, the
training runs (checkpoints by run, in tokens-seen order), the models' sizes, the sample
generations side by side, and what was not run for a checkpoint and why. Whatever the data
holds is shown, not a fixed list: a metric or headline figure no code names gets its row.

What it does not do: draw (:mod:`lmbuild.evaluation.report_charts`), read the lineage's counts
(:mod:`lmbuild.evaluation.report_lineage`), or lay out the page (:mod:`lmbuild.evaluation.report`).
"""

from __future__ import annotations

import json
import math

from lmbuild.numbers import finite

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
SUMMARY_LABELS = {"tokens_seen": "tokens seen", "tokens_per_second": "tokens / s", "parameters": "parameters"}


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


def arrow(higher_is_better) -> str:
    """\u2191 where higher is better, \u2193 where lower, nothing where lm-eval does not say."""
    return {True: "\u2191", False: "\u2193"}.get(higher_is_better, "")


def flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested settings -> (dotted key, value) rows; lists and empty dicts as JSON."""
    rows = []
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            rows += flat(v, f"{prefix}{k}.")
        else:
            plain = v is None or isinstance(v, (int, float, str))  # bool is an int
            rows.append((f"{prefix}{k}", v if plain else json.dumps(v, ensure_ascii=False)))
    return rows


def metric_names(data: dict) -> list[tuple[str, str]]:
    """Every (task, metric) any checkpoint has, in first-seen order: whatever lm-eval (or the
    masked-LM evaluation) reported, not a fixed list."""
    out = []
    for c in data["checkpoints"]:
        for task, entry in c["metrics"].items():
            out += [(task, m) for m in entry["metrics"] if (task, m) not in out]
    return out


def metric_of(c: dict, task: str, name: str) -> dict:
    """Checkpoint ``c``'s metric ``name`` of ``task`` (value, stderr, higher_is_better); {} where it has none."""
    return (c["metrics"].get(task) or {"metrics": {}})["metrics"].get(name) or {}


def training_runs(data: dict) -> dict[str, list[dict]]:
    """Checkpoints by training run (``run``), each run's in tokens-seen order: only runs with two
    or more checkpoints whose tokens seen are known."""
    runs: dict[str, list[dict]] = {}
    for c in data["checkpoints"]:
        if finite(c.get("tokens_seen")) is not None:
            runs.setdefault(c["run"], []).append(c)
    return {r: sorted(cs, key=lambda c: c["tokens_seen"]) for r, cs in runs.items() if len(cs) >= 2}


def run_label(cks: list[dict]) -> str:
    return cks[-1]["label"]  # the run's furthest checkpoint names it


def headline_sentence(h: dict) -> str:
    """One line: where val loss went, and the held-out perplexity."""
    parts = []
    if h.get("final_val_loss") is not None:
        loss = f"Validation loss {fmt(h.get('initial_val_loss'))} \u2192 {fmt(h['final_val_loss'])}"
        if finite(h.get("initial_val_loss")) is not None and finite(h["final_val_loss"]) is not None:
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
            m = metric_of(c, task, name)
            cells.append(fmt(m.get("value")) + (f" \u00b1 {fmt(m['stderr'])}" if m.get("stderr") is not None else "") if m else DASH)
        hib = next((metric_of(c, task, name).get("higher_is_better") for c in cks if metric_of(c, task, name).get("higher_is_better") is not None), None)
        samples = next((((c["metrics"].get(task) or {}).get("n_samples") or {}).get("effective") for c in cks if task in c["metrics"]), None)
        rows.append((task, f"{name} {arrow(hib)}".strip(), *cells, fmt(samples)))
    return labels, rows


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
