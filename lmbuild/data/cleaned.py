"""Stage ``cleaned``: normalise Unicode, then filter prose and code by the rules of Gopher,
C4, FineWeb and StarCoder, identify the language, redact PII; count every drop and edit
under its reason and keep the dropped documents for inspection.

Layout of the artifact::

    shard-00000.parquet ...          one per raw shard: the raw schema + lang, lang_score
                                     (+ quality_score, <name>_score per classifier scoring them)
    dropped/shard-00000.parquet ...  dropped documents: id, source, reason, lang, lang_score,
                                     chars, text (bounded, see below)
    manifest.json                    counts: documents/bytes in and out, dropped per reason,
                                     edits per kind (PII, C4 line removals, documents split
                                     per word segmenter), drops per language, per shard
    stats.json                       per source: the kept documents' characters, words,
                                     languages, scores and domains, drops per reason
                                     (lmbuild.data.statistics; also ``stats`` in the counts)

The ``text`` column holds the normalised, edited text. ``lang`` / ``lang_score`` are
fastText's top label and probability for prose, null for code.

Each document goes through the rules in the order lmbuild.data.cleaner describes, stopping at
the first drop: the URL rules for every document with a URL; for prose, length, language ID, Gopher repetition, Gopher quality, C4 and
FineWeb (then C4's bad words, when on); for code, length and StarCoder's rules.

With ``data.clean.quality.enabled``, prose that passed the rules is scored by the
``quality_model`` stage's fastText classifier (an input of this stage) and dropped under
``threshold`` (``quality_score``) or outside each shard's ``top_fraction``
(``quality_top_fraction``; the shard is written, then rewritten without them). The named
classifiers of ``data.classifiers`` then score it too and apply their keep rules (reason
``classifier:<name>``; lmbuild.data.classifiers).

Then PII redaction on the kept documents of both kinds.

The dropped side artifact keeps at most ``dropped.max_per_reason`` documents per reason
and shard (the first ones met), each cut to ``dropped.max_chars`` characters (``chars`` is
the full length): with the defaults at most 200 x 20,000 characters x ~30 reasons, ~120 MB
per shard in the worst case, usually far less. It is for a person judging a threshold from
real examples; nothing downstream reads it.

Fan-out: one job per raw shard (:func:`build_part`, rule ``build_cleaned_part``), then a
gather job (:func:`build` with the parts as input) that hard-links the part files into the
artifact and sums their counts, so a cluster runs thousands of shards as thousands of
jobs. Without parts (tests, library use), :func:`build` cleans every shard itself, in
forked processes when ``threads > 1``.

Memory: a shard is read ``READ_ROWS`` documents at a time and written batch by batch, so
it does not grow with the shard or corpus size; a single document is held whole (a 50 MB
document is read, counted and dropped as ``too_long`` under the default ``max_chars``).

What this stage does not do: remove boilerplate from web pages (the ``html`` source type
extracts main text at ingest), or fix encodings; data.clean.quality's ``top_fraction``
is per shard, not a corpus-wide rank (a named classifier's is a threshold fixed at training).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmbuild.store.artifact import link_or_copy, parquet_shards, read_manifest
from lmbuild.data import statistics
from lmbuild.data.classifiers import Classifiers
from lmbuild.data.cleaner import QUALITY_SCHEMA, SCHEMA, SourceCleaners, schema  # noqa: F401 (the schemas, for readers)
from lmbuild.data.filters import load_lid_model
from lmbuild.data.groups import shard_name
from lmbuild.data.quality import LEGACY, load_classifier
from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)

DROPPED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("reason", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
        ("chars", pa.int64()),
        ("text", pa.string()),
    ]
)
DROPPED_DIR = "dropped"
READ_ROWS = 256  # rows per record batch read from a raw shard
COUNTS = ("documents_in", "documents_out", "bytes_in", "bytes_out")


def output_schema(settings: dict) -> pa.Schema:
    """The kept shards' schema: a score column per classifier that scores them."""
    return schema(settings)


class DroppedWriter:
    """The dropped documents of one shard, at most ``max_per_reason`` per reason."""

    def __init__(self, path: Path, max_per_reason: int, max_chars: int):
        self.path, self.cap, self.max_chars = path, max_per_reason, max_chars
        self.kept: Counter = Counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(path, DROPPED_SCHEMA, compression="zstd")

    def add(self, batch: pa.RecordBatch, reasons, langs, scores, texts) -> None:
        rows = []
        for i, r in enumerate(reasons):
            if r is not None and self.kept[r] < self.cap:
                self.kept[r] += 1
                rows.append(i)
        if not rows:
            return
        idx = pa.array(rows, pa.int64())
        self.writer.write_batch(
            pa.RecordBatch.from_arrays(
                [
                    batch.column("id").take(idx),
                    batch.column("source").take(idx),
                    pa.array([reasons[i] for i in rows], pa.string()),
                    pa.array([langs[i] for i in rows], pa.string()),
                    pa.array([scores[i] for i in rows], pa.float32()),
                    pa.array([len(texts[i]) for i in rows], pa.int64()),
                    pa.array([texts[i][: self.max_chars] for i in rows], pa.string()),
                ],
                schema=DROPPED_SCHEMA,
            )
        )

    def close(self) -> None:
        self.writer.close()


