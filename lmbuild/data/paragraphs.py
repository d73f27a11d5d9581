"""Paragraph dedup for stage ``deduplicated`` (``data.dedup.paragraphs``): a paragraph already
seen earlier in the corpus order is removed from every later document.

Boilerplate repeated inside otherwise distinct pages (a footer, a licence notice, a cookie
banner) survives whole-document dedup; Dolma removes it with a Bloom filter over paragraphs
(Soldaini et al. 2024, "Dolma", section 3.1.3: "paragraph-level deduplication"), keeping the
first occurrence. Here the set is exact and the order is defined, so the result does not depend
on jobs, buckets or threads:

* a paragraph is a run of text between blank lines (``\\n``, optional spaces/tabs/newlines,
  ``\\n``; :data:`SPLIT`). Dolma splits on every newline; blank lines keep code blocks and
  verse stanzas whole, so a repeated ``return None`` or ``}`` line is not taken out of code;
* its key is DuckDB's 64-bit ``hash()`` and the length of the paragraph with spaces, tabs and
  newlines trimmed at both ends (empty paragraphs have none and are never removed);
* corpus order is (shard name, row in the shard, paragraph in the document), over the documents
  that survive whole-document dedup and decontamination; every occurrence after the first
  (in another document or the same one) is removed, together with the blank line before it;
* a document with text removed that is left with fewer than ``edited_min_words`` words
  (default 50, the Gopher rules' minimum document length, Rae et al. 2021) is dropped with
  the reason ``paragraphs:too_short``.

Memory: one DuckDB row per paragraph (shard, row, index, hash, length: 24 bytes), spilling
to the job's temp folder beyond ``memory_limit``; Python touches only the edited documents.

What this module does not do: near-duplicate paragraphs (case, punctuation), sentence or
substring dedup (lmbuild.data.substrings), or bring back a paragraph whose first occurrence was
in a document later dropped as too short (as Dolma's filter, the later copies stay removed).
"""

from __future__ import annotations

import re

import duckdb
import numpy as np
import pyarrow as pa

# RE2 (DuckDB) and Python's re agree on this pattern: ASCII classes, greedy, leftmost-first.
SPLIT = r"\n[ \t\r\n]*\n"
_SPLIT_RE = re.compile(f"({SPLIT})")
_TRIM = " \t\r\n"
REASON = "paragraphs:too_short"


def split(text: str) -> tuple[list[str], list[str]]:
    """(paragraphs, separators): separators[j] lies between paragraphs j and j + 1."""
    parts = _SPLIT_RE.split(text)
    return parts[0::2], parts[1::2]


def remove(text: str, drop: set[int]) -> str:
    """``text`` without the paragraphs whose 1-based indices are in ``drop``; a kept paragraph
    keeps the separator that preceded it (none for the first one kept)."""
    paras, seps = split(text)
    out: list[str] = []
    for j, p in enumerate(paras):
        if j + 1 in drop:
            continue
        if out:
            out.append(seps[j - 1])
        out.append(p)
    return "".join(out)


def repeated(con: duckdb.DuckDBPyConnection, shards: list[str]) -> None:
    """Table ``para_drop`` (s, r, i): every paragraph (1-based i of row r of shard number s, in
    the order of ``shards``) seen earlier in the corpus order, over the rows of ``shards`` not in
    table ``drop_rows`` (f, r)."""
    files = "[" + ", ".join("'" + str(x).replace("'", "''") + "'" for x in shards) + "]"
    con.register("shard_no", pa.table({"f": pa.array([str(x) for x in shards]), "s": pa.array(range(len(shards)), pa.uint32())}))
    con.execute(
        f"""CREATE TEMP TABLE paras AS
            SELECT s, r::UINTEGER AS r, i::UINTEGER AS i, hash(p) AS h, strlen(p)::UINTEGER AS n FROM (
              SELECT s, r, trim(unnest(parts), '{_TRIM}') AS p, generate_subscripts(parts, 1) AS i FROM (
                SELECT k.s, c.file_row_number AS r, string_split_regex(coalesce(c.text, ''), '{SPLIT}') AS parts
                FROM read_parquet({files}, filename = true, file_row_number = true) c
                JOIN shard_no k ON c.filename = k.f
                ANTI JOIN drop_rows d ON c.filename = d.f AND c.file_row_number = d.r))
            WHERE p <> ''"""
    )
    con.execute(
        """CREATE TEMP TABLE para_drop AS SELECT s, r, i FROM paras
           QUALIFY row_number() OVER (PARTITION BY h, n ORDER BY s, r, i) > 1 ORDER BY s, r, i"""
    )
    con.execute("DROP TABLE paras")
    con.unregister("shard_no")


def edits(con: duckdb.DuckDBPyConnection, shard_no: int) -> dict[int, set[int]]:
    """row -> paragraph indices to remove, for shard number ``shard_no`` (table ``para_drop``)."""
    got = con.execute("SELECT r, list(i) AS i FROM para_drop WHERE s = ? GROUP BY r", [shard_no]).fetchall()
    return {int(r): set(i) for r, i in got}


class Editor:
    """Applies one shard's paragraph removals batch by batch (the ``edit`` of
    ``lmbuild.data.survivors.write_survivors``).

    Counts what it removed and the ids of the documents it dropped as too short.
    """

    def __init__(self, rows: dict[int, set[int]], min_words: int):
        self.rows, self.min_words = rows, min_words
        self.sorted = np.array(sorted(rows), np.int64)
        self.paragraphs = self.bytes = self.edited = 0
        self.dropped: list[str] = []

    def __call__(self, batch: pa.RecordBatch, start: int) -> tuple[pa.RecordBatch, np.ndarray]:
        """(``batch`` with text edited, the rows to keep): ``batch`` holds rows ``start``.. of the
        shard, all of them (the caller filters, so that row numbers stay the shard's)."""
        keep = np.ones(batch.num_rows, bool)
        lo, hi = np.searchsorted(self.sorted, [start, start + batch.num_rows])
        hit = self.sorted[lo:hi] - start
        if not len(hit):
            return batch, keep
        texts = batch.column("text").to_pylist()
        for k in hit.tolist():
            old = texts[k] or ""
            new = remove(old, self.rows[start + k])
            self.paragraphs += len(self.rows[start + k])
            self.bytes += len(old.encode("utf-8")) - len(new.encode("utf-8"))
            self.edited += 1
            texts[k] = new
            if len(new.split()) < self.min_words:
                keep[k] = False
                self.dropped.append(batch.column("id")[k].as_py())
        i = batch.schema.get_field_index("text")
        batch = batch.set_column(i, batch.schema.field(i), pa.array(texts, batch.schema.field(i).type))
        return batch, keep
