"""What continuing a wsd run saves: a longer run from the stable-phase cache against a straight run.

    python bench/continue_bench.py [--short 60] [--long 120] [--json OUT.jsonl]

Builds a small Llama (hidden 64, 2 layers, sequences of 64 tokens, batch 8) on the Python
standard library with this pipeline's stages, then in one artifact store trains ``--short``
steps of wsd (decay 10%), then ``--long`` steps, which starts at the cached end of the short
run's stable phase; then ``--long`` steps straight in a second store. Prints each job's wall
seconds and steps trained, and whether the continued and the straight run have the same weights
(they must: tests/training/test_train.py checks it bit for bit).

What it does NOT do: measure anything but one CPU process, or a cosine run (nothing to reuse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.models import init_checkpoint as model  # noqa: E402
from lmbuild.tokens import shards as pack, tokenizer
from lmbuild.training import trained_checkpoint as train

SEQ = 64
MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": SEQ}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", type=int, default=60)
    ap.add_argument("--long", type=int, default=120)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="continue-bench-") as tmp:
        root = Path(tmp)
        dedup = lc.write_deduplicated(root / "dedup", lc.stdlib_docs(limit=120))
        tok = lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 1024}), {"deduplicated": dedup}, root)
        shards = lc.run(pack, "shards", lc.settings("shards", pack={"seq_len": SEQ, "val_fraction": 0.05}), {"deduplicated": dedup, "tokenizer": tok}, root)
        init = lc.run(model, "init_checkpoint", lc.settings("init_checkpoint", model=MODEL, pack={"seq_len": SEQ}), {"tokenizer": tok}, root, threads=1)
        inputs = {"init_checkpoint": init, "shards": shards}
        base = {"lr_scheduler": "wsd", "warmup_steps": 5, "batch_size": 8, "learning_rate": 0.003, "eval_steps": 20, "eval_batches": 4, "logging_steps": 10, "save_steps": 20, "bf16": False}
        rows = []
        for name, store, steps in (("short", "store", a.short), ("continued", "store", a.long), ("straight", "straight", a.long)):
            s = lc.settings("trained_checkpoint", train={**base, "max_steps": steps})
            started = time.perf_counter()
            out = lc.run(train, "trained_checkpoint", s, inputs, root / store, key=name, threads=1)
            seconds = time.perf_counter() - started
            counts = json.loads((out / "manifest.json").read_text())["counts"]
            rows.append({"run": name, "max_steps": steps, "steps_trained": counts["steps_trained"], "seconds": round(seconds, 1),
                         "continued_from_step": counts["stable"]["continued_from_step"]})
            print(rows[-1], flush=True)
        x, y = load_file(root / "store/trained_checkpoint/continued/model.safetensors"), load_file(root / "straight/trained_checkpoint/straight/model.safetensors")
        same = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        print(f"continued == straight, bit for bit: {same}; continued/straight wall time: {rows[1]['seconds'] / rows[2]['seconds']:.2f}")
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({"rows": rows, "bit_identical": same, "date": time.strftime("%Y-%m-%d")}) + "\n")


if __name__ == "__main__":
    main()
