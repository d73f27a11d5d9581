"""Stage ``deduplicated``: exact or MinHash deduplication and 13-gram decontamination, fanned out
over hash buckets.

The stage is a map-reduce over ``buckets`` (B, from ``data.dedup.buckets``) that Snakemake runs
as separate jobs, so that it spreads over a cluster (rules/deduplicated.smk):

* ``partition()`` (one job per cleaned part, "map": a keyed part that builds of other keys
  reuse; ``partition(part)`` in one process: the shards ``files[part::B]``); for every
  document it writes hash keys into one file (or folder) per bucket by ``key % B`` and the ids of
  contaminated documents into ``contaminated.parquet``.
  - ``exact``: the key is DuckDB's 64-bit ``hash()`` and the length of the normalised text
    (lowercased (Unicode), every run of ASCII whitespace replaced by one space, trimmed; or the
    text as it is with ``exact_normalise: false``: 1.4 s against 2.4 s for this map on 4M short
    documents, but the whole stage only ~10% faster), written
    by one DuckDB ``COPY ... PARTITION_BY`` into ``keys/b=<c>/``. ``md5_number`` (128 bits)
    made the hashing query 2.6x slower (10.5 s against 4.0 s for 1M short documents); with 64
    bits plus the length, two distinct texts of equal length collide with probability 2^-64 per
    pair, so about one wrongly dropped document is expected in ~6 billion same-length documents.
  - ``minhash``: one key per LSH band, from MinHash signatures computed with numpy
    (``lmbuild.data.minhash``; 5-gram word shingles, 14 bands x 8 rows by default, as
    datatrove; Broder 1997; Lee et al. 2022).
* ``bucket(c)`` (B jobs, "reduce"): bucket c of every map; one DuckDB query groups equal keys
  (equal (band, key) for MinHash: a candidate pair) and writes an edge from every document of a
  group to the group's smallest id (for ``exact`` these edges are final: a group is complete in
  its bucket). Memory is that of one bucket; DuckDB spills
  to ``temp_directory`` beyond ``memory_limit``.
* ``build`` (1 job, "gather"): for MinHash, connected components of all edges
  (lmbuild.data.clusters: numpy min-label propagation with pointer jumping), one survivor per
  component: the smallest id, so the result does not depend on shard order, bucket count or
  thread scheduling. One DuckDB join finds the (shard, row) of
  every dropped id; then every cleaned shard is streamed, without those rows, into an output
  shard of the same name (input order kept; shards in parallel threads), and the counts,
  reasons and cluster sizes go to the manifest. Called with no
  bucket inputs (tests, benchmarks), it runs the map and reduce steps itself, in ``ctx.work``.

Decontamination (optional, ``data.dedup.decontaminate``, lmbuild.data.decontamination): a
document is dropped when one of its word 13-grams occurs in the configured evaluation data
(Brown et al. 2020), with the reason ``contaminated``, even where it survived deduplication.

Optional edits of the survivors: paragraph dedup (lmbuild.data.paragraphs), then exact-substring
dedup (lmbuild.data.substrings). What this stage does not do: verify MinHash candidates by
exact Jaccard, or shuffle.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from threading import Lock
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmbuild.data import paragraphs, substrings
from lmbuild.data.clusters import clusters
from lmbuild.data.decontamination import contaminated_table, eval_index
from lmbuild.data.minhash import MinHasher
from lmbuild.data.survivors import Survivors, write_survivors
from lmbuild.errors import UserError
from lmbuild.store.artifact import artifact_files, parquet_shards, read_manifest
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)

# The regex replace runs only where it can change something (two spaces, or whitespace other than
# a space: a superset of its matches): substring tests are far cheaper than a replace that copies
# the string, and most short documents have neither (same keys either way).
_WS = r"'\s\s+|[^\S ]'"
_MAY_MATCH = " OR ".join(["contains(text, '  ')", *(f"contains(text, chr({c}))" for c in (9, 10, 11, 12, 13))])
_LOWERED = f"lower(CASE WHEN {_MAY_MATCH} THEN regexp_replace(text, {_WS}, ' ', 'g') ELSE text END)"
# DuckDB's trim() (spaces only) cost 0.6 s per 1M short documents even where there is nothing to
# trim, more than the lowercasing and the replace together; the gate keeps its result.
_TRIMMED = "CASE WHEN starts_with(t, ' ') OR ends_with(t, ' ') THEN trim(t) ELSE t END"
READ_ROWS = 2048  # documents per record batch in the numpy paths
SLICE_BYTES = 1 << 20  # text per numpy hashing call: memory ~60 MB, speed as with 8 MB
BAND_KEYS = pa.schema([("id", pa.string()), ("band", pa.uint8()), ("key", pa.uint64())])
EDGES = pa.schema([("id", pa.string()), ("keep", pa.string())])
REASON = {"exact": "exact_duplicate", "minhash": "near_duplicate"}


def _sql_str(path) -> str:
    return str(path).replace("'", "''")


def _sql_list(paths) -> str:
    return "[" + ", ".join(f"'{_sql_str(p)}'" for p in paths) + "]"


def _connect(settings: dict, work: Path, threads: int) -> duckdb.DuckDBPyConnection:
    tmp = Path(work) / "duckdb"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(
            config={
                "threads": max(1, threads),
                "memory_limit": settings["memory_limit"],
                "temp_directory": str(tmp),
                "preserve_insertion_order": False,
            }
        )
    except duckdb.Error as exc:
        raise UserError(f"data.dedup.memory_limit: {settings['memory_limit']!r} rejected by DuckDB: {exc}") from None


def _check(settings: dict) -> None:
    if settings["method"] not in REASON:
        raise UserError(f"data.dedup.method: unknown method {settings['method']!r} (exact or minhash)")


def minhasher(settings: dict) -> MinHasher:
    m = settings.get("minhash", {})
    return MinHasher(m.get("ngram", 5), m.get("bands", 14), m.get("rows", 8), m.get("seed", 1))


# --- map: keys per bucket, contaminated ids --------------------------------------------------


class _BucketWriters:
    """One Parquet writer per bucket, opened up front so that every bucket file exists."""

    def __init__(self, out: Path, buckets: int, schema: pa.Schema):
        self.buckets = buckets
        self.writers = [pq.ParquetWriter(out / f"bucket-{c:03d}.parquet", schema, compression="zstd") for c in range(buckets)]
        self.schema = schema

    def write(self, columns: list, key: np.ndarray) -> None:
        which = (key % np.uint64(self.buckets)).astype(np.int64)
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(self.buckets + 1))
        table = pa.Table.from_arrays(columns, schema=self.schema).take(pa.array(order))
        for c in range(self.buckets):
            if bounds[c + 1] > bounds[c]:
                self.writers[c].write_table(table.slice(bounds[c], bounds[c + 1] - bounds[c]))

    def close(self) -> None:
        for w in self.writers:
            w.close()


def _texts(files: list[str], columns=("id", "text")):
    """Record batches of at most READ_ROWS documents and SLICE_BYTES of text (or one document):
    the numpy hashing holds ~60 bytes per byte of text, so this bounds its memory."""
    for batch in _batches_of(files, columns):
        sizes = np.cumsum(pc.binary_length(batch.column("text")).fill_null(0).to_numpy(zero_copy_only=False))
        start = 0
        while start < batch.num_rows:
            base = sizes[start - 1] if start else 0
            end = max(start + 1, int(np.searchsorted(sizes, base + SLICE_BYTES, side="right")))
            yield batch.slice(start, end - start)
            start = end


def _batches_of(files: list[str], columns):
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"{f}: not a readable Parquet shard: {str(exc).splitlines()[0]}") from None
        missing = set(columns) - set(pf.schema_arrow.names)
        if missing:
            raise UserError(f"{f}: not a cleaned shard, missing column(s) {', '.join(sorted(missing))}")
        yield from pf.iter_batches(batch_size=READ_ROWS, columns=list(columns))


def _texts_sql(files: list[str], normalise: bool) -> str:
    """SQL for (id, t): t the text as it is or, with ``normalise``, lowercased, runs of ASCII
    whitespace as one space, trimmed."""
    source = f"read_parquet({_sql_list(files)})"
    if not normalise:
        return f"SELECT id, text AS t FROM {source}"
    return f"SELECT id, {_TRIMMED} AS t FROM (SELECT id, {_LOWERED} AS t FROM {source})"


def partition(ctx: StageContext, part: int | None = None) -> dict:
    """Map job: hash keys of the cleaned shards into one Parquet file or folder per bucket.

    ``part`` None (the workflow): every shard of ``ctx.inputs["cleaned"]``, which is one cleaned
    part, so that the map is a store entry keyed by that part (lmbuild.build.stages) and a build
    that reuses the part reuses its map. ``part`` p (library use): ``files[p::B]``."""
    s = ctx.settings
    _check(s)
    buckets = s.get("buckets", 1)
    files = [str(p) for p in parquet_shards(ctx.inputs["cleaned"], "cleaned")]
    files = files if part is None else files[part::buckets]
    counts: dict = {"files": len(files), "documents": 0, "contaminated": {}}
    n, index = eval_index(s)
    if s["method"] == "exact":
        # All in DuckDB: hash, then one Parquet folder per bucket (keys/b=<c>/), no Python per row.
        if files:
            con = _connect(s, ctx.work, ctx.threads)
            counts["documents"] = con.execute(
                f"""COPY (SELECT id, hash(t) AS h, strlen(t)::UBIGINT AS n, (hash(t) % {buckets})::USMALLINT AS b
                          FROM ({_texts_sql(files, s["exact_normalise"])}))
                    TO '{_sql_str(ctx.out / "keys")}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (b))"""
            ).fetchone()[0]
            con.close()
    else:
        hasher = minhasher(s)
        writers = _BucketWriters(ctx.out, buckets, BAND_KEYS)
        band_ids = np.arange(hasher.bands, dtype=np.uint8)
        for batch, keys in hasher.keyed(_texts(files), ctx.threads):  # keys: (docs, bands)
            rows = np.repeat(np.arange(batch.num_rows), hasher.bands)
            ids = batch.column("id").take(pa.array(rows))
            flat = keys.reshape(-1)
            writers.write([ids, pa.array(np.tile(band_ids, batch.num_rows)), pa.array(flat)], flat)
            counts["documents"] += batch.num_rows
        writers.close()
    table = contaminated_table(_texts(files), n, index)  # _texts is lazy: no index, no read
    pq.write_table(table, ctx.out / "contaminated.parquet")
    counts["contaminated"] = dict(Counter(table.column("eval").to_pylist()))
    return counts