def _text_bytes(col) -> int:
    return pc.sum(pc.binary_length(col)).as_py() or 0


def _top_fraction(path: Path, fraction: float, side: "DroppedWriter", dropped: Counter, by_lang: Counter, counts: dict) -> None:
    """Keep the ``fraction`` of the shard's scored documents with the highest scores (ties:
    the earlier document); rewrite the shard without the others. Unscored (code) rows stay."""
    table = pq.read_table(path)
    q = table.column("quality_score").to_pylist()
    scored = [i for i, v in enumerate(q) if v is not None]
    n_keep = math.ceil(fraction * len(scored))
    ranked = sorted(scored, key=lambda i: (-q[i], i))
    drop = set(ranked[n_keep:])
    if not drop:
        return
    keep = pa.array([i for i in range(table.num_rows) if i not in drop], pa.int64())
    gone = table.take(pa.array(sorted(drop), pa.int64()))
    texts, langs = gone.column("text").to_pylist(), gone.column("lang").to_pylist()
    reasons = ["quality_top_fraction"] * gone.num_rows
    for batch in gone.to_batches():
        n = batch.num_rows
        side.add(batch, reasons[:n], langs[:n], batch.column("lang_score").to_pylist(), texts[:n])
        texts, langs, reasons = texts[n:], langs[n:], reasons[n:]
    dropped["quality_top_fraction"] += gone.num_rows
    for lang in gone.column("lang").to_pylist():
        by_lang[(lang or "none", "quality_top_fraction")] += 1
    counts["documents_out"] -= gone.num_rows
    counts["bytes_out"] -= _text_bytes(gone.column("text"))
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table.take(keep), tmp, compression="zstd")
    os.replace(tmp, path)


def _by_lang(by_lang: Counter) -> dict:
    out: dict = {}
    for (lang, reason), n in sorted(by_lang.items()):
        out.setdefault(lang, {})[reason] = n
    return out


def clean_shard(job: tuple) -> dict:
    """Clean the raw shard ``src`` into ``out/<name>`` and ``out/dropped/<name>``; return its counts.

    ``job``: ``(src, out, settings)`` or ``(src, out, settings, classifier path)``.
    """
    src, out, settings = job[:3]
    classifier = job[3] if len(job) > 3 else None
    src, out = Path(src), Path(out)
    cleaner = SourceCleaners(settings, classifier)
    by_lang: Counter = Counter()
    dropped: Counter = Counter()
    edits: Counter = Counter()
    counts = dict.fromkeys(COUNTS, 0)
    read, dropped_by_source = Counter(), Counter()
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{src}: not a readable Parquet shard: {str(exc).splitlines()[0]}") from None
    missing = {"id", "text", "source", "metadata"} - set(pf.schema_arrow.names)
    if missing:
        raise UserError(f"{src}: not a raw shard, missing column(s) {', '.join(sorted(missing))}")
    keep_dropped = settings["dropped"]
    side = DroppedWriter(out / DROPPED_DIR / src.name, keep_dropped["max_per_reason"], keep_dropped["max_chars"])
    try:
        with pq.ParquetWriter(out / src.name, output_schema(settings), compression="zstd") as writer:
            for batch in pf.iter_batches(batch_size=READ_ROWS, columns=["id", "text", "source", "metadata"]):
                kept, reasons, langs, scores, texts = cleaner.batch(batch, edits)
                dropped.update(r for r in reasons if r is not None)
                sources = batch.column("source").to_pylist()
                read.update(sources)
                dropped_by_source.update((s, r) for s, r in zip(sources, reasons) if r is not None)
                by_lang.update((lang or "none", r) for lang, r in zip(langs, reasons) if r is not None)
                side.add(batch, reasons, langs, scores, texts)
                counts["documents_in"] += batch.num_rows
                counts["bytes_in"] += _text_bytes(batch.column("text"))
                counts["documents_out"] += kept.num_rows
                counts["bytes_out"] += _text_bytes(kept.column("text"))
                if kept.num_rows:
                    writer.write_batch(kept)
        top = settings["quality"]["top_fraction"]
        if cleaner.classifier is not None and top is not None:
            _top_fraction(out / src.name, top, side, dropped, by_lang, counts)
    finally:
        side.close()
    counts["dropped"] = dict(sorted(dropped.items()))
    counts["dropped_by_lang"] = _by_lang(by_lang)
    counts["edits"] = dict(sorted(edits.items()))
    counts["dropped_kept"] = sum(side.kept.values())
    if cleaner.stage.named:
        counts["classifiers"] = cleaner.stage.named.describe()
    url_fields = {settings["url"]["field"], *((o.get("url") or {}).get("field") for o in settings["per_source"].values())} - {None}
    counts["stats"] = statistics.cleaned_part(out / src.name, read, dropped_by_source, url_fields)
    log.info("%s: %d -> %d documents, dropped %s, edits %s", src.name, counts["documents_in"], counts["documents_out"], counts["dropped"], counts["edits"])
    return counts


