"""What checking the inputs a stage reads whole costs: the SHA-256 pass before each job.

    .venv/bin/python bench/input_hash_bench.py ARTIFACTS [--repeats 7] [--gib 1]

ARTIFACTS: a store holding one artifact each of tokenizer, shards, init_checkpoint and
trained_checkpoint (the default run's: `snakemake --cores 2 trained_checkpoint`). For each
(reading stage, input) pair of the model half, times `lmbuild.store.runner.check_inputs` as the job
runs it (every file's size, and the SHA-256 of the files `read_whole` names), median of
`--repeats`, the page cache warm (as after the stage that wrote the input). `--gib N` also hashes
N GiB of random bytes once written (sustained throughput). Prints a table and one JSON line
(appended to bench/results/input_hash_bench.jsonl with --save).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmbuild.store.artifact import _sha256, read_manifest  # noqa: E402
from lmbuild.store.runner import check_inputs  # noqa: E402

PAIRS = [
    ("shards", "tokenizer"),
    ("init_checkpoint", "tokenizer"),
    ("trained_checkpoint", "shards"),
    ("trained_checkpoint", "init_checkpoint"),
    ("eval_report", "shards"),
    ("eval_report", "init_checkpoint"),
    ("eval_report", "trained_checkpoint"),
]


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("artifacts", type=Path)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--gib", type=float, default=0)
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    found = {}
    for stage in {stage for _, stage in PAIRS}:
        found[stage] = next(p.parent for p in sorted((args.artifacts / stage).glob("*/manifest.json")))
    rows = []
    for reader, stage in PAIRS:
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            checked = check_inputs(reader, {stage: found[stage]})
            seconds.append(time.perf_counter() - t0)
        size = sum(e["size"] for e in read_manifest(found[stage])["files"].values())
        rows.append({"reader": reader, "input": stage, "files_hashed": checked["files"], "mb_hashed": round(checked["bytes"] / 1e6, 2),
                     "mb_artifact": round(size / 1e6, 2), "ms": round(statistics.median(seconds) * 1000, 2)})
        r = rows[-1]
        print(f"{reader:19s} <- {stage:18s} {r['files_hashed']:3d} files  {r['mb_hashed']:7.2f} of {r['mb_artifact']:6.2f} MB  {r['ms']:7.2f} ms")
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu(), "cores": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()], "rows": rows}
    if args.gib:
        with tempfile.NamedTemporaryFile(dir=args.artifacts) as f:
            chunk = os.urandom(1 << 20)
            for _ in range(int(args.gib * 1024)):
                f.write(chunk)
            f.flush()
            t0 = time.perf_counter()
            _sha256(Path(f.name))
            result["seconds_per_gib"] = round((time.perf_counter() - t0) / args.gib, 3)
        print(f"sustained: {result['seconds_per_gib']} s per GiB")
    print(json.dumps(result))
    if args.save:
        with open(ROOT / "bench" / "results" / "input_hash_bench.jsonl", "a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
