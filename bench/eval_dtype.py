"""Evaluation in bf16 against fp32: the eval_report stage run twice on one checkpoint (eval.dtype).

    python bench/eval_dtype.py [--hidden 256 --layers 4 --heads 4] [--items 60] [--json OUT.jsonl]

The checkpoint is the test suite's (tests/evaluation/test_evaluate.py: a byte-level BPE trained on Python
standard-library source and a seeded random Llama of the given size); the tasks are the held-out
perplexity task on six stdlib modules and lm-eval's own hellaswag on the vendored 60 validation
items (tests/fixtures). Prints and records each dtype's scores and seconds, the differences,
and whether each HellaSwag difference is within lm-eval's standard error of the fp32 figure.

What it does NOT do: judge a trained model's quality (the model is random: the point is the
arithmetic), or measure lm-eval's throughput at scale.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import relative_command  # bench/common.py, before tests/ goes first on the path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import lmbuild  # noqa: E402,F401 (sets the hub defaults before transformers is imported)
import torch  # noqa: E402

import test_evaluate as te  # noqa: E402
from lmbuild.evaluation import eval_report as evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--items", type=int, default=60, help="HellaSwag items (at most the 60 vendored)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(tempfile.mkdtemp())
    ins = {"trained_checkpoint": te.make_checkpoint(root / "ckpt", hidden=a.hidden, layers=a.layers, heads=a.heads, max_pos=1024),
           "shards": te.make_shards(root / "shards")}
    spec = {"task": "hellaswag", "data": str(te.HELLASWAG_FIXTURE), "preprocessed": True}
    figures = {}
    for dtype in ("float32", "bfloat16", "float32", "bfloat16"):  # alternated; the second of each is timed warm
        ctx = te.make_ctx(root / f"{dtype}-{len(figures)}", ins, tasks=[spec], limit=a.items, prompts=["def main():"], dtype=dtype)
        started = time.perf_counter()
        evaluate.build(ctx)
        seconds = time.perf_counter() - started
        m = json.loads((ctx.out / "report.json").read_text())["checkpoints"][0]["metrics"]
        figures[dtype] = {
            "seconds": round(seconds, 2),
            "bits_per_byte": m["lmbuild_heldout"]["metrics"]["bits_per_byte"]["value"],
            **{k: m["hellaswag"]["metrics"][k] for k in ("acc", "acc_norm")},
        }
    f32, b16 = figures["float32"], figures["bfloat16"]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "command": relative_command(sys.argv),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "load": os.getloadavg()[0],
        "model": {"hidden": a.hidden, "layers": a.layers, "heads": a.heads}, "hellaswag_items": a.items, "figures": figures,
        "bits_per_byte_rel_diff": abs(b16["bits_per_byte"] - f32["bits_per_byte"]) / f32["bits_per_byte"],
        "within_stderr": {k: abs(b16[k]["value"] - f32[k]["value"]) <= f32[k]["stderr"] for k in ("acc", "acc_norm")},
        "torch": torch.__version__,
    }
    print(json.dumps(result), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