def _pool(workers: int):
    # fork: workers inherit the imported modules (and a loaded model) at no start-up cost.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers)


def build_part(ctx: StageContext) -> dict:
    """One fan-out job: clean shard ``settings["shard"]`` of a raw part (its own numbering) into
    ``ctx.out``, under the same name; the gather names it globally."""
    part = int(ctx.settings["shard"])
    src = Path(ctx.inputs["raw"]) / shard_name(part)
    if not src.is_file():
        raise UserError(f"{src}: no such raw shard (data.shards smaller than part {part}?)")
    settings = {k: v for k, v in ctx.settings.items() if k != "shard"}
    return {"shard": src.name, **clean_shard((str(src), str(ctx.out), settings, _classifier(ctx)))}


def _classifier(ctx: StageContext) -> str | None:
    """The quality_model artifact's path (its classifiers), when cleaning scores with one."""
    path = ctx.inputs.get("quality_model")
    return None if path is None else str(path)


def _gather(parts: list[Path], out: Path) -> list[dict]:
    """Link the parts' shards in order as ``shard-00000`` ... (their global names: one part per
    raw shard, in the raw artifact's order); each part's counts with its key."""
    results = []
    for i, part in enumerate(parts):
        try:
            manifest = read_manifest(part)
            counts = dict(manifest["counts"])
        except (OSError, ValueError, KeyError):
            raise UserError(f"{part}: not a complete cleaned part (no manifest)") from None
        name = shard_name(i)
        link_or_copy(part / counts["shard"], out / name)
        link_or_copy(part / DROPPED_DIR / counts["shard"], out / DROPPED_DIR / name)
        results.append({**counts, "shard": name, "key": manifest["key"]})
    return results


def build(ctx: StageContext) -> dict:
    """The stage's artifact: gather the fan-out parts when given, else clean every shard here."""
    parts = ctx.inputs.get("parts")
    if parts is not None:
        results = _gather([Path(p) for p in parts], ctx.out)
    else:
        shards = parquet_shards(ctx.inputs["raw"], "raw")
        jobs = [(str(p), str(ctx.out), ctx.settings, _classifier(ctx)) for p in shards]
        workers = max(1, min(ctx.threads, len(jobs)))
        if workers > 1:
            # Once before the fork instead of once per worker: the model, and pyarrow's first
            # pa.array() call, which imports pandas (~0.6 s).
            load_lid_model()
            if ctx.settings["quality"]["enabled"]:
                load_classifier(str(Path(_classifier(ctx)) / LEGACY))
            Classifiers(ctx.settings, _classifier(ctx)).load()
            pa.array([""])
            with _pool(workers) as pool:
                results = pool.map(clean_shard, jobs, chunksize=1)
        else:
            results = [clean_shard(j) for j in jobs]
        results = [{"shard": Path(p).name, **r} for p, r in zip(shards, results)]
    total = {k: sum(r[k] for r in results) for k in COUNTS}
    dropped: Counter = Counter()
    edits: Counter = Counter()
    by_lang: Counter = Counter()
    for r in results:
        dropped.update(r["dropped"])
        edits.update(r["edits"])
        by_lang.update({(lang, reason): n for lang, reasons in r["dropped_by_lang"].items() for reason, n in reasons.items()})
    total["dropped"] = dict(sorted(dropped.items()))
    total["dropped_by_lang"] = _by_lang(by_lang)
    total["edits"] = dict(sorted(edits.items()))
    total["dropped_kept"] = sum(r["dropped_kept"] for r in results)
    total["shards"] = [{k: r[k] for k in ("shard", *COUNTS)} for r in results]
    if results and "classifiers" in results[0]:  # the same rules in every part
        total["classifiers"] = results[0]["classifiers"]
    total["stats"] = statistics.merge([r["stats"] for r in results])
    statistics.write(ctx.out, total["stats"])
    if parts is not None:  # the index of the parts this artifact is made of (gc keeps them)
        total["part_keys"] = [r["key"] for r in results]
    if total["documents_in"] and not total["documents_out"]:
        detail = ", ".join(f"{k}: {v}" for k, v in dropped.most_common())
        raise UserError(f"every document was dropped by cleaning ({detail}); loosen data.clean settings")
    return total
