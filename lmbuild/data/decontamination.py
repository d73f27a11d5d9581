"""Decontamination for stage ``deduplicated`` (lmbuild.data.deduplicated), optional
(``data.dedup.decontaminate``).

A document is dropped when one of its word 13-grams, normalised as lm-eval's ``Janitor``
(lowercase ASCII, punctuation deleted, split on whitespace), occurs in the configured evaluation data: the check of Brown et al. 2020
(GPT-3, appendix C), also used by lm-eval's decontamination. Membership is a numpy binary search
in the sorted 64-bit hashes of the evaluation n-grams (a few MB for HellaSwag and WikiText-2);
training n-grams are never held beyond one record batch. An evaluation text shorter than 13
words but of at least ``min_words`` (8) is one n-gram of its own length, so that a short
question quoted whole is found too (GPT-3 appendix C matches such examples whole); training
documents are then also hashed into n-grams of those lengths (one pass over their word hashes each).

Sources: ``data.dedup.decontaminate.eval`` files, and the evaluated tasks' local data
(``eval_tasks`` in the stage's settings, lmbuild.data.eval_sources), named ``task:<name>``
in the counts; a task's record gives one text per string field (lists and nested objects
walked), so a question and each of its choices are separate texts. A contaminated document is dropped
with the reason ``contaminated`` even where it survived deduplication (its duplicates are still
dropped as duplicates).

What this module does not do: drop anything (the stage's gather does, from the ids found here),
or normalise text for deduplication.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmbuild.data.minhash import ngram_hashes, sorted_unique, word_hashes
from lmbuild.errors import UserError


def eval_files(settings: dict) -> list[tuple[int, str]]:
    """(entry index, file) for every configured evaluation file, sorted; UserError if a glob is empty."""
    out = []
    for i, entry in enumerate(settings.get("decontaminate", {}).get("eval", [])):
        files = sorted(p for p in glob.glob(entry["path"], recursive=True) if Path(p).is_file())
        if not files:
            raise UserError(f"data.dedup.decontaminate.eval[{i}].path: no file matches {entry['path']!r}")
        out += [(i, f) for f in files]
    return out


def _eval_texts(path: str, fields: list[str], where: str) -> list[str]:
    """One text per JSON line (the named fields joined; lists flattened), or the whole file."""
    if not path.endswith((".jsonl", ".json")):
        return [Path(path).read_text(encoding="utf-8", errors="replace")]
    texts = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{line_no}: not JSON ({exc.msg}); {where}") from None
            parts = []
            for field in fields:
                value = rec.get(field) if isinstance(rec, dict) else None
                if value is None:
                    raise UserError(f"{path}:{line_no}: no field {field!r} ({where}.fields)")
                parts += [str(v) for v in value] if isinstance(value, list) else [str(value)]
            texts.append("\n".join(parts))
    return texts


def _strings(value) -> list[str]:
    """Every string inside a JSON value (lists and objects walked)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


def _task_texts(path: str, task: str) -> list[str]:
    """Every string field of every record of a task's data file (.jsonl/.json/.parquet)."""
    if path.endswith(".parquet"):
        return [t for rec in pq.read_table(path).to_pylist() for t in _strings(rec)]
    texts: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        if path.endswith(".json") and f.read(1) in ("[", "{"):  # one JSON document, not JSON Lines
            f.seek(0)
            try:
                return _strings(json.load(f))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: not JSON ({exc.msg}); eval.tasks ({task})") from None
        f.seek(0)
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    texts += _strings(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{line_no}: not JSON ({exc.msg}); eval.tasks ({task})") from None
    return texts


def grams_by_length(texts: list[str], n: int, min_words: int) -> dict[int, np.ndarray]:
    """{length: sorted unique hashes}: the n-grams of ``texts``, and every text of ``min_words``
    to n - 1 words as one gram of its length (normalised as lm-eval's Janitor)."""
    if not texts:
        return {}
    words, docs = word_hashes(pa.array(texts, pa.large_string()), punctuation="delete", numbers=False)
    out = {n: ngram_hashes(words, docs, n, short=False)[0]}
    counts = np.bincount(docs, minlength=len(texts))
    for k in sorted(set(counts[(counts >= min_words) & (counts < n)].tolist())):
        sel = np.isin(docs, np.flatnonzero(counts == k))
        out[k] = ngram_hashes(words[sel], docs[sel], k, short=False)[0]
    return {k: sorted_unique(v) for k, v in out.items() if len(v)}


def _merge(parts: list[dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    keys = sorted({k for p in parts for k in p})
    return {k: sorted_unique(np.concatenate([p[k] for p in parts if k in p])) for k in keys}


def eval_index(settings: dict) -> tuple[int, list[tuple[str, dict[int, np.ndarray]]]]:
    """(n, [(source name, {gram length: sorted unique hashes})]) of the configured evaluation
    data: each ``decontaminate.eval`` entry (named by its path), then each evaluated task
    (``task:<name>``)."""
    deco = settings.get("decontaminate", {})
    n = deco.get("ngram", 13)
    min_words = min(deco.get("min_words", n), n)
    entries = deco.get("eval", [])
    by_entry: dict[int, list] = {}
    for i, f in eval_files(settings):
        texts = _eval_texts(f, entries[i].get("fields", ["text"]), f"data.dedup.decontaminate.eval[{i}]")
        by_entry.setdefault(i, []).append(grams_by_length(texts, n, min_words))
    out = [(entries[i]["path"], _merge(v)) for i, v in sorted(by_entry.items())]
    by_task: dict[str, list] = {}
    for entry in settings.get("eval_tasks", []):
        by_task.setdefault(entry["task"], []).append(grams_by_length(_task_texts(entry["path"], entry["task"]), n, min_words))
    out += [(f"task:{t}", _merge(v)) for t, v in by_task.items()]
    return n, [(name, grams) for name, grams in out if grams]


def _hits(words: np.ndarray, docs: np.ndarray, rows: int, grams: dict[int, np.ndarray]) -> np.ndarray:
    """Per document, whether one of its word k-grams is in ``grams[k]`` for some k."""
    hit = np.zeros(rows, bool)
    for k, index in grams.items():
        g, gdocs = ngram_hashes(words, docs, k, short=False)
        if len(g) and len(index):
            pos = np.minimum(np.searchsorted(index, g), len(index) - 1)
            hit[gdocs[index[pos] == g]] = True
    return hit


def contaminated_table(batches: Iterable[pa.RecordBatch], n: int, index: list) -> pa.Table:
    """``(id, eval)`` of every document of ``batches`` (id, text) that shares a gram with an
    entry of ``index`` (:func:`eval_index`), ``eval`` the first such entry's name. Without an
    index it reads no batch."""
    conta_ids: list[pa.Array] = []
    conta_src: list[pa.Array] = []
    if index:
        for batch in batches:
            words, docs = word_hashes(batch.column("text"), punctuation="delete", numbers=False)
            hit = np.zeros(batch.num_rows, bool)
            source = np.full(batch.num_rows, "", object)
            for name, grams in index:
                new = _hits(words, docs, batch.num_rows, grams) & ~hit
                source[new] = name
                hit |= new
            if hit.any():
                sel = pa.array(np.flatnonzero(hit))
                conta_ids.append(batch.column("id").take(sel))
                conta_src.append(pa.array(list(source[hit]), pa.string()))
    return pa.table(
        {"id": pa.concat_arrays(conta_ids) if conta_ids else pa.array([], pa.string()),
         "eval": pa.concat_arrays(conta_src) if conta_src else pa.array([], pa.string())}
    )
