"""Exact-substring dedup: lmbuild.data.substrings against the algorithm of Lee et al.'s tool as
text-dedup runs it, on the same documents, alternating.

    python bench/substring_bench.py CLEANED_DIR [--k 100] [--rounds 2] [--json out.json]

CLEANED_DIR: cleaned-schema Parquet shards (bench/dedup_bench.py --make writes mixed-x1 and
mixed-x4). text-dedup's ``suffix_array`` shells out to google-research/deduplicate-text-datasets
(``cargo run self-similar`` / ``collect``), a Rust crate that cannot be built offline (its
dependencies come from crates.io), so the peer here is that algorithm as text-dedup uses it:
documents concatenated without separators, one suffix array (pydivsufsort, as
``scripts/make_suffix_array.py`` builds it), every position whose suffix shares >= k bytes with
another marked for k bytes (all copies, the first included: ``collect``), the ranges cut at
document bounds and kept where >= k bytes (``restore_and_merge``), then removed.
lmbuild keeps the first copy in corpus order. Both are timed on the same byte strings, suffix
array included; reading the Parquet is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def text_dedup_style(docs: list[bytes], k: int) -> int:
    """Bytes removed by Lee et al.'s collect + text-dedup's restore_and_merge (every copy)."""
    from pydivsufsort import divsufsort, kasai

    lengths = np.array([len(d) for d in docs], np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    text = np.frombuffer(b"".join(docs), np.uint8).copy()
    sa = divsufsort(text).astype(np.int64)
    lcp = kasai(text, sa).astype(np.int64)
    pair = np.flatnonzero(lcp >= k)  # suffixes sa[r], sa[r + 1] share >= k bytes
    pos = np.unique(np.r_[sa[pair], sa[pair + 1]])
    cover = np.zeros(len(text) + 1, np.int32)
    np.add.at(cover, pos, 1)
    np.add.at(cover, np.minimum(pos + k, len(text)), -1)
    hit = np.cumsum(cover[:-1]) > 0
    removed = 0
    for s, n in zip(starts.tolist(), lengths.tolist()):  # ranges cut at document bounds, kept if >= k
        seg = hit[s : s + n].view(np.int8)
        edges = np.flatnonzero(np.diff(np.r_[np.int8(0), seg, np.int8(0)]))
        runs = edges[1::2] - edges[0::2]
        removed += int(runs[runs >= k].sum())
    return removed


def ours(docs: list[bytes], k: int) -> int:
    from lmbuild.data.substrings import marked

    return int(sum(len(m) for m in marked(docs, k)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cleaned")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    import pyarrow.parquet as pq

    docs = [t.encode() for f in sorted(Path(a.cleaned).glob("shard-*.parquet")) for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
    mb = sum(map(len, docs)) / 1e6
    results = []
    for r in range(a.rounds):
        for name, fn in (("lmbuild (first copy kept)", ours), ("text-dedup's algorithm (every copy)", text_dedup_style)):
            load = os.getloadavg()[0]
            t = time.perf_counter()
            removed = fn(docs, a.k)
            dt = time.perf_counter() - t
            results.append({"round": r, "tool": name, "seconds": round(dt, 2), "mb_per_s": round(mb / dt, 2), "bytes_removed": removed, "load": round(load, 1)})
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{len(docs):,} documents, {mb:.1f} MB, k = {a.k}\n\n| round | tool | seconds | MB/s | bytes removed | load |\n|---|---|---|---|---|---|")
    for x in results:
        print(f"| {x['round']} | {x['tool']} | {x['seconds']} | {x['mb_per_s']} | {x['bytes_removed']:,} | {x['load']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"documents": len(docs), "mb": round(mb, 1), "k": a.k, "results": results}, indent=1))


if __name__ == "__main__":
    main()
