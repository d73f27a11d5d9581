"""Exact-substring dedup for stage ``deduplicated`` (``data.dedup.substrings``): a span of at
least ``substring_min_bytes`` bytes that already occurred earlier in the corpus is cut out.

ExactSubstr of Lee et al. 2022 ("Deduplicating Training Data Makes Language Models Better"):
a suffix array over the corpus's bytes (``pydivsufsort``: libdivsufsort) and its LCP array
(Kasai et al. 2001) find every window of k bytes that occurs twice; k = 100 bytes is the
``--length-threshold`` of their README's example and text-dedup's default. Their code (and
text-dedup, datatrove's ES steps, which call it) removes *every* copy of a repeated span; here
the first copy in corpus order (shard name, row) is kept, as paragraph dedup does:

* the documents (after whole-document and paragraph dedup) are joined in corpus order, each
  followed by byte 0xFF, which UTF-8 never holds;
* suffixes that share their first k bytes are neighbours in the suffix array (a run where the
  LCP stays >= k); in each run, every window but the leftmost in the corpus is a later copy, and
  its k bytes are marked; windows that would run past their document are ignored;
* the marked bytes are cut out; a cut inside a multi-byte character drops that character's
  leftover bytes (decoded with ``errors="ignore"``, as text-dedup's ``clean_up``). A document
  left with fewer than ``edited_min_words`` words is dropped as ``substrings:too_short``.

Memory: the whole corpus at once, ~30 bytes per byte of text (measured: 1.2 GB peak for the
25 MB bench corpus, 0.46 GB without this step; the bytes, the suffix and LCP arrays, int32
under 2 GB of text, the texts as Python strings): for corpora that fit one machine's memory.

What this module does not do: tokenise (spans are bytes, not tokens), shard the suffix array,
or look at whitespace or case.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REASON = "substrings:too_short"
SEP = 0xFF


def marked(docs: list[bytes], k: int) -> list[np.ndarray]:
    """For every document, the sorted byte positions that lie in a k-byte window seen earlier."""
    from pydivsufsort import divsufsort, kasai  # only where substring dedup is on

    lengths = np.array([len(d) for d in docs], np.int64)
    starts = np.r_[0, np.cumsum(lengths + 1)[:-1]] if len(docs) else np.zeros(0, np.int64)
    text = np.frombuffer(b"".join(d + bytes([SEP]) for d in docs), np.uint8).copy()
    out = [np.zeros(0, np.int64) for _ in docs]
    if len(text) < k or k < 1:
        return out
    sa = divsufsort(text)  # int32 under 2 GB of text, int64 beyond: kept as it comes
    lcp = kasai(text, sa)  # lcp[r]: suffixes sa[r] and sa[r + 1]
    brk = np.empty(len(sa), bool)
    brk[0] = True
    np.less(lcp[:-1], k, out=brk[1:])  # a new run of suffixes that share their first k bytes
    del lcp
    group = np.cumsum(brk, dtype=sa.dtype) - 1
    first = np.minimum.reduceat(sa, np.flatnonzero(brk))[group]  # leftmost position of the run
    del brk
    size = np.bincount(group)[group]
    del group
    ends = (starts + lengths).astype(sa.dtype)  # the separator's position
    later = (size > 1) & (sa != first)
    del size, first
    later &= sa + k <= ends[np.searchsorted(starts, sa, side="right") - 1]  # the window stays in its document
    pos = sa[later]
    del sa, later
    cover = np.zeros(len(text) + 1, np.int32)
    np.add.at(cover, pos, 1)
    np.add.at(cover, pos + k, -1)
    hit = np.flatnonzero(np.cumsum(cover[:-1]) > 0)
    bounds = np.searchsorted(hit, np.r_[starts, len(text)])
    for i in range(len(docs)):
        out[i] = hit[bounds[i] : bounds[i + 1]] - starts[i]
    return out


def cut(text: str, positions: np.ndarray) -> str:
    """``text`` without the UTF-8 bytes at ``positions``."""
    if not len(positions):
        return text
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    keep = np.ones(len(raw), bool)
    keep[positions] = False
    return raw[keep].tobytes().decode("utf-8", errors="ignore")


def apply(shards: list, k: int, min_words: int) -> dict:
    """Cut the repeated spans out of the output ``shards`` (rewritten in place, schema kept).

    Returns ``{"bytes", "edited", "too_short", "dropped": [ids]}``."""
    tables = [pq.read_table(s) for s in shards]
    texts = [t.column("text").to_pylist() for t in tables]
    flat = [(x or "").encode("utf-8") for ts in texts for x in ts]
    marks = marked(flat, k)
    counts = {"bytes": 0, "edited": 0, "too_short": 0, "dropped": []}
    i = 0
    for shard, table, ts in zip(shards, tables, texts):
        keep = np.ones(len(ts), bool)
        for j in range(len(ts)):
            m = marks[i]
            i += 1
            if not len(m):
                continue
            new = cut(ts[j] or "", m)
            counts["bytes"] += len(m)
            counts["edited"] += 1
            ts[j] = new
            if len(new.split()) < min_words:
                keep[j] = False
                counts["dropped"].append(table.column("id")[j].as_py())
        col = table.schema.get_field_index("text")
        table = table.set_column(col, table.schema.field(col), pa.array(ts, table.schema.field(col).type)).filter(pa.array(keep))
        pq.write_table(table, shard, compression="zstd")
    counts["too_short"] = len(counts["dropped"])
    return counts
