"""A 2 x 2 sweep on the default corpus, timed, and the job counts of sweeps against separate builds.

    .venv/bin/python bench/sweep_bench.py [--max-steps 10] [--workdir DIR]

1. `snakemake -n` job counts: a 3 x 2 grid (train.learning_rate x model.num_hidden_layers) as
   one sweep, against the six runs as six separate builds, each in a fresh working directory
   (no shared store: what a script looping over configs without content addressing runs).
2. The 2 x 2 sweep (learning rate 0.001/0.004 x 2/4 layers, train.max_steps reduced so that it
   fits a shared 2-core machine) built with `snakemake --cores 2 sweep` from an empty folder:
   wall time, jobs run per rule, the best run and its metric. Appends one JSON line to
   bench/results/sweep.jsonl. The work folder (emptied first) defaults to lmbuild-sweep-bench in
   the temp folder.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from common import job_stats, relative_text, scratch

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def snakemake(work: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "2", *args, "--configfile", str(work / "config.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit((proc.stdout + proc.stderr)[-4000:])
    return proc


def planned(proc: subprocess.CompletedProcess) -> dict[str, int]:
    return job_stats(proc.stdout + proc.stderr)


def with_overrides(base: dict, overrides: dict) -> dict:
    cfg = json.loads(json.dumps(base))
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = cfg
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=str(scratch("lmbuild-sweep-bench")))
    ap.add_argument("--max-steps", type=int, default=10)
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    load_before = os.getloadavg()
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    # Shortened so that four runs fit a shared 2-core machine: fewer steps, validation on 2
    # batches at the start, the middle and the end, 16 generated tokens per prompt.
    short = {
        "train.max_steps": args.max_steps,
        "train.warmup_steps": max(1, args.max_steps // 10),
        "train.eval_steps": max(1, args.max_steps // 2),
        "train.eval_batches": 2,
        "eval.max_new_tokens": 16,
    }
    base = with_overrides(base, short)

    grid = {"train.learning_rate": [0.001, 0.002, 0.004], "model.num_hidden_layers": [2, 4]}
    sweep_jobs = planned(snakemake(work / "dry-sweep", {**base, "sweep": {"grid": grid}}, "sweep", "-n"))
    separate = collections.Counter()
    for lr in grid["train.learning_rate"]:
        for layers in grid["model.num_hidden_layers"]:
            cfg = with_overrides(base, {"train.learning_rate": lr, "model.num_hidden_layers": layers})
            separate.update(planned(snakemake(work / f"dry-{lr}-{layers}", cfg, "-n")))
    targets = {"sweep", "all"}
    count = lambda jobs: sum(v for k, v in jobs.items() if k not in targets)  # noqa: E731

    cfg = {**base, "sweep": {"grid": {"train.learning_rate": [0.001, 0.004], "model.num_hidden_layers": [2, 4]}}}
    run = work / "sweep-2x2"
    plan2 = planned(snakemake(run, cfg, "sweep", "-n"))
    t0 = time.time()
    proc = snakemake(run, cfg, "sweep")
    wall = time.time() - t0
    ran = collections.Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", proc.stdout + proc.stderr))
    t1 = time.time()
    noop = planned(snakemake(run, cfg, "sweep", "-n"))
    noop_s = time.time() - t1
    (report,) = [p for p in (run / "artifacts" / "sweep_report").iterdir() if not p.name.startswith(".")]
    data = json.loads((report / "report.json").read_text())
    trained = {r["run"]: r["metrics"] for r in data["rows"]}
    separate2 = sum(count(planned(snakemake(work / f"dry2-{n}", with_overrides(base, v), "-n"))) for n, v in ((r["run"], r["values"]) for r in data["rows"]))
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "overrides": short,
        "grid_3x2": {"sweep_jobs": count(sweep_jobs), "sweep_by_rule": sweep_jobs, "six_separate_builds_jobs": count(separate), "separate_by_rule": dict(separate)},
        "sweep_2x2": {
            "wall_seconds": round(wall, 1),
            "jobs_planned": count(plan2),
            "jobs_run": sum(v for k, v in ran.items() if k not in targets),
            "by_rule": dict(ran),
            "four_separate_builds_jobs": separate2,
            "noop_jobs": count(noop),
            "noop_seconds": round(noop_s, 1),
            "best": data["best"],
            "metric": data["metric"],
            "best_value": data["best_value"],
            "runs": {n: {k: m.get(k) for k in ("final_val_loss", "heldout_bits_per_byte", "train_seconds", "tokens_per_second")} for n, m in trained.items()},
            "report": relative_text(str(report), {"<workdir>": work}),
        },
        "load_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results" / "sweep.jsonl"
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
