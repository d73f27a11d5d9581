"""A corpus that grows: CPU-seconds of a rebuild after an append, an edit and a new source,
against the full build (raw -> shards).

    PYTHONPATH=$PWD .venv/bin/python bench/grow_bench.py --files 20 --mb 5 --tokenizer TOK [--workdir DIR]

Writes N gzip JSON Lines files of ~M MB of text each (bench/raw_corpus.py's documents: lines of
the KJV, tinyshakespeare and the standard library), one source `a` with `files_per_job: 1` and
`data.shards: 1` (a part per file), a pretrained tokenizer folder TOK (a tokenizer artifact, e.g.
the smoke build's: a BPE trained on the corpus would change with every file and re-tokenize
everything), and runs `snakemake --cores 2 shards` four times under /usr/bin/time:

  full        the N files, from an empty store
  append      one more file (sorts last): 1/(N+1) of the data is new
  edit        one document appended to file 5 of N+1
  new source  a second source `b` of one file

Each rebuild's CPU-seconds (user + system of Snakemake and every job it ran, its parse and DAG
included) against the full build's; the jobs `snakemake -n` planned before each; the load average
before and after. Results go to bench/results/grow_bench.jsonl.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from common import job_stats, relative_command, scratch
from raw_corpus import documents, lines

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def write_file(path: Path, mb: int, seed: int, prefix: str) -> None:
    rng = random.Random(seed)
    with gzip.open(path, "wb", compresslevel=6) as fh:
        for d in documents(POOL, rng, mb << 20, prefix):
            fh.write(json.dumps(d).encode() + b"\n")


def snakemake(work: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    cmd = ["/usr/bin/time", "-f", "TIME %e %U %S", str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", "2", "shards", *args, "--configfile", str(work / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    m = re.search(r"TIME ([\d.]+) ([\d.]+) ([\d.]+)", proc.stderr)
    t = {"wall": float(m[1]), "cpu": round(float(m[2]) + float(m[3]), 1)} if m else {}
    return proc, t


def planned(work: Path) -> dict:
    proc, _ = snakemake(work, "-n")
    return job_stats(proc.stdout + proc.stderr)


def step(work: Path, name: str, results: list, new_mb: float, total_mb: float) -> None:
    jobs = planned(work)
    load = os.getloadavg()[0]
    proc, t = snakemake(work)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: snakemake failed:\n{proc.stderr[-3000:]}")
    shards = max((work / "artifacts" / "shards").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    reused = json.loads(shards.read_text())["counts"].get("parts_reused")
    row = {"step": name, **t, "new_mb": round(new_mb, 1), "total_mb": round(total_mb, 1), "jobs": jobs, "shards_parts_reused": reused,
           "load_before": round(load, 1), "load_after": round(os.getloadavg()[0], 1)}
    results.append(row)
    print(json.dumps(row), flush=True)


def main() -> None:
    global POOL
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--mb", type=int, default=5)
    ap.add_argument("--tokenizer", required=True, help="a pretrained tokenizer folder (a tokenizer artifact)")
    ap.add_argument("--workdir", type=Path, default=scratch("lmbuild-grow"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grow_bench.jsonl")
    a = ap.parse_args()
    POOL = lines()
    work = a.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "corpus").mkdir(parents=True)
    (work / "corpus2").mkdir()
    shutil.copytree(a.tokenizer, work / "tok")
    for f in range(a.files):
        write_file(work / "corpus" / f"a-{f:03d}.jsonl.gz", a.mb, f, f"a{f}")
    cfg = {
        "artifacts": "artifacts",
        "data": {"sources": [{"type": "jsonl", "path": "corpus/*.jsonl.gz", "name": "a"}], "files_per_job": 1, "shards": 1, "dedup": {"buckets": 2}},
        "tokenizer": {"type": "pretrained", "path": "tok"},
        "resources": {"default": {"threads": 1}},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    results: list = []
    started = time.time()
    n = a.files
    step(work, "full", results, n * a.mb, n * a.mb)
    write_file(work / "corpus" / f"a-{n:03d}.jsonl.gz", a.mb, n, f"a{n}")
    step(work, "append", results, a.mb, (n + 1) * a.mb)
    edited = work / "corpus" / "a-005.jsonl.gz"
    with gzip.open(edited, "ab") as fh:
        fh.write(json.dumps({"text": "One more document, added by an edit.\n" * 20, "id": "edit-1", "url": "https://example.org/edit"}).encode() + b"\n")
    step(work, "edit", results, a.mb, (n + 1) * a.mb)
    write_file(work / "corpus2" / "b-000.jsonl.gz", a.mb, 1000, "b0")
    cfg["data"]["sources"].append({"type": "jsonl", "path": "corpus2/*.jsonl.gz", "name": "b"})
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    step(work, "new source", results, a.mb, (n + 2) * a.mb)
    full = results[0]["cpu"]
    for r in results:
        r["cpu_vs_full"] = round(r["cpu"] / full, 3)
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": relative_command(sys.argv, {"<workdir>": work}),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?"),
        "files": n, "mb": a.mb, "seconds": round(time.time() - started), "steps": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    for r in results:
        print(f"{r['step']:<11} cpu {r['cpu']:>8.1f} s ({r['cpu_vs_full']:.1%} of full)  wall {r['wall']:.0f} s  new {r['new_mb']} of {r['total_mb']} MB")


if __name__ == "__main__":
    main()
