"""Stage ``raw``: read every configured source into Parquet shards of one schema.

Schema: ``id: string, text: string, source: string, metadata: string`` (metadata is a JSON
object with at least ``kind``). Fanned out (``lmbuild.data.groups``): one job
(:func:`build_part`) per group of input files of one source writes ``data.shards`` shards
named from ``shard-00000``, document k of its stream to the k mod n-th of them; the part is a
store entry keyed by its own files, so builds of other raw keys reuse it. A gather
(:func:`build`) hard-links the parts' shards into the artifact under their global numbers.
With one group that is the single ingest: document k of the source to shard k mod ``data.shards``. Shards are written with a ParquetWriter per shard from
small buffers flushed by size, so memory stays bounded whatever the corpus size.

Ids must be unique across all sources: downstream stages key on them (dedup keeps the
smallest id; the validation split hashes them). Uniqueness is checked after writing with
one DuckDB aggregate over the shards, which spills to disk, instead of a Python set of every
id, which would not.

What this stage does not do: clean, normalise or deduplicate text (``cleaned`` and
``deduplicated`` do), or shuffle (shard order follows the sources).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmbuild.data.files import source_name
from lmbuild.data.groups import Group, layout, shard_name, unit_count, whole
from lmbuild.data.sources import Problems, iter_source
from lmbuild.data.synthetic import read_synthetic, with_teacher
from lmbuild.errors import UserError
from lmbuild.store.artifact import link_or_copy, read_manifest
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)

SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("metadata", pa.string())])
BATCH_ROWS = 2048  # rows per row group at most
BUFFER_BYTES = 64 << 20  # text held in all shard buffers together before a flush
DUCKDB_MEMORY = "500MB"  # the id check's working memory before it spills to disk


class ShardWriter:
    """N Parquet files filled round robin from bounded in-memory buffers."""

    def __init__(self, out: Path, n: int, first: int = 0):
        self.paths = [out / shard_name(first + i) for i in range(n)]
        self.writers = [pq.ParquetWriter(p, SCHEMA, compression="zstd") for p in self.paths]
        self.buffers: list[list[tuple]] = [[] for _ in range(n)]
        self.buffered = 0
        self.docs = [0] * n
        self.bytes = [0] * n

    def add(self, shard: int, row: tuple) -> None:
        buf = self.buffers[shard]
        buf.append(row)
        self.buffered += len(row[1])
        if len(buf) >= BATCH_ROWS:
            self._flush(shard)
        elif self.buffered >= BUFFER_BYTES:
            for i in range(len(self.buffers)):
                self._flush(i)

    def _flush(self, shard: int) -> None:
        rows = self.buffers[shard]
        if not rows:
            return
        cols = list(zip(*rows))
        table = pa.Table.from_arrays([pa.array(c, pa.string()) for c in cols], schema=SCHEMA)
        self.writers[shard].write_table(table)
        self.docs[shard] += len(rows)
        self.bytes[shard] += pc.sum(pc.binary_length(table["text"])).as_py() or 0
        self.buffered -= sum(len(r[1]) for r in rows)
        self.buffers[shard] = []

    def close(self) -> None:
        for i, w in enumerate(self.writers):
            self._flush(i)
            w.close()

    def abort(self) -> None:
        """Close the files without writing what is buffered (the artifact is discarded anyway)."""
        for w in self.writers:
            w.close()


def _utf8_len(text: str, doc_id: str) -> int:
    if text.isascii():  # O(1) in CPython
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from a JSON "\\ud800" escape
        raise UserError(f"document {doc_id!r}: text is not valid Unicode ({exc.reason} at character {exc.start})") from None


def _check_unique_ids(ctx: StageContext, names: list[str]) -> None:
    import duckdb

    # Only the id and source columns are read; past DUCKDB_MEMORY the aggregate spills to
    # the work folder, so the gather's memory does not grow with the corpus.
    con = duckdb.connect(
        config={
            "threads": max(1, ctx.threads),
            "temp_directory": str(ctx.work / "duckdb"),
            "memory_limit": DUCKDB_MEMORY,
            "preserve_insertion_order": False,
        }
    )
    row = con.execute(
        "SELECT id, count(*) AS n, list(DISTINCT source ORDER BY source) FROM read_parquet(?) "
        "GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 1",
        [str(ctx.out / "shard-*.parquet")],
    ).fetchone()
    con.close()
    if row:
        doc_id, n, sources = row
        where = ", ".join(f"data.sources[{names.index(s)}] ({s})" for s in sources)
        raise UserError(
            f"duplicate document id {doc_id!r} ({n} documents, from {where}); ids must be unique: "
            "check id_field, or give sources distinct names"
        )


def _documents(ctx: StageContext, src: dict, i: int, skipped: Counter, units: range | None):
    """The documents of ``data.sources[i]``: a synthetic source's from its teacher, a local folder
    or raw's input ``teacher_<i>`` (lmbuild.data.synthetic, read here only, so that the quality
    classifier's readers do not hold it); any other's from its reader."""
    if src["type"] != "synthetic":
        return iter_source(src, i, skipped, units)
    docs = read_synthetic(with_teacher(src, i, ctx.inputs), i, source_name(src), Problems(src, i, skipped), threads=ctx.threads)
    return islice(docs, src["max_docs"]) if src.get("max_docs") is not None else docs


def _ingest(ctx: StageContext, settings: dict, group: Group, out: Path, first: int | None = None) -> dict:
    """One part's documents (its units of one source, in order) round robin into its run of
    shards in ``out``, numbered from ``first`` (default the group's first global shard); its
    counts, per source and per shard."""
    sources = settings["sources"]
    first = group.first_shard if first is None else first
    writer = ShardWriter(out, group.shards, first)
    per_source = []
    k = 0
    try:
        for i, start, stop in group.items:
            src = sources[i]
            name, entry_kind = source_name(src), src.get("kind")
            docs = nbytes = 0
            skipped: Counter = Counter()
            for doc_id, text, meta in _documents(ctx, src, i, skipped, None if whole(src) else range(start, stop)):
                meta = dict(meta)
                # The entry's kind wins; else the reader's (embedded, or a record's own "kind").
                if entry_kind is not None:
                    meta["kind"] = entry_kind
                meta.setdefault("kind", "prose")
                try:
                    nbytes += _utf8_len(text, doc_id)
                except UserError:
                    if src.get("on_error", "fail") != "skip":
                        raise
                    skipped["invalid_unicode"] += 1
                    continue
                writer.add(k % group.shards, (doc_id, text, name, json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str)))
                k += 1
                docs += 1
                if k % 100_000 == 0:
                    log.info("%d documents read", k)
            per_source.append({"index": i, "documents": docs, "bytes": nbytes, "skipped": dict(sorted(skipped.items()))})
            log.info("data.sources[%d] %s, files %d-%d: %d documents, %d bytes, skipped %s", i, name, start, stop - 1, docs, nbytes, dict(skipped))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    shards = [{"file": p.name, "documents": d, "bytes": b} for p, d, b in zip(writer.paths, writer.docs, writer.bytes)]
    return {"part": group.index, "documents": k, "sources": per_source, "shards": shards}


def build_part(ctx: StageContext) -> dict:
    """One fan-out job (rule ``build_raw_part``): one group's units of one source
    (``lmbuild.data.groups.part_settings``), into shards named from ``shard-00000`` (the gather
    names them globally), so that the part is the same wherever its group sits."""
    s = ctx.settings
    index = int(s.get("index", 0))
    start, end = s["units"]
    group = Group(0, index, start, end, 0, int(s["shards"]))
    sources = [None] * index + [s["source"]]
    if not whole(s["source"]):
        have = unit_count(s["source"], index)
        if end > have:
            raise UserError(f"data.sources[{index}]: {have} files now, fewer than when the plan was made: run snakemake again")
    return _ingest(ctx, {"sources": sources}, group, ctx.out, 0)


def _gather(parts: list[Path], groups: list[Group], out: Path) -> list[dict]:
    """Hard-link every part's shards into ``out`` under their global names (no copy); the
    parts' counts, with the source index and shard names of this layout."""
    results = []
    if len(parts) != len(groups):
        raise UserError(f"raw: {len(parts)} parts for {len(groups)} groups of files: run snakemake again")
    for part, g in zip(parts, groups):
        try:
            manifest = read_manifest(part)
        except (OSError, ValueError):
            raise UserError(f"{part}: not a complete raw part (no manifest)") from None
        counts = dict(manifest["counts"])
        shards = []
        for j, shard in enumerate(counts["shards"]):
            name = shard_name(g.first_shard + j)
            link_or_copy(part / shard["file"], out / name)
            shards.append({**shard, "file": name})
        counts.update(part=g.index, key=manifest["key"], shards=shards, sources=[{**x, "index": g.source} for x in counts["sources"]])
        results.append(counts)
    return results


def build(ctx: StageContext) -> dict:
    """The stage's artifact: gather the fan-out parts when given (the workflow), else ingest
    every group here, one after another (tests, library use); then check ids once."""
    sources = ctx.settings["sources"]
    names = [source_name(s) for s in sources]
    parts = ctx.inputs.get("parts")
    if parts is not None:
        results = _gather([Path(p) for p in parts], layout(ctx.settings), ctx.out)
    else:
        results = [_ingest(ctx, ctx.settings, g, ctx.out) for g in layout(ctx.settings)]
    per_source = []
    for i, src in enumerate(sources):
        mine = [s for r in results for s in r["sources"] if s["index"] == i]
        docs = sum(s["documents"] for s in mine)
        if docs == 0:
            raise UserError(f"data.sources[{i}] ({src.get('path') or names[i]}): no documents")
        skipped: Counter = Counter()
        for s in mine:
            skipped.update(s["skipped"])
        entry = {"name": names[i], "type": src["type"], "documents": docs, "bytes": sum(s["bytes"] for s in mine), "skipped": dict(sorted(skipped.items()))}
        if src["type"] == "hf":
            # A hub dataset is pinned when its revision names a commit (given, or resolved at parse).
            entry["revision"] = src.get("resolved_revision") or src.get("revision")
            entry["pinned"] = bool(entry["revision"] and len(entry["revision"]) == 40)
            entry["data_files"] = src.get("data_files")
            if not entry["pinned"]:
                log.warning("data.sources[%d] %s: unpinned hub dataset (set its revision to a commit)", i, names[i])
        per_source.append(entry)
    _check_unique_ids(ctx, names)
    shards = sorted((s for r in results for s in r["shards"]), key=lambda s: s["file"])
    skipped: Counter = Counter()
    for s in per_source:
        skipped.update(s["skipped"])
    counts = {
        "documents": sum(r["documents"] for r in results),
        "skipped": dict(sorted(skipped.items())),
        "bytes": sum(s["bytes"] for s in shards),
        "sources": per_source,
        "jobs": len(results),
        "shards": shards,
    }
    if parts is not None:  # the index of the parts this artifact is made of (gc keeps them)
        counts["part_keys"] = [r["key"] for r in results]
    return counts
