"""Time building the DAG (`snakemake -n`) of lmbuild against plain Snakemake with the same jobs.

    PYTHONPATH=$PWD .venv/bin/python bench/dag_bench.py [--files 10000] [--repeats 3] [--workdir DIR] [--profile]

It writes N small JSONL files of real text (chunks of the Python standard library's source:
one file per input, as a corpus already split upstream would be), sets
`data.sources: [{type: jsonl, path: data/*.jsonl}]`, `data.files_per_job: 4` and `data.shards: 1`
(a raw part per 4 files, one shard each: N/4 parts of each fan-out rule), and times
`snakemake -n` of lmbuild's workflow (Snakemake parses it, lmbuild validates the config, hashes
every input file through its state cache and computes every key, Snakemake builds the DAG).

The baseline is a plain Snakemake workflow that the script writes into the same folder:
the same rules (names, and the edges of lmbuild's `--rulegraph`), the same number of jobs per
rule (from lmbuild's dry run), the same rule shape (named directory outputs, `log:`, `threads`,
`resources`, `params: stage, key, spec` as functions of the wildcards, a `script:`). Two
variants: `plain` has exactly lmbuild's edges (lmbuild's raw rule reads the source files but
does not declare them: its plan hashes them into the key), `plain_files` also declares the N
input files as inputs of its first rule, as a plain workflow would. A fan-out/fan-in between a 1-job rule and an N-job rule is
all-to-all, as in lmbuild (one raw -> N parts -> one gather); two rules of equal counts B > 1
are all-to-all up to 256 jobs (the dedup map -> bucket shuffle), one-to-one beyond.

The dry runs alternate (each goes first in turn), after one untimed warm-up of each (page cache; lmbuild's file-hash cache). Prints the median, min and
all times, their ratio (target: lmbuild <= 1.2x plain), and the load average before and after.
`--profile` also runs each once under cProfile and prints the top functions by cumulative
time, split into lmbuild's (the plan, state cache, input functions) and Snakemake's.
The work folder defaults to lmbuild-dag in the temp folder; recorded commands and the
profile name files relative to the repository (`<workdir>` for the work folder).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import sysconfig
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from common import job_stats, relative_command, relative_text, scratch

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def stdlib_chunks(n: int, size: int = 2000) -> list[str]:
    """`n` chunks of real text: the standard library's .py files, cut into `size`-char pieces."""
    out: list[str] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        text = path.read_text(errors="replace")
        out.extend(text[i : i + size] for i in range(0, len(text), size))
        if len(out) >= n:
            return out[:n]
    raise SystemExit(f"the stdlib has fewer than {n} chunks of {size} chars")


def make_corpus(work: Path, n: int, extra: dict) -> Path:
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(stdlib_chunks(n)):
        path = data / f"part-{i:05d}.jsonl"
        if not path.exists():
            path.write_text(json.dumps({"id": f"doc{i}", "text": chunk}) + "\n")
    # data.shards is per raw part: 4 files a part, of one shard each, so N/4 raw parts, cleaning
    # parts, dedup maps and shards parts (~N jobs, the size of this DAG before parts were keyed).
    cfg = {"data": {"sources": [{"type": "jsonl", "path": "data/*.jsonl", "kind": "code"}], "shards": 1, "files_per_job": 4}}
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rule_graph(cmd: list[str]) -> list[tuple[str, str]]:
    """(upstream rule, downstream rule) edges of `snakemake --rulegraph`."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', out, re.M))
    return [(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", out, re.M)]


def plain_workflow(work: Path, counts: dict[str, int], edges: list[tuple[str, str]], n_files: int, declare_files: bool) -> Path:
    """A plain Snakefile with lmbuild's rules, job counts and edges (see the module docstring)."""
    target = [r for r in counts if not any(a == r for a, _ in edges)]
    assert len(target) == 1, f"one sink rule expected, got {target}"
    ups: dict[str, list[str]] = {}
    for a, b in edges:
        ups.setdefault(b, []).append(a)
    sources = [r for r in counts if r != target[0] and r not in ups]
    lines = [
        "# Written by bench/dag_bench.py: plain Snakemake with lmbuild's DAG shape (no lmbuild code).",
        "FILES = sorted(glob_wildcards('data/{name}.jsonl').name)",
        f"assert len(FILES) == {n_files}, len(FILES)",
        "",
        "def deps(up, n_up, n_me, i):",
        "    if n_up == 1:",
        "        return [f'out/{up}/0']",
        "    if n_me == 1 or (n_up == n_me and n_up <= 256):",
        "        return [f'out/{up}/{j}' for j in range(n_up)]",
        "    return [f'out/{up}/{int(i) * n_up // n_me}']",
        "",
    ]
    for rule, n in counts.items():
        if rule == target[0]:
            continue
        inputs = [f"        {up}=lambda wc: deps({up!r}, {counts[up]}, {n}, wc.i)," for up in ups.get(rule, [])]
        if rule in sources and declare_files:
            inputs.append("        files=expand('data/{name}.jsonl', name=FILES),")
        lines += [
            f"rule {rule}:",
            "    input:",
            *inputs,
            "    output:",
            f"        directory('out/{rule}/{{i}}'),",
            "    log:",
            f"        'logs/{rule}/{{i}}.log',",
            "    wildcard_constraints:",
            "        i='[0-9]+',",
            "    threads: 1",
            "    resources:",
            "        mem_mb=2000,",
            "        runtime=30,",
            "    params:",
            f"        stage='{rule}',",
            "        key=lambda wc: wc.i,",
            f"        spec=lambda wc: f'specs/{rule}/{{wc.i}}.json',",
            "    script:",
            "        'noop.py'",
            "",
        ]
    top = ups[target[0]]
    lines[4:4] = [
        f"rule {target[0]}:",
        "    default_target: True",
        "    input:",
        *[f"        {up}=[f'out/{up}/{{j}}' for j in range({counts[up]})]," for up in top],
        "",
    ]
    path = work / ("plain_files" if declare_files else "plain") / "Snakefile"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    (path.parent / "noop.py").write_text("from pathlib import Path\nPath(snakemake.output[0]).mkdir(parents=True)\n")
    data = path.parent / "data"
    if not data.exists():
        data.symlink_to(work / "data")
    return path


