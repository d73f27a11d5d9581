"""An export's GGUF under llama.cpp itself (llama-cpp-python) against its HF model (transformers).

    python bench/llamacpp_gguf.py <export folder> <shards folder> --llama-python <python with llama_cpp> [--docs 9]

On the first ``--docs`` held-out documents of the shards' ``val_docs.jsonl`` (each cut to the
model's context), it compares llama.cpp's tokenization with the HF tokenizer's, llama.cpp's
next-token choices with the HF model's, and the token perplexity of both, with the time each took.
llama.cpp runs in the other Python (``--llama-python``: a venv with ``pip install
llama-cpp-python``, which compiles llama.cpp), so the project's venv needs no compiled llama.cpp.
Results: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(gguf: str, docs_json: str) -> None:
    """In the llama.cpp venv: tokens, argmax and NLL per document, as JSON on stdout."""
    import llama_cpp.llama_cpp as C
    import numpy as np

    # No AMX repacking (llama.cpp's use_extra_bufts, the CLI's --no-repack): on this 2-core VM the
    # CPU advertises AMX but llama.cpp's AMX kernels for q8_0 die with SIGILL; the plain CPU kernels run.
    defaults = C.llama_model_default_params

    def plain():
        p = defaults()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = plain
    from llama_cpp import Llama

    docs = json.loads(Path(docs_json).read_text())
    llm = Llama(model_path=gguf, n_ctx=docs["n_ctx"], logits_all=True, verbose=False, n_threads=docs["threads"])
    out = []
    started = time.perf_counter()
    for text, ids in zip(docs["texts"], docs["ids"]):
        own = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)[: len(ids)]
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
        nll = float(-sum(logp[i, ids[i + 1]] for i in range(len(ids) - 1)))
        out.append({"tokens_agree": own == ids, "argmax": logits.argmax(-1).tolist(), "nll": nll})
    print(json.dumps({"docs": out, "seconds": time.perf_counter() - started}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("export")
    ap.add_argument("shards")
    ap.add_argument("--llama-python", required=True)
    ap.add_argument("--docs", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    export = Path(a.export)
    gguf = next(export.glob("*.gguf"))
    cfg = json.loads((export / "config.json").read_text())
    n_ctx = cfg["max_position_embeddings"]
    texts = [json.loads(line)["text"] for line in (Path(a.shards) / "val_docs.jsonl").read_text().splitlines() if line.strip()][: a.docs]
    tok = AutoTokenizer.from_pretrained(export)
    ids = [tok(t, add_special_tokens=False)["input_ids"][:n_ctx] for t in texts]
    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    started, hf = time.perf_counter(), []
    with torch.no_grad():
        for x in ids:
            logits = model(torch.tensor([x])).logits[0]
            nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(x[1:]), reduction="sum").item()
            hf.append({"argmax": logits.argmax(-1).tolist(), "nll": nll})
    hf_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        docs_json = Path(tmp) / "docs.json"
        docs_json.write_text(json.dumps({"texts": texts, "ids": ids, "n_ctx": n_ctx, "threads": a.threads}))
        proc = subprocess.run([a.llama_python, __file__, "--worker", str(gguf), str(docs_json)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"llama.cpp failed:\n{proc.stderr[-3000:]}")
    ll = json.loads(proc.stdout.strip().splitlines()[-1])
    positions = sum(len(x) for x in ids)
    agree = sum(sum(p == q for p, q in zip(h["argmax"], c["argmax"])) for h, c in zip(hf, ll["docs"]))
    predicted = sum(len(x) - 1 for x in ids)
    print(json.dumps({
        "gguf": gguf.name, "docs": len(ids), "positions": positions,
        "tokenizer_agrees": all(d["tokens_agree"] for d in ll["docs"]),
        "next_token_agreement": round(agree / positions, 6),
        "token_perplexity": {"transformers": round(math.exp(sum(h["nll"] for h in hf) / predicted), 4),
                             "llama.cpp": round(math.exp(sum(c["nll"] for c in ll["docs"]) / predicted), 4)},
        "seconds": {"transformers": round(hf_seconds, 3), "llama.cpp": round(ll["seconds"], 3)},
    }, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
