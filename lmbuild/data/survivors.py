"""The deduplicated stage's output shards: a cleaned shard without its dropped rows
(``write_survivors``), and the addresses that let a later build link an unchanged one instead of
writing it again (``Survivors``). What it does not do: decide which rows go (lmbuild.data.deduplicated).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from threading import Lock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmbuild.build.keys import digest
from lmbuild.store.artifact import atomic_dir, file_entries, is_complete, link_or_copy, read_manifest, write_json
from lmbuild.store.runner import StageContext

STORED = "survivors.parquet"  # an address's one file, whatever the shard's name
WRITE_ROWS = 1 << 16  # documents per output batch (and row group): 2048 made writes 35% of exact dedup


def write_survivors(shard: Path, drop_rows: np.ndarray, out: Path, edit=None) -> int:
    """Copy ``shard`` to ``out`` without the rows at the sorted positions ``drop_rows``; returns the count.
    ``edit`` (paragraph dedup, lmbuild.data.paragraphs.Editor): (batch, first row) -> (batch, rows to keep).

    Written by pyarrow with the input's schema: DuckDB's COPY would mark columns NOT NULL in
    non-empty files only, and readers that concatenate shards reject the mix.
    """
    pf = pq.ParquetFile(shard)
    written = start = 0
    with pq.ParquetWriter(out, pf.schema_arrow, compression="zstd") as writer:
        for batch in pf.iter_batches(batch_size=WRITE_ROWS):
            n = batch.num_rows
            lo, hi = np.searchsorted(drop_rows, [start, start + n])
            batch, keep = edit(batch, start) if edit else (batch, np.ones(n, bool))
            keep[drop_rows[lo:hi] - start] = False
            if not keep.all():
                batch = batch.filter(pa.array(keep))
            writer.write_batch(batch)
            written += batch.num_rows
            start += n
    return written


class Survivors:
    """The output shards addressed by what they are made of: a cleaned shard's bytes (its SHA-256
    in the cleaned artifact's manifest), the rows dropped from it, this stage's code and pyarrow's
    version; not its name, which moves when an earlier source grows. A shard of an earlier build
    with the same address is linked from ``<store>/_parts/deduplicated/<address>``, not rewritten:
    after an append or an edit only the shards whose survivors changed are written (the shards
    stage then reuses their token files by the same bytes). Listed in the manifest's
    ``part_keys``, so gc keeps them while the artifact is kept.

    Off (every shard written) where the job has no store or the cleaned input no manifest (tests,
    notebooks), or where paragraph or substring dedup edit the survivors: their edits depend on
    the whole corpus.
    """

    def __init__(self, ctx: StageContext):
        s = ctx.settings
        self.cleaned = Path(ctx.inputs["cleaned"])
        try:
            self.files = read_manifest(self.cleaned)["files"]
        except (OSError, ValueError, KeyError):
            self.files = None
        self.on = ctx.store is not None and self.files is not None and not (s.get("paragraphs") or s.get("substrings"))
        self.store = Path(ctx.store or ".") / "_parts" / "deduplicated"
        self.code = ctx.lineage.get("code_hash")
        self.keys: list[str] = []
        self.reused = 0
        self._lock = Lock()  # shards are written in threads

    def address(self, shard: Path, drop_rows: np.ndarray) -> Path | None:
        if not self.on or not shard.is_relative_to(self.cleaned):
            return None
        rel = shard.relative_to(self.cleaned).as_posix()
        entry = self.files.get(rel)
        if entry is None:
            return None
        rows = np.ascontiguousarray(drop_rows, dtype="<i8").tobytes()
        material = {"sha256": entry["sha256"], "dropped_rows": hashlib.sha256(rows).hexdigest(), "code": self.code, "pyarrow": pa.__version__}
        key = digest(material)[:16]
        with self._lock:
            self.keys.append(key)
        return self.store / key

    def write(self, shard: Path, drop_rows: np.ndarray, out: Path) -> int:
        """``out`` = ``shard`` without ``drop_rows``: linked when built before, else written and kept."""
        cache = self.address(shard, drop_rows)
        if cache is not None and is_complete(cache):
            link_or_copy(cache / STORED, out)
            with self._lock:
                self.reused += 1
            return int(read_manifest(cache)["counts"]["documents"])
        n = write_survivors(shard, drop_rows, out)
        if cache is not None:
            with atomic_dir(cache) as tmp:
                link_or_copy(out, tmp / STORED)
                write_json(tmp / "manifest.json", {"stage": "deduplicated_shard", "key": cache.name, "counts": {"documents": n}, "files": file_entries(tmp)})
        return n