# --- reduce: edges to the smallest id of each group ------------------------------------------


def bucket(ctx: StageContext, bucket_index: int, maps: list[Path]) -> dict:
    """Reduce job: edges (id -> smallest id of its group) of one bucket into ``ctx.out/edges.parquet``."""
    s = ctx.settings
    _check(s)
    if s["method"] == "exact":
        files = sorted(str(f) for m in maps for f in artifact_files(m, f"keys/b={bucket_index}/*.parquet"))
        group = "h, n"
    else:
        files = [str(Path(m) / f"bucket-{bucket_index:03d}.parquet") for m in maps]
        group = "band, key"
    if not files:  # no document hashed into this bucket
        pq.write_table(EDGES.empty_table(), ctx.out / "edges.parquet")
        return {"keys": 0, "groups": 0, "edges": 0}
    con = _connect(s, ctx.work, ctx.threads)
    con.execute(f"CREATE TEMP VIEW k AS SELECT * FROM read_parquet({_sql_list(files)})")
    con.execute(f"CREATE TEMP TABLE g AS SELECT {group}, min(id) AS keep FROM k GROUP BY ALL HAVING count(*) > 1")
    rows = con.execute(
        f"""COPY (SELECT DISTINCT k.id, g.keep FROM k JOIN g USING ({group}) WHERE k.id <> g.keep)
            TO '{_sql_str(ctx.out / "edges.parquet")}' (FORMAT parquet, COMPRESSION zstd)"""
    ).fetchone()[0]
    keys, groups = con.execute("SELECT (SELECT count(*) FROM k), (SELECT count(*) FROM g)").fetchone()
    con.close()
    return {"keys": int(keys), "groups": int(groups), "edges": int(rows)}


