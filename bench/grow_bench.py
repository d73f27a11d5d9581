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

With `--built FULL_CPU_S` it goes on in a workdir this bench built (with another checkout, say
main's): a first step `code change` builds it with this checkout's code, then append, edit and
new source again (file N+1, one more document in file 5, a source `c`), each against the full
build's FULL_CPU_S from that earlier run: how a code change to a data stage fares on the same
corpus without a second full build.

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


def grow(work: Path, cfg: dict, mb: int, results: list) -> None:
    """The three changes on a built corpus: append one file, edit one, add a source."""
    corpus = work / "corpus"
    n = len(list(corpus.glob("a-*.jsonl.gz")))
    write_file(corpus / f"a-{n:03d}.jsonl.gz", mb, n, f"a{n}")
    step(work, "append", results, mb, (n + 1) * mb)
    edited = sorted(corpus.glob("a-*.jsonl.gz"))[5 + sum(r["step"] == "edit" for r in results)]
    # One more document like the others, one that cleaning keeps (no curly brackets), so that the
    # edited part's deduplicated shard changes and its shards part is packed again.
    # Seeded by the file's size: no file's seed (its first document would be a duplicate), no earlier edit's.
    rng = random.Random(10**9 + edited.stat().st_size)
    doc = next(d for d in documents(POOL, rng, 1 << 30, f"edit-{edited.stem}") if "{" not in d["text"] and "}" not in d["text"])
    with gzip.open(edited, "ab") as fh:
        fh.write(json.dumps(doc).encode() + b"\n")
    step(work, "edit", results, mb, (n + 1) * mb)
    k = len(cfg["data"]["sources"])
    name = "abcdefgh"[k]
    (work / f"corpus{k + 1}").mkdir(exist_ok=True)
    write_file(work / f"corpus{k + 1}" / f"{name}-000.jsonl.gz", mb, 1000 * k, f"{name}0")
    cfg["data"]["sources"].append({"type": "jsonl", "path": f"corpus{k + 1}/*.jsonl.gz", "name": name})
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    step(work, "new source", results, mb, (n + 1 + k) * mb)


def main() -> None:
    global POOL
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--mb", type=int, default=5)
    ap.add_argument("--tokenizer", required=True, help="a pretrained tokenizer folder (a tokenizer artifact)")
    ap.add_argument("--workdir", type=Path, default=scratch("lmbuild-grow"))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grow_bench.jsonl")
    ap.add_argument("--built", type=float, metavar="FULL_CPU_S",
                    help="the workdir holds a corpus this bench built (its full build took FULL_CPU_S): build it with "
                         "this checkout's code first (step 'code change'), then append, edit and add a source again")
    a = ap.parse_args()
    POOL = lines()
    work = a.workdir
    results: list = []
    started = time.time()
    if a.built:
        cfg = yaml.safe_load((work / "config.yaml").read_text())
        files = len(list((work / "corpus").glob("a-*.jsonl.gz")))
        step(work, "code change", results, 0, files * a.mb)
        full = a.built
    else:
        shutil.rmtree(work, ignore_errors=True)
        (work / "corpus").mkdir(parents=True)
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
        step(work, "full", results, a.files * a.mb, a.files * a.mb)
        full = results[0]["cpu"]
    grow(work, cfg, a.mb, results)
    for r in results:
        r["cpu_vs_full"] = round(r["cpu"] / full, 3)
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": relative_command(sys.argv, {"<workdir>": work}),
        "cpu_model": next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name")), "?"),
        "files": a.files, "mb": a.mb, **({"full_cpu_of_an_earlier_run": a.built} if a.built else {}), "seconds": round(time.time() - started), "steps": results,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    for r in results:
        print(f"{r['step']:<11} cpu {r['cpu']:>8.1f} s ({r['cpu_vs_full']:.1%} of full)  wall {r['wall']:.0f} s  new {r['new_mb']} of {r['total_mb']} MB")


if __name__ == "__main__":
    main()
