"""Generate a raw-ingest benchmark corpus from real text: .jsonl.gz, .jsonl.zst and Parquet.

Documents are 20-400 lines drawn at random (seeded) from the King James Bible, tinyshakespeare
(../shared/data/corpus) and this Python's standard library, in the FineWeb record shape
(`text`, `id`, `url`), written as real corpora ship them: gzip JSON Lines (Dolma),
zstd JSON Lines (RedPajama, level 3) and Parquet (FineWeb: zstd, row groups of ~1,000 rows).
Lines are sampled, not whole passages, so compressors do not find the same kilobytes again
and again and the ratio stays near a real corpus's (~3-4x).

    python bench/raw_corpus.py OUT_DIR --files 4 --mb 90
writes 4 files of each format, each ~90 MB of text before compression.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from common import SHARED_DATA

SHARED = SHARED_DATA / "corpus"


def lines() -> list[str]:
    out = []
    for name in ("kjv.txt", "tinyshakespeare.txt"):
        p = SHARED / name
        if p.is_file():
            out += [l for l in p.read_text().splitlines() if l.strip()]
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        out += [l for l in p.read_text(errors="replace").splitlines() if l.strip()]
    return out


def documents(pool: list[str], rng: random.Random, target: int, prefix: str):
    size = i = 0
    while size < target:
        text = "\n".join(rng.choices(pool, k=rng.randint(20, 400))) + "\n"
        size += len(text.encode())
        yield {"text": text, "id": f"{prefix}-{i}", "url": f"https://example.org/{prefix}/{i}"}
        i += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mb", type=int, default=90)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = lines()
    rng = random.Random(0)
    target = a.mb << 20
    for f in range(a.files):
        with gzip.open(out / f"gz-{f:03d}.jsonl.gz", "wb", compresslevel=6) as fh:
            for d in documents(pool, rng, target, f"gz{f}"):
                fh.write(json.dumps(d).encode() + b"\n")
        with zstandard.open(out / f"zst-{f:03d}.jsonl.zst", "wb", cctx=zstandard.ZstdCompressor(level=3)) as fh:
            for d in documents(pool, rng, target, f"zst{f}"):
                fh.write(json.dumps(d).encode() + b"\n")
        with pq.ParquetWriter(out / f"pq-{f:03d}.parquet", pa.schema([("text", pa.string()), ("id", pa.string()), ("url", pa.string())]), compression="zstd") as w:
            batch = []
            for d in documents(pool, rng, target, f"pq{f}"):
                batch.append(d)
                if len(batch) == 1000:
                    w.write_table(pa.Table.from_pylist(batch, schema=w.schema))
                    batch = []
            if batch:
                w.write_table(pa.Table.from_pylist(batch, schema=w.schema))
    for p in sorted(out.iterdir()):
        print(p.name, os.path.getsize(p))


if __name__ == "__main__":
    main()
