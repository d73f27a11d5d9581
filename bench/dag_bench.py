"""Time building the DAG (`snakemake -n`) for a corpus of many raw shards.

    .venv/bin/python bench/dag_bench.py [--shards 250 500 1000 2000] [--repeats 3] [--workdir /tmp/lmbuild-dag]

For each shard count N it writes N small JSONL files of real text (chunks of the Python
standard library's source: one file per shard, as a corpus already split upstream would
be), sets `data.sources: [{type: jsonl, path: data/*.jsonl}]` and `data.shards: N`, and
runs `snakemake -n` (no job runs; Snakemake parses the workflow, computes every key and
builds the DAG). Prints, per N: the median and min wall seconds over the repeats, the jobs
per rule from the dry run's "Job stats", and the load average before the runs; between
consecutive N, the added seconds per 1,000 added shards: if that stays flat as N doubles,
the parse and DAG build grow linearly, not quadratically.

The data stages fan out per shard where their rules do; with one job per stage, the figure
is the parse (plan keys, file fingerprints) plus Snakemake's start-up. The script also
times lmbuild's own part of the parse in this process (config validation + `Plan`: every
key, every source file stat'ed), to tell it apart from Snakemake's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def stdlib_chunks(n: int, size: int = 2000) -> list[str]:
    """`n` chunks of real text: the standard library's .py files, cut into `size`-char pieces."""
    out: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        text = path.read_text(errors="replace")
        out.extend(text[i : i + size] for i in range(0, len(text), size))
        if len(out) >= n:
            return out[:n]
    raise SystemExit(f"the stdlib has fewer than {n} chunks of {size} chars")


def make_corpus(work: Path, n: int) -> Path:
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(stdlib_chunks(n)):
        (data / f"part-{i:05d}.jsonl").write_text(json.dumps({"id": f"doc{i}", "text": chunk}) + "\n")
    cfg = {"data": {"sources": [{"type": "jsonl", "path": "data/*.jsonl", "kind": "code"}], "shards": n}}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def plan_seconds(work: Path, cfg_path: Path) -> float:
    """Validation + Plan for the config, in this process, from `work` (median of 3)."""
    sys.path.insert(0, str(ROOT))
    from lmbuild.config import validate
    from lmbuild.plan import Plan

    cfg = yaml.safe_load(cfg_path.read_text())
    here = os.getcwd()
    os.chdir(work)
    try:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            Plan(validate(cfg))
            times.append(time.perf_counter() - t0)
    finally:
        os.chdir(here)
    return statistics.median(times)


def job_stats(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    stats = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        stats[m.group(1)] = int(m.group(2))
    return stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, nargs="+", default=[1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/lmbuild-dag")
    ap.add_argument("--executor", default=None, help="e.g. slurm: time the dry run with that executor's settings")
    args = ap.parse_args()
    snakemake = Path(sys.executable).parent / "snakemake"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    rows = []
    for n in args.shards:
        work = Path(args.workdir) / f"n{n}"
        cfg = make_corpus(work, n)
        cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "-n", "--quiet", "rules"]
        cmd += ["--executor", args.executor, "--jobs", "1000"] if args.executor else ["--cores", "2"]
        cmd += ["--configfile", str(cfg)]
        load = os.getloadavg()
        times, out = [], ""
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            out = proc.stdout + proc.stderr
            if proc.returncode:
                raise SystemExit(out[-4000:])
        stats = job_stats(out)
        med = statistics.median(times)
        plan_s = plan_seconds(work, cfg)
        rows.append((n, med, min(times), stats, load, plan_s))
        print(f"\nshards={n}: snakemake -n median {med:.2f} s (min {min(times):.2f} s, {args.repeats} runs); "
              f"validate + Plan {plan_s * 1000:.0f} ms; load before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"  jobs per rule: {json.dumps(stats)}")
        print(f"  command: {' '.join(cmd)}")
    print("\n| raw shards | jobs (total) | `snakemake -n` median s | min s | added s per 1,000 added shards | validate + Plan ms | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    prev = None
    for n, med, mn, stats, load, plan_s in rows:
        slope = f"{(mn - prev[1]) / (n - prev[0]) * 1000:.2f}" if prev and n != prev[0] else ""
        print(f"| {n:,} | {stats.get('total', '?')} | {med:.2f} | {mn:.2f} | {slope} | {plan_s * 1000:.0f} | {load[0]:.2f} |")
        prev = (n, mn)


if __name__ == "__main__":
    main()