def timed(cmd: list[str]) -> tuple[float, str]:
    """Run from the workflow's own folder: Snakemake looks for a workflow profile in the
    current folder first, and the plain workflow must not pick up lmbuild's."""
    cwd = cmd[cmd.index("--directory") + 1]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-4000:]}")
    return seconds, out


def profile(cmd: list[str], out: Path, top: int = 25) -> str:
    """Run the snakemake command in this process under cProfile; the top functions, lmbuild's
    (this checkout's files) and Snakemake's, by cumulative time."""
    prof = cProfile.Profile()
    argv, here = sys.argv, os.getcwd()
    sys.argv = [str(SNAKEMAKE), *cmd[1:]]
    os.chdir(cmd[cmd.index("--directory") + 1])
    from snakemake.cli import main as snakemake_main

    prof.enable()
    try:
        snakemake_main()
    except SystemExit:
        pass
    finally:
        prof.disable()
        sys.argv = argv
        os.chdir(here)
    prof.dump_stats(out)
    report = []
    for label, pattern in (("lmbuild (this checkout, rules included)", str(ROOT)), ("snakemake", "snakemake")):
        buf = io.StringIO()
        pstats.Stats(str(out), stream=buf).sort_stats("cumulative").print_stats(pattern, top)
        body = buf.getvalue()
        report.append(f"--- {label}\n" + body[body.find("   ncalls"):])
    return relative_text("\n".join(report))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000, help="input files (4 per raw part: N/4 raw, cleaning, map and shards parts)")
    ap.add_argument("--buckets", type=int, default=1, help="data.dedup.buckets (map and reduce jobs)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=scratch("lmbuild-dag"))
    ap.add_argument("--profile", action="store_true", help="also cProfile one dry run of each (pstats files to the workdir)")
    ap.add_argument("--out", default=None, help="append the result as a JSON line to this file")
    # plain_files declares every input file for every job of its first rule: with N/4 raw parts
    # that is N^2/4 edges (10,000 files: 25M edges, 19 GB of Snakemake's memory before a DAG).
    ap.add_argument("--without-files", action="store_true", help="leave out the plain_files baseline")
    args = ap.parse_args()
    work = Path(args.workdir) / f"n{args.files}"
    cfg = make_corpus(work, args.files, {"data": {"dedup": {"buckets": args.buckets}}})
    ours = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", "2"]
    ours_dry = [*ours, "-n", "--quiet", "rules", "--configfile", str(cfg)]
    # Warm-up: the page cache, and lmbuild's file-hash cache (a first parse reads every file once).
    _, out = timed(ours_dry)
    counts = job_stats(out)
    edges = rule_graph([*ours, "--rulegraph", "--configfile", str(cfg)])
    runs = [("lmbuild", ours_dry)]
    for name, declare in (("plain", False),) if args.without_files else (("plain", False), ("plain_files", True)):
        snakefile = plain_workflow(work, counts, edges, args.files, declare)
        cmd = [str(SNAKEMAKE), "--snakefile", str(snakefile), "--directory", str(snakefile.parent), "--cores", "2", "-n", "--quiet", "rules"]
        _, out = timed(cmd)
        assert job_stats(out) == counts, (job_stats(out), counts)
        runs.append((name, cmd))

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    for r in range(args.repeats):
        for name, cmd in runs[r % len(runs) :] + runs[: r % len(runs)]:  # each goes first in turn
            times[name].append(timed(cmd)[0])
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": args.files,
        "jobs": sum(counts.values()),
        "jobs_per_rule": counts,
        "seconds": times,
        "median": med,
        "ratio_median": round(med["lmbuild"] / med["plain"], 3),
        "ratio_min": round(min(times["lmbuild"]) / min(times["plain"]), 3),
        "ratio_median_vs_plain_files": round(med["lmbuild"] / med["plain_files"], 3) if "plain_files" in med else None,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "commands": {name: relative_command(cmd, {"<workdir>": args.workdir}) for name, cmd in runs},
    }
    print(json.dumps(result, indent=1))
    print(f"\n{args.files:,} input files, {sum(counts.values()):,} jobs: lmbuild median {med['lmbuild']:.2f} s, plain Snakemake "
          f"{med['plain']:.2f} s: ratio {result['ratio_median']:.3f} (min/min {result['ratio_min']:.3f}); plain with the files "
          f"declared {med.get('plain_files', float('nan')):.2f} s; load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    if args.profile:
        for name, cmd in runs[:2]:
            print(f"\n===== cProfile: {name}")
            print(profile(cmd, work / f"{name}.pstats"))


if __name__ == "__main__":
    main()
