"""Time the default run (config.yaml) from nothing, and print the figures bench/README.md quotes.

    .venv/bin/python bench/default_run.py [--configfile config.yaml] [--workdir DIR]

Runs `snakemake --cores 2` in a fresh working directory (lmbuild-bench in the temp folder
unless --workdir says otherwise; it is emptied first), then reads every artifact's
manifest: seconds per stage, document counts, and the validation loss before and after
training. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import relative_command, scratch

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["raw", "cleaned", "deduplicated", "tokenizer", "shards", "init_checkpoint", "trained_checkpoint", "eval_report"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configfile", default=str(ROOT / "config.yaml"))
    ap.add_argument("--workdir", default=str(scratch("lmbuild-bench")))
    ap.add_argument("--cores", default="2")
    args = ap.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", args.cores, "--configfile", args.configfile]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        sys.exit((proc.stdout + proc.stderr)[-4000:])
    t1 = time.time()
    noop = subprocess.run(cmd + ["-n"], capture_output=True, text=True)
    noop_s = time.time() - t1
    assert "Nothing to be done" in noop.stdout + noop.stderr

    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; command: {relative_command(cmd, {'<workdir>': work})}")
    print(f"wall clock of the whole run: {wall:.0f} s; no-op rerun (`-n`): {noop_s:.1f} s\n")
    print("| stage | seconds | figures |\n|---|---|---|")
    for stage in STAGES:
        (art,) = [p for p in (work / "artifacts" / stage).iterdir() if not p.name.startswith(".")]
        m = json.loads((art / "manifest.json").read_text())
        c = m["counts"]
        keep = {k: v for k, v in c.items() if not isinstance(v, (dict, list))}
        figures = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(keep.items())[:8])
        print(f"| {stage} | {m['seconds']:.1f} | {figures} |")


if __name__ == "__main__":
    main()
