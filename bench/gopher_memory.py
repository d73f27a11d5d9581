"""Peak memory and speed of the Gopher repetition rule on one large document of real text.

    .venv/bin/python bench/gopher_memory.py --mb 50 [--mb 100] [--kind distinct|repeated]

Each measurement runs in a fresh subprocess that builds the document, calls
``GopherRepetitionFilter().stats([doc])`` (all rules, the defaults) and reports VmHWM from
/proc/self/status (the process's peak resident memory) minus VmRSS just before the call,
and the call's wall and CPU seconds (CPU time is the figure to compare on a shared machine). The document is real text joined with blank lines: the embedded
corpus (Shakespeare's plays and the stdlib) and, where ../shared/data (``--shared``) is present, the King
James Bible, tinyshakespeare, WikiText-2 and HellaSwag's contexts (about 30 MB of distinct
text). ``distinct``: those documents shuffled (seeded) and cycled up to the size, so beyond
~30 MB they repeat; ``repeated``: the first 2 MB of them cycled, so every n-gram repeats
(no n-gram position is pruned: the worst case for memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from common import SHARED_DATA

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, random, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
mb, kind, module, shared = float(sys.argv[2]), sys.argv[3], sys.argv[4], Path(sys.argv[5])
from lmbuild.data.embedded import iter_embedded
docs = [t for _, t, _ in iter_embedded(None)]
for name in ("corpus/kjv.txt", "corpus/tinyshakespeare.txt", "eval/wikitext2/test.txt", "eval/wikitext2/valid.txt"):
    if (shared / name).is_file():
        docs.append((shared / name).read_text(encoding="utf-8"))
if (shared / "eval/hellaswag_val.jsonl").is_file():
    with open(shared / "eval/hellaswag_val.jsonl") as fh:
        docs.append("\n".join(json.loads(l)["query"] for l in fh))
random.Random(0).shuffle(docs)
pool = "\n\n".join(docs)
if kind == "repeated":
    pool = pool[: 2_000_000]
size = int(mb * 1_000_000)
doc = (pool * (size // len(pool) + 1))[:size]
del docs, pool
import importlib
mod = importlib.import_module(module)
f = mod.GopherRepetitionFilter()
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024
before = status("VmRSS")
import resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t, c = time.perf_counter(), cpu()
stats = f.stats([doc])
secs, cpu_secs = time.perf_counter() - t, cpu() - c
peak = status("VmHWM")
print(json.dumps({"mb": mb, "kind": kind, "module": module, "chars": len(doc), "rss_before_mb": round(before),
                  "peak_mb": round(peak), "added_mb": round(peak - before), "x_doc": round((peak - before) / (len(doc.encode()) / 2**20), 1),
                  "seconds": round(secs, 2), "cpu_seconds": round(cpu_secs, 2), "mb_per_cpu_s": round(len(doc) / 1e6 / cpu_secs, 2),
                  "stats": {k: float(v[0]) for k, v in stats.items()}}))
"""


def measure(mb: float, kind: str, module: str, path: str, shared: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, path, str(mb), kind, module, shared], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, action="append", help="document size in MB (repeatable)")
    ap.add_argument("--kind", choices=("distinct", "repeated"), action="append")
    ap.add_argument("--module", default="lmbuild.data.filters", help="module that defines GopherRepetitionFilter")
    ap.add_argument("--path", default=str(ROOT), help="put this folder first on sys.path (another checkout)")
    ap.add_argument("--shared", default=str(SHARED_DATA), help="the shared real data, where present")
    args = ap.parse_args()
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "load": os.getloadavg()}))
    for kind in args.kind or ["distinct"]:
        for mb in args.mb or [50]:
            print(json.dumps(measure(mb, kind, args.module, args.path, args.shared)), flush=True)


if __name__ == "__main__":
    main()
