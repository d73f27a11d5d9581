"""MinHash hashing (the map step's work: words, shingles, signatures, band keys) of this
checkout against lmbuild/data/minhash.py at another git revision, alternating in one process.

    python bench/minhash_bench.py CLEANED_DIR [--ref main] [--rounds 3] [--threads 1 2] [--json out.json]

CLEANED_DIR: cleaned-schema Parquet shards (bench/dedup_bench.py --make writes mixed-x4, the
100 MB mixed corpus). The batches are read once (not timed), as the map job cuts them
(lmbuild.data.deduplicated._texts). The band keys of both revisions are compared: a speed-up
that changed a hash would be a different dedup.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def module_at(ref: str):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:lmbuild/data/minhash.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "minhash_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("minhash_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cleaned")
    ap.add_argument("--ref", default="main")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json")
    a = ap.parse_args()
    from lmbuild.data import deduplicated as dedup
    from lmbuild.data import minhash as ours

    ref = module_at(a.ref)
    files = sorted(str(p) for p in Path(a.cleaned).glob("shard-*.parquet"))
    batches = list(dedup._texts(files))
    mb = sum(b.column("text").nbytes for b in batches) / 1e6
    old, new = ref.MinHasher(), ours.MinHasher()
    for b in batches:
        t = b.column("text")
        assert np.array_equal(old.band_keys(old.signatures(t)), new.band_keys(new.signatures(t))), "band keys differ"

    def run_ref():
        for b in batches:
            old.band_keys(old.signatures(b.column("text")))

    def run_ours(threads):
        for _ in new.keyed(iter(batches), threads):
            pass

    runs = [(f"{a.ref} (1 thread)", run_ref)] + [(f"this checkout ({t} thread{'s' * (t > 1)})", lambda t=t: run_ours(t)) for t in a.threads]
    results = []
    for r in range(a.rounds):
        for name, fn in runs:
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            results.append({"round": r, "run": name, "seconds": round(dt, 2), "mb_per_s": round(mb / dt, 2), "load": round(load, 1)})
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{sum(b.num_rows for b in batches):,} documents, {mb:.1f} MB; band keys identical\n")
    print("| round | run | seconds | MB/s | load |\n|---|---|---|---|---|")
    for x in results:
        print(f"| {x['round']} | {x['run']} | {x['seconds']} | {x['mb_per_s']} | {x['load']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"mb": round(mb, 1), "ref": a.ref, "results": results}, indent=1))


if __name__ == "__main__":
    main()
