"""Shards stage throughput against the tokenizer's raw ``encode_batch``, side by side in one run.

Builds a corpus of real text as ``deduplicated`` shards (KJV, tinyshakespeare from
../shared/data when present, and this Python's standard library, cut into documents and
repeated to --mb), trains the pipeline's BPE tokenizer on it (lmbuild.tokens.tokenizer), then
alternates, --repeats times:

- ``raw``: the tokenizer's ``encode_batch_fast`` over every document, held in memory, in
  batches of ``lmbuild.tokens.shards.BATCH_DOCS``, in one process with the Rust pool on --cores
  threads (and, as ``raw_ids``, the same with each encoding's ``.ids`` read out: the least any
  user of the ids pays);
- ``stage``: the stage as ``snakemake --cores N`` runs it: one ``build_part`` job per shard
  (1 thread each, N at a time, each in its own process through the real runner: manifest
  and hashing included), then the gather. Wall time from the first job's start to the
  gather's end, with the jobs' start-up (imports, tokenizer load) included.

Tokens are the tokenizer's output tokens (plus one eos per document for the stage). Writes
one JSON line per repeat to --out and prints the best of each side.

    PYTHONPATH=$PWD python bench/shards_bench.py --mb 40 --shards 8 --cores 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import SHARED_DATA, relative_command, scratch  # noqa: E402

SHARED = SHARED_DATA / "corpus"


def documents(mb: float) -> list[dict]:
    """Real text as documents of ~50 lines, repeated (with distinct ids) up to ``mb`` MB."""
    texts = []
    for name in ("kjv.txt", "tinyshakespeare.txt"):
        if (SHARED / name).exists():
            lines = (SHARED / name).read_text(encoding="utf-8").splitlines(keepends=True)
            texts += [("prose", "".join(lines[i : i + 50])) for i in range(0, len(lines), 50)]
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        texts.append(("code", p.read_text(encoding="utf-8", errors="replace")))
    docs, size, rep = [], 0, 0
    while size < mb * 1e6:
        for i, (source, text) in enumerate(texts):
            docs.append({"id": f"{rep}/{i}", "text": text, "source": source})
            size += len(text.encode())
        rep += 1
    return docs


def write_corpus(folder: Path, docs: list[dict], shards: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmbuild.store.artifact import seal

    folder.mkdir(parents=True)
    for s in range(shards):
        part = docs[s::shards]
        pq.write_table(pa.table({k: [d[k] for d in part] for k in ("id", "text", "source")}), folder / f"shard-{s:05d}.parquet", compression="zstd")
    seal(folder, {"stage": "deduplicated", "key": "bench", "counts": {"documents_out": len(docs)}})


def _part(args) -> dict:
    """One part job in a fresh process, as Snakemake runs it (1 thread)."""
    art, settings, part, out = args
    from lmbuild.tokens import shards as pack
    from lmbuild.store import runner

    t0 = time.time()
    runner.run(lambda ctx: pack.build_part(ctx, part), stage="shards_part", key=f"bench/{part:05d}", settings=settings, lineage={},
               inputs={"deduplicated": Path(art) / "dedup", "tokenizer": Path(art) / "tok"}, output=Path(out), threads=1)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a spawned worker would report its big parent's.
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return {"seconds": time.time() - t0, "maxrss_mb": int(hwm.split()[1]) / 1024}


def run_stage(art: Path, settings: dict, shards: int, cores: int) -> dict:
    from lmbuild.tokens import shards as pack
    from lmbuild.store import runner

    parts_dir = art / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    shutil.rmtree(art / "shards", ignore_errors=True)
    jobs = [(str(art), settings, i, str(parts_dir / f"{i:05d}")) for i in range(shards)]
    t0 = time.time()
    # spawn: like separate jobs, no Rust pool inherited from this process.
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        results = list(pool.map(_part, jobs))
    m = runner.run(pack.build, stage="shards", key="bench", settings=settings, lineage={},
                   inputs={"deduplicated": art / "dedup", "tokenizer": art / "tok", "parts": [j[3] for j in jobs]}, output=art / "shards" / "bench")
    seconds = time.time() - t0
    tokens = sum(m["counts"][f"{s}_tokens"] + m["counts"][f"{s}_dropped_tokens"] for s in ("train", "val"))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "max_part_rss_mb": round(max(r["maxrss_mb"] for r in results)), "parts": shards}


def run_raw(texts: list[str], tok_dir: Path, ids: bool) -> dict:
    from lmbuild.tokens.shards import BATCH_DOCS, load_tokenizer

    backend = load_tokenizer(tok_dir).backend
    tokens, t0 = 0, time.time()
    for i in range(0, len(texts), BATCH_DOCS):
        encs = backend.encode_batch_fast(texts[i : i + BATCH_DOCS], add_special_tokens=False)
        tokens += sum(len(e.ids) for e in encs) if ids else sum(len(e) for e in encs)
    seconds = time.time() - t0
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=40)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=scratch("shards_bench"), help="emptied first")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shards_bench.jsonl")
    a = ap.parse_args()
    # The raw side's Rust pool: --cores threads, read when the pool starts.
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    os.environ["RAYON_NUM_THREADS"] = str(a.cores)
    from lmbuild.build import config, stages
    from lmbuild.store import runner
    from lmbuild.tokens import tokenizer

    shutil.rmtree(a.work, ignore_errors=True)
    docs = documents(a.mb)
    write_corpus(a.work / "dedup", docs, a.shards)
    tok_settings = stages.STAGES["tokenizer"].settings(config.validate({"tokenizer": {"vocab_size": a.vocab}}))
    runner.run(tokenizer.build, stage="tokenizer", key="bench", settings=tok_settings, lineage={}, inputs={"deduplicated": a.work / "dedup"},
               output=a.work / "tok_art", threads=a.cores)
    (a.work / "tok").symlink_to(a.work / "tok_art")
    settings = stages.STAGES["shards"].settings(config.validate({}))
    texts = [d["text"] for d in docs]
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(), "cores": a.cores,
            "cpu": subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("Model name:")[1].splitlines()[0].strip(),
            "mb": round(sum(len(t.encode()) for t in texts) / 1e6, 1), "documents": len(docs), "shards": a.shards, "vocab": a.vocab,
            "command": relative_command(sys.argv, {"<workdir>": a.work})}
    best: dict = {}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for r in range(a.repeats):
        row = {**info, "repeat": r, "load_before": os.getloadavg()[0]}
        row["raw"] = run_raw(texts, a.work / "tok", ids=False)
        row["raw_ids"] = run_raw(texts, a.work / "tok", ids=True)
        row["stage"] = run_stage(a.work, settings, a.shards, a.cores)
        row["load_after"] = os.getloadavg()[0]
        row["stage_vs_raw"] = row["stage"]["tokens_per_second"] / row["raw"]["tokens_per_second"]
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        for side in ("raw", "raw_ids", "stage"):
            best[side] = max(best.get(side, 0), row[side]["tokens_per_second"])
        print(json.dumps({k: row[k] for k in ("repeat", "load_before", "load_after", "raw", "raw_ids", "stage", "stage_vs_raw")}), flush=True)
    print(f"best of {a.repeats}: raw {best['raw'] / 1e6:.2f}M tok/s, raw+ids {best['raw_ids'] / 1e6:.2f}M, "
          f"stage {best['stage'] / 1e6:.2f}M ({best['stage'] / best['raw']:.0%} of raw)")


if __name__ == "__main__":
    main()
