"""Decontamination for stage ``deduplicated`` (lmbuild.data.deduplicated), optional
(``data.dedup.decontaminate``).

A document is dropped when one of its word 13-grams, normalised as lm-eval's ``Janitor``
(lowercase ASCII, punctuation deleted, split on whitespace), occurs in the configured evaluation data: the check of Brown et al. 2020
(GPT-3, appendix C), also used by lm-eval's decontamination. Membership is a numpy binary search
in the sorted 64-bit hashes of the evaluation n-grams (a few MB for HellaSwag and WikiText-2);
training n-grams are never held beyond one record batch. A contaminated document is dropped
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

from lmbuild.data.minhash import contaminated, ngram_set, sorted_unique
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


def eval_index(settings: dict) -> tuple[int, list[tuple[str, np.ndarray]]]:
    """(n, [(eval entry path, sorted unique n-gram hashes)]) of the configured evaluation data."""
    deco = settings.get("decontaminate", {})
    n = deco.get("ngram", 13)
    entries = deco.get("eval", [])
    by_entry: dict[int, list[np.ndarray]] = {}
    for i, f in eval_files(settings):
        texts = _eval_texts(f, entries[i].get("fields", ["text"]), f"data.dedup.decontaminate.eval[{i}]")
        by_entry.setdefault(i, []).append(ngram_set(pa.array(texts, pa.large_string()), n))
    return n, [(entries[i]["path"], sorted_unique(np.concatenate(v))) for i, v in sorted(by_entry.items())]


def contaminated_table(batches: Iterable[pa.RecordBatch], n: int, index: list[tuple[str, np.ndarray]]) -> pa.Table:
    """``(id, eval)`` of every document of ``batches`` (id, text) that shares an ``n``-gram with
    an entry of ``index`` (:func:`eval_index`), ``eval`` the first such entry's path. Without an
    index it reads no batch."""
    conta_ids: list[pa.Array] = []
    conta_src: list[pa.Array] = []
    if index:
        for batch in batches:
            hit = np.zeros(batch.num_rows, bool)
            source = np.full(batch.num_rows, "", object)
            for path, grams in index:
                new = (contaminated(batch.column("text"), n, grams) > 0) & ~hit
                source[new] = path
                hit |= new
            if hit.any():
                sel = pa.array(np.flatnonzero(hit))
                conta_ids.append(batch.column("id").take(sel))
                conta_src.append(pa.array(list(source[hit]), pa.string()))
    return pa.table(
        {"id": pa.concat_arrays(conta_ids) if conta_ids else pa.array([], pa.string()),
         "eval": pa.concat_arrays(conta_src) if conta_src else pa.array([], pa.string())}
    )
