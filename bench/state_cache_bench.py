"""What keys-by-content cost at parse time: first parse, later parses, after a touch.

    .venv/bin/python bench/state_cache_bench.py [--gb 2] [--files 200] [--workdir DIR]

Writes `--files` JSON Lines files of real text (the standard library's source, repeated with a
counter so no two files are equal) totalling `--gb` GB, then times lmbuild's own part of the
parse (config validation + `Plan`: every key, every source file by content) three ways:
  first:   an empty state cache (every byte is read and hashed with sha256),
  later:   the saved cache (one stat per file),
  touched: every file's mtime changed (each is read again once; keys stay the same).
Prints one JSON line: seconds, GB/s while hashing, the CPU and the load average. The work
folder (kept: a rerun reuses its corpus) defaults to lmbuild-state in the temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import scratch  # noqa: E402
from lmbuild.build.config import validate  # noqa: E402
from lmbuild.build.filestate import StateCache  # noqa: E402
from lmbuild.build.graph import Plan  # noqa: E402


def write_corpus(folder: Path, gb: float, files: int) -> None:
    text = "".join(p.read_text(errors="replace") for p in sorted(Path(os.__file__).parent.glob("*.py")))
    per_file = int(gb * 1e9 / files)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = folder / f"part-{i:05d}.jsonl"
        if path.is_file() and path.stat().st_size >= per_file:
            continue
        with open(path, "w") as f:
            written, j = 0, 0
            while written < per_file:
                line = json.dumps({"text": f"{i}-{j}\n" + text[: 1 << 20]}) + "\n"
                f.write(line)
                written += len(line)
                j += 1


def timed(config: dict, state: StateCache) -> tuple[float, dict]:
    t0 = time.perf_counter()
    keys = {s: a.key for s, a in Plan(validate(config), state=state).artifacts.items()}
    return time.perf_counter() - t0, keys


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--workdir", default=str(scratch("lmbuild-state")))
    args = ap.parse_args()
    work = Path(args.workdir)
    write_corpus(work / "corpus", args.gb, args.files)
    os.chdir(work)
    config = {"data": {"sources": [{"type": "jsonl", "path": "corpus/*.jsonl"}]}}
    cache_file = work / "state.json"
    cache_file.unlink(missing_ok=True)
    state = StateCache(cache_file)
    first, keys = timed(config, state)
    hashed = state.hashed_bytes
    state.save()
    later, keys2 = timed(config, StateCache(cache_file))
    for p in (work / "corpus").iterdir():
        os.utime(p)
    touched_state = StateCache(cache_file)
    touched, keys3 = timed(config, touched_state)
    assert keys == keys2 == keys3
    print(json.dumps({
        "bench": "state_cache", "date": time.strftime("%Y-%m-%d"), "cpu": cpu(), "cores": os.cpu_count(),
        "load": os.getloadavg()[0], "files": args.files, "bytes": hashed,
        "first_s": round(first, 3), "later_s": round(later, 3), "touched_s": round(touched, 3),
        "hash_gb_per_s": round(hashed / 1e9 / state.hash_seconds, 3), "cache_file_bytes": cache_file.stat().st_size,
    }))


if __name__ == "__main__":
    main()