# --- gather -----------------------------------------------------------------------------------


def _local_parts(ctx: StageContext) -> tuple[list[Path], list[Path]]:
    """Run every map and reduce job in this process; return their output folders."""
    buckets = ctx.settings.get("buckets", 1)
    maps = []
    for p in range(buckets):
        out = ctx.work / f"map-{p:03d}"
        out.mkdir(parents=True, exist_ok=True)
        counts = partition(StageContext(ctx.stage, ctx.key, ctx.settings, ctx.inputs, out, ctx.work / "w", ctx.threads), p)
        (out / "manifest.json").write_text(json.dumps({"counts": counts}))
        maps.append(out)
    outs = []
    for c in range(buckets):
        out = ctx.work / f"bucket-{c:03d}"
        out.mkdir(parents=True, exist_ok=True)
        counts = bucket(StageContext(ctx.stage, ctx.key, ctx.settings, {}, out, ctx.work / "w", ctx.threads), c, maps)
        (out / "manifest.json").write_text(json.dumps({"counts": counts}))
        outs.append(out)
    return maps, outs


def build(ctx: StageContext) -> dict:
    """Gather: components, survivors, decontamination; write the output shards and counts.

    ``ctx.inputs``: ``cleaned`` and, from the workflow, ``maps`` (one map per cleaned part) and ``bucket_XXX`` (the map
    and reduce outputs); without them the whole map-reduce runs here.
    """
    s = ctx.settings
    _check(s)
    shards = parquet_shards(ctx.inputs["cleaned"], "cleaned")
    maps = [Path(p) for p in ctx.inputs.get("maps", [])]
    bucket_dirs = [Path(p) for k, p in sorted(ctx.inputs.items()) if k.startswith("bucket_")]
    if not bucket_dirs:
        maps, bucket_dirs = _local_parts(ctx)
    map_counts = [read_manifest(m)["counts"] for m in maps]
    con = _connect(s, ctx.work, ctx.threads)
    edge_files = [str(Path(b) / "edges.parquet") for b in bucket_dirs]
    con.execute("CREATE TEMP TABLE e AS SELECT * FROM read_parquet(?)", [edge_files])
    if s["method"] == "exact":
        # Groups of equal keys are complete inside their bucket: the edges already point at
        # each group's smallest id, there is nothing to connect.
        con.execute("CREATE TEMP TABLE dup AS SELECT id, keep FROM e")
        sizes = np.asarray(con.execute("SELECT count(*) + 1 FROM e GROUP BY keep").fetchnumpy().popitem()[1], np.int64)
    else:
        sizes = clusters(con)
    conta_files = [str(m / "contaminated.parquet") for m in maps]
    con.execute("CREATE TEMP TABLE conta AS SELECT id, eval FROM read_parquet(?)", [conta_files])
    con.execute(
        "CREATE TEMP TABLE dropped AS SELECT id, 'contaminated' AS reason, eval AS detail FROM conta "
        f"UNION ALL SELECT id, '{REASON[s['method']]}', keep FROM dup ANTI JOIN conta USING (id)"
    )
    # Where each dropped document sits (shard, row): one join over the id column of all shards,
    # so that no shard is matched against every dropped id (with S shards that was S hash
    # builds of the whole dropped set). Sorted by shard, a shard's lookup reads its row groups only.
    con.execute(
        f"""CREATE TEMP TABLE drop_rows AS SELECT c.filename AS f, c.file_row_number AS r
            FROM read_parquet({_sql_list(shards)}, filename = true, file_row_number = true) c
            SEMI JOIN dropped d ON c.id = d.id ORDER BY f, r"""
    )
    # --- paragraph dedup (lmbuild.data.paragraphs): first occurrences over the survivors ---
    if s.get("paragraphs"):
        paragraphs.repeated(con, [str(p) for p in shards])
    editors: list = []
    lock = Lock()  # a connection is not thread-safe: one query at a time
    written = Survivors(ctx)

    def survivors(shard: Path) -> int:
        with lock:
            rows = np.asarray(con.execute("SELECT r FROM drop_rows WHERE f = ? ORDER BY r", [str(shard)]).fetchnumpy()["r"], np.int64)
            editor = paragraphs.Editor(paragraphs.edits(con, shards.index(shard)), s.get("edited_min_words", 50)) if s.get("paragraphs") else None
            editors.append(editor)
        if written.on:
            return written.write(shard, rows, ctx.out / shard.name)
        return write_survivors(shard, rows, ctx.out / shard.name, editor)

    # Shards in parallel threads (pyarrow releases the GIL while it decodes and encodes): 4.6 s
    # -> 2.9 s for the 8 shards of 4M short documents on 2 cores.
    with ThreadPoolExecutor(max(1, min(ctx.threads, len(shards)))) as pool:
        docs_out = sum(pool.map(survivors, shards))
    short = sorted(i for e in editors if e for i in e.dropped)
    subs = None
    if s.get("substrings"):  # lmbuild.data.substrings: rewrites the output shards in place
        subs = substrings.apply([ctx.out / p.name for p in shards], s.get("substring_min_bytes", 100), s.get("edited_min_words", 50))
        docs_out -= subs["too_short"]
    for reason, ids in ((paragraphs.REASON, short), (substrings.REASON, subs.pop("dropped") if subs else [])):
        if ids:  # documents the edits left too short
            con.register("edit_drops", pa.table({"id": pa.array(sorted(ids), pa.string())}))
            con.execute(f"INSERT INTO dropped SELECT id, '{reason}', NULL FROM edit_drops")
            con.unregister("edit_drops")
    # For a person (and the tests): why each document went; detail = the survivor it duplicates
    # or the evaluation data it overlaps.
    con.execute(
        f"COPY (SELECT * FROM dropped ORDER BY id) TO '{_sql_str(ctx.out / 'dropped.parquet')}' (FORMAT parquet, COMPRESSION zstd)"
    )
    removed_by_source = dict(con.execute("SELECT detail, count(*) FROM dropped WHERE reason = 'contaminated' GROUP BY ALL ORDER BY 1").fetchall())
    reasons = dict(con.execute("SELECT reason, count(*) FROM dropped GROUP BY reason ORDER BY reason").fetchall())
    con.close()
    docs_in = sum(c["documents"] for c in map_counts)
    if docs_in - docs_out != sum(reasons.values()):
        raise RuntimeError(f"dedup kept {docs_out} of {docs_in} documents but dropped {sum(reasons.values())}")
    conta: Counter = Counter()
    for c in map_counts:
        conta.update(c.get("contaminated", {}))
    size_hist = Counter(int(x) for x in sizes)
    extra: dict = {}
    if s.get("paragraphs"):
        extra["paragraphs"] = {k: int(sum(getattr(e, k) for e in editors if e)) for k in ("paragraphs", "bytes", "edited")}
        extra["paragraphs"]["too_short"] = len(short)
    if subs is not None:
        extra["substrings"] = subs
    if removed_by_source:
        extra["decontamination_removed"] = {k: int(v) for k, v in removed_by_source.items()}
    log.info("%d -> %d documents; dropped %s; %d clusters", docs_in, docs_out, reasons, len(sizes))
    return {
        "method": s["method"],
        "documents_in": int(docs_in),
        "documents_out": int(docs_out),
        "duplicates_removed": int(reasons.get(REASON[s["method"]], 0)),
        "dropped": {k: int(x) for k, x in reasons.items()},
        "contaminated_by_eval": dict(conta),
        "clusters": {
            "count": int(len(sizes)),
            "documents": int(sizes.sum()),
            "max_size": int(sizes.max()) if len(sizes) else 0,
            "sizes": {str(k): size_hist[k] for k in sorted(size_hist)},
        },
        "buckets": len(bucket_dirs),
        "shards": len(shards),
        **extra,
        # The index of the map parts this artifact read and of its output shards' addresses (gc keeps
        # them): store entries of their own.
        **({"part_keys": [read_manifest(m)["key"] for m in maps] + sorted(written.keys)} if "maps" in ctx.inputs else {}),
        **({"shards_reused": written.reused} if written.on else {}),
    }
