"""Time the eval_report stage on an existing build's checkpoints, with HellaSwag from the local file.

    python bench/eval_report.py ARTIFACTS_DIR [LIMIT]      # e.g. <workdir>/artifacts of bench/default_run.py

ARTIFACTS_DIR holds init_checkpoint/<key>, trained_checkpoint/<key> and shards/<key> (e.g. the
default run's, from bench/default_run.py); the report goes to ARTIFACTS_DIR/eval_report/bench-hellaswag.
Prints the load average before and after, the seconds, and the manifest's counts.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED_DATA  # noqa: E402
from lmbuild.build.config import validate  # noqa: E402
from lmbuild.evaluation.eval_report import build  # noqa: E402
from lmbuild.store.runner import run  # noqa: E402

HELLASWAG = SHARED_DATA / "eval" / "hellaswag_val.jsonl"

art = Path(sys.argv[1])
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 200
os.chdir(art.parent)  # manifests record input paths relative to the build's working directory
inputs = {s: next(p for p in sorted((art / s).iterdir()) if not p.name.startswith(".")) for s in ("init_checkpoint", "trained_checkpoint", "shards")}
cfg = validate({"eval": {"tasks": [{"task": "hellaswag", "data": str(HELLASWAG), "preprocessed": True}], "limit": limit}})
out = art / "eval_report" / "bench-hellaswag"
shutil.rmtree(out, ignore_errors=True)
print("load before", os.getloadavg(), flush=True)
t = time.time()
manifest = run(build, stage="eval_report", key="bench-hellaswag", settings=cfg["eval"], lineage={"inputs": {}}, inputs=inputs, output=out, threads=2)
print(f"seconds {time.time() - t:.1f}; load after {os.getloadavg()}")
print(json.dumps(manifest["counts"], indent=1))
