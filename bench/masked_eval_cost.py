"""What an encoder's evaluation costs on this CPU (lmbuild.evaluation.masked): pseudo-perplexity
tokens per second and masked-accuracy windows per second, at the default config's sizes.

    python bench/masked_eval_cost.py [--hidden 256 --layers 4 --heads 4 --seq-len 256] [--tokens 256] [--json OUT.jsonl]

The model is a seeded random ModernBERT of the given size (lmbuild.models.modernbert.init_model) with a
byte-level BPE (vocab 8192 + mask) trained on Python standard-library modules, which are also
the held-out documents. Pseudo-perplexity costs one forward pass of a whole window per scored
token, whatever the weights, so a random model measures it as well as a trained one; the
figures size eval.pseudo_perplexity_tokens (seconds = tokens / rate, per checkpoint).

What it does NOT do: judge quality (the model is random), or measure on a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import lmbuild  # noqa: E402,F401 (sets the hub defaults before transformers is imported)
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.build import config as lmconfig  # noqa: E402
from lmbuild.models import modernbert as masked  # noqa: E402
from lmbuild.evaluation import masked as masked_eval
from lmbuild.build import stages
from lmbuild.tokens import tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=256, help="pseudo-perplexity tokens to time")
    ap.add_argument("--docs", type=int, default=50, help="held-out documents (masked-accuracy windows)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    docs = lc.stdlib_docs(limit=200)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dedup = lc.write_deduplicated(root / "dedup", docs)
        tok_dir = lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 8192}), {"deduplicated": dedup}, root)
        tok = masked.with_mask_token(AutoTokenizer.from_pretrained(tok_dir))
    model_settings = {"objective": "masked", "hidden_size": a.hidden, "intermediate_size": int(a.hidden * 2.6875), "num_hidden_layers": a.layers,
                      "num_attention_heads": a.heads, "num_key_value_heads": a.heads, "max_position_embeddings": a.seq_len}
    s = stages.STAGES["init_checkpoint"].settings_of(True)(lmconfig.validate({"model": model_settings, "pack": {"seq_len": a.seq_len}}))
    model = masked.init_model(s, tok).eval()
    windows = masked_eval.document_windows(tok, [d["text"] for d in docs[-a.docs :]], a.seq_len)
    # CPU seconds beside wall seconds: on a shared machine the wall clock measures the neighbours.
    t0, c0 = time.perf_counter(), time.process_time()
    acc = masked_eval.masked_accuracy(model, tok, windows, 0.15, 0, a.batch_size, "float32")
    t1, c1 = time.perf_counter(), time.process_time()
    ppl = masked_eval.pseudo_perplexity(model, tok, windows, a.tokens, 0, a.batch_size, "float32")
    t2, c2 = time.perf_counter(), time.process_time()
    row = {
        "date": datetime.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "load_1min": os.getloadavg()[0],
        "threads": a.threads,
        "hidden": a.hidden, "layers": a.layers, "heads": a.heads, "seq_len": a.seq_len, "batch_size": a.batch_size,
        "windows": len(windows),
        "masked_accuracy_seconds": round(t1 - t0, 2),
        "windows_per_second": round(len(windows) / (t1 - t0), 2),
        "pseudo_perplexity_tokens": ppl["pseudo_perplexity_tokens"],
        "pseudo_perplexity_seconds": round(t2 - t1, 2),
        "pseudo_perplexity_tokens_per_second": round(ppl["pseudo_perplexity_tokens"] / (t2 - t1), 2),
        "masked_accuracy_cpu_seconds": round(c1 - c0, 2),
        "pseudo_perplexity_cpu_seconds": round(c2 - c1, 2),
        "pseudo_perplexity_tokens_per_cpu_second": round(ppl["pseudo_perplexity_tokens"] / (c2 - c1), 2),
        "masked_tokens": acc["masked_tokens"],
    }
    print(json.dumps(row))
    if a.json:
        with a.json.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
