"""Raw ingest at corpus scale: MB/s per core and peak RSS of each `raw` job (issue 13).

Runs `snakemake raw` (then `cleaned` with --stage cleaned) in a fresh working directory on a
corpus made by bench/raw_corpus.py, one job per file (`data.files_per_job: 1`), with
`--notemp` so that the part jobs' manifests survive, and reads them: per job, the compressed
bytes it read, the text bytes it wrote, its wall and CPU seconds and its peak RSS
(lmbuild.store.runner). One job is one process on one core: text MB per CPU-second is MB/s per core
of a machine that is not shared (wall MB/s on a loaded machine says less).

    python bench/raw_bench.py CORPUS_DIR WORK_DIR [--cores 2] [--stage raw|cleaned]
writes bench/results/raw_ingest.json (and prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import yaml

from common import relative_command

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(os.environ.get("SNAKEMAKE", Path(os.sys.executable).parent / "snakemake"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("work")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--stage", default="raw")
    a = ap.parse_args()
    corpus, work = Path(a.corpus).resolve(), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["data"]["sources"] = [
        {"type": "jsonl", "path": str(corpus / "gz-*.jsonl.gz"), "name": "gz", "id_field": "id"},
        {"type": "jsonl", "path": str(corpus / "zst-*.jsonl.zst"), "name": "zst", "id_field": "id"},
        {"type": "parquet", "path": str(corpus / "pq-*.parquet"), "name": "pq", "id_field": "id"},
    ]
    cfg["data"]["files_per_job"] = 1
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", str(a.cores), "--notemp", a.stage, "--configfile", str(work / "config.yaml")]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        raise SystemExit((proc.stdout + proc.stderr)[-3000:])
    files = [p for pat in ("gz-*.jsonl.gz", "zst-*.jsonl.zst", "pq-*.parquet") for p in sorted(corpus.glob(pat))]
    parts = []
    for m in sorted((work / "artifacts" / "_parts" / "raw").glob("*/*/manifest.json")):
        d = json.loads(m.read_text())
        text = sum(s["bytes"] for s in d["counts"]["shards"])
        src = files[int(m.parent.name)]  # files_per_job 1: part i reads the i-th file in config order
        parts.append({
            "part": m.parent.name, "file": src.name, "compressed_mb": round(src.stat().st_size / 2**20, 1),
            "documents": d["counts"]["documents"], "text_mb": round(text / 2**20, 1), "seconds": d["seconds"],
            "text_mb_per_s": round(text / 2**20 / d["seconds"], 1), "peak_rss_mb": d["peak_rss_mb"],
            "cpu_seconds": d.get("cpu_seconds"),
            "text_mb_per_cpu_s": round(text / 2**20 / d["cpu_seconds"]["self"], 1) if d.get("cpu_seconds") else None,
        })
    gathers = {}
    for stage in ("raw", "cleaned"):
        for m in (work / "artifacts" / stage).glob("*/manifest.json"):
            d = json.loads(m.read_text())
            gathers[stage] = {"seconds": d["seconds"], "cpu_seconds": d.get("cpu_seconds"), "peak_rss_mb": d["peak_rss_mb"], "parts_peak_rss_mb": d.get("parts_peak_rss_mb")}
    out = {
        "command": relative_command(cmd, {"<workdir>": work}), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or platform.machine(),
        "load_before_after": os.getloadavg(), "wall_seconds": round(wall, 1), "parts": parts, "gathers": gathers,
    }
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "raw_ingest.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
