"""Stage ``cleaned``: normalise Unicode, then drop documents by length, Gopher repetition and
fastText language ID, shard by shard; count what was dropped and why.

Each raw shard becomes one cleaned shard of the same name with the raw schema plus
``lang`` (string) and ``lang_score`` (float32), both null where language ID was not run.
The ``text`` column holds the normalised text. A document gets the reason of the first
filter that drops it, in the order length, repetition, language.

Code (metadata ``kind`` = ``"code"``) gets the length limits only. Language ID labels code
by its comments and identifiers, which says nothing useful; and Gopher's repetition rules,
made for web prose, read ``pass``/``else:``/``return NotImplemented`` lines as spam:
on CPython 3.11's standard library they would drop 25 files that pass the length limits
(27 of 601 in all), among them ``_collections_abc.py``, ``contextlib.py``,
``ipaddress.py`` and ``weakref.py``.

Shards are independent, so with ``threads > 1`` they are cleaned in parallel (forked)
processes. Measured on the 2-vCPU development VM, this did not help: the embedded corpus
(4 shards) took 1.7-1.8 s with one process and 2.2-2.7 s with two, because two busy
processes each ran 2-3x slower there (a plain NumPy sort too); on machines with real cores
per thread it scales with the shard count. Within a process, the repetition statistics are
computed for ~256 kB of text at a time (see filters.GopherRepetitionFilter).

What this stage does not do: remove boilerplate, PII or toxic text, or fix encodings.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lmbuild.data.filters import GopherRepetitionFilter, LanguageFilter, LengthFilter, load_lid_model, normalize
from lmbuild.artifact import parquet_shards
from lmbuild.errors import UserError
from lmbuild.runner import StageContext

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("metadata", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
    ]
)
READ_ROWS = 256  # rows per record batch read from a raw shard
REPETITION_CHARS = 256 << 10  # text per vectorised repetition call: fastest measured (64k-4M)


class Cleaner:
    """The configured filters for one process, applied to record batches."""

    def __init__(self, settings: dict):
        self.form = settings["normalization"]
        self.length = LengthFilter(settings["min_chars"], settings["max_chars"])
        self.repetition = GopherRepetitionFilter(
            settings["max_duplicate_line_fraction"],
            settings["max_duplicate_line_char_fraction"],
            settings["max_top_ngram_fraction"],
        )
        lang = settings["lang"]
        self.lang = LanguageFilter(lang["keep"], lang["threshold"])

    def _repetition(self, texts: list[str]) -> list[str | None]:
        out: list[str | None] = []
        start = size = 0
        for i, t in enumerate(texts):
            size += len(t)
            if size >= REPETITION_CHARS or i == len(texts) - 1:
                out += self.repetition.check_batch(texts[start : i + 1])
                start, size = i + 1, 0
        return out

    def batch(self, batch: pa.RecordBatch, dropped: Counter) -> pa.RecordBatch:
        texts = [normalize(t, self.form) for t in batch.column("text").to_pylist()]
        kinds = [json.loads(m).get("kind") for m in batch.column("metadata").to_pylist()]
        reasons = [self.length.check(t) for t in texts]
        prose = [i for i, r in enumerate(reasons) if r is None and kinds[i] != "code"]
        for i, r in zip(prose, self._repetition([texts[i] for i in prose])):
            reasons[i] = r
        langs: list[str | None] = [None] * len(texts)
        scores: list[float | None] = [None] * len(texts)
        for i in prose:
            if reasons[i] is None:
                langs[i], scores[i] = self.lang.identify(texts[i])
                reasons[i] = self.lang.decide(langs[i], scores[i])
        dropped.update(r for r in reasons if r is not None)
        keep = [i for i, r in enumerate(reasons) if r is None]
        idx = pa.array(keep, pa.int64())
        return pa.RecordBatch.from_arrays(
            [
                batch.column("id").take(idx),
                pa.array([texts[i] for i in keep], pa.string()),
                batch.column("source").take(idx),
                batch.column("metadata").take(idx),
                pa.array([langs[i] for i in keep], pa.string()),
                pa.array([scores[i] for i in keep], pa.float32()),
            ],
            schema=SCHEMA,
        )


def _text_bytes(col) -> int:
    return pc.sum(pc.binary_length(col)).as_py() or 0


def clean_shard(job: tuple[str, str, dict]) -> dict:
    """Clean one raw shard into ``dst``; return its counts."""
    src, dst, settings = job
    cleaner = Cleaner(settings)
    dropped: Counter = Counter()
    counts = {"documents_in": 0, "documents_out": 0, "bytes_in": 0, "bytes_out": 0}
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{src}: not a readable Parquet shard: {str(exc).splitlines()[0]}") from None
    missing = {"id", "text", "source", "metadata"} - set(pf.schema_arrow.names)
    if missing:
        raise UserError(f"{src}: not a raw shard, missing column(s) {', '.join(sorted(missing))}")
    with pq.ParquetWriter(dst, SCHEMA, compression="zstd") as writer:
        for batch in pf.iter_batches(batch_size=READ_ROWS, columns=["id", "text", "source", "metadata"]):
            out = cleaner.batch(batch, dropped)
            counts["documents_in"] += batch.num_rows
            counts["bytes_in"] += _text_bytes(batch.column("text"))
            counts["documents_out"] += out.num_rows
            counts["bytes_out"] += _text_bytes(out.column("text"))
            if out.num_rows:
                writer.write_batch(out)
    counts["dropped"] = dict(dropped)
    log.info("%s: %d -> %d documents, dropped %s", Path(src).name, counts["documents_in"], counts["documents_out"], dict(dropped))
    return counts


def _pool(workers: int):
    # fork: workers inherit the imported modules (and a loaded model) at no start-up cost.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers)


def build(ctx: StageContext) -> dict:
    raw = ctx.inputs["raw"]
    shards = parquet_shards(raw, "raw")
    jobs = [(str(p), str(ctx.out / p.name), ctx.settings) for p in shards]
    workers = max(1, min(ctx.threads, len(jobs)))
    if workers > 1:
        # Once before the fork instead of once per worker: the model, and pyarrow's first
        # pa.array() call, which imports pandas (~0.6 s).
        load_lid_model()
        pa.array([""])
        with _pool(workers) as pool:
            results = pool.map(clean_shard, jobs, chunksize=1)
    else:
        results = [clean_shard(j) for j in jobs]
    total = {k: sum(r[k] for r in results) for k in ("documents_in", "documents_out", "bytes_in", "bytes_out")}
    dropped: Counter = Counter()
    for r in results:
        dropped.update(r["dropped"])
    total["dropped"] = dict(sorted(dropped.items()))
    if total["documents_in"] and not total["documents_out"]:
        detail = ", ".join(f"{k}: {v}" for k, v in dropped.most_common())
        raise UserError(f"every document was dropped by cleaning ({detail}); loosen data.clean settings")
    return total
