"""Model FLOPs utilisation of our training code (lmbuild.train) for a ~125M-parameter Llama on one GPU.

    python bench/train_gpu.py --batch 16 --seq 2048 --steps 60 [--compile] [--torchrun] [--json OUT.jsonl]

Builds the stage's inputs in a temporary folder (a random-init Llama, hidden 768, 12 layers, 12
heads, intermediate 2048, vocabulary 32,000, untied output layer; shards of random tokens, which
cost the model the same FLOPs as text) and runs :func:`lmbuild.train.train` exactly as the stage
does: HF Trainer, fused AdamW, bf16 autocast over fp32 weights, SDPA (flash) attention.

MFU = tokens/s * (6 * N + 12 * L * d * T) / peak, the PaLM / torchtitan convention: N the
parameters that do matrix multiplies (all but the input embedding), L layers, d hidden size, T
sequence length (attention scores and values, counted without the causal halving); peak = 989
TFLOP/s dense bf16 for an H100 SXM. tokens/s is the median of the logged figures after the
first 20 steps (which include torch.compile's warm-up), from the run's loss_curve.csv.

What it does NOT measure: data loading from disk at scale, multi-GPU scaling, or text quality.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast  # noqa: E402

from lmbuild import config as lmconfig, stages, train  # noqa: E402
from lmbuild.runner import StageContext  # noqa: E402

PEAK = {"H100": 989e12, "H200": 989e12}  # dense bf16, SXM


def inputs(root: Path, vocab: int, seq: int, blocks: int, heads: int = 12) -> dict[str, Path]:
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0")), eos_token="t1", pad_token="t1")
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=heads,
                      num_key_value_heads=heads, max_position_embeddings=seq, tie_word_embeddings=False, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    init = root / "init"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(init)
    tok.save_pretrained(init)
    shards = root / "shards"
    shards.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", blocks), ("val", 64)):
        rng.integers(2, vocab, size=(n, seq), dtype=np.uint16).tofile(shards / f"{split}.bin")
    (shards / "meta.json").write_text(json.dumps({"dtype": "uint16", "seq_len": seq, "vocab_size": vocab, "eos_token_id": 1}))
    return {"init_checkpoint": init, "shards": shards}


def profile_steps(first: int, last: int) -> None:
    """Wrap steps first..last in torch.profiler and print the kernels that took the most GPU time."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
    begin, end = train.CurveCallback.on_step_begin, train.CurveCallback.on_step_end

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step + 1 == first:
            prof.start()
        return begin(self, args, state, control, **kw)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == last:
            torch.cuda.synchronize()
            prof.stop()
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70), flush=True)
        return end(self, args, state, control, **kw)

    train.CurveCallback.on_step_begin, train.CurveCallback.on_step_end = on_step_begin, on_step_end


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--torchrun", action="store_true", help="launch through torchrun with 1 process (DDP path, nccl)")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of steps 41-44")
    ap.add_argument("--no-cudnn-sdp", action="store_true", help="SDPA without the cuDNN backend (PyTorch's flash kernel)")
    ap.add_argument("--heads", type=int, default=12, help="attention heads (12: head size 64; 6: head size 128, as in Llama 3)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.no_cudnn_sdp:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if a.profile:
        profile_steps(41, 44)
    root = Path(tempfile.mkdtemp())
    ins = inputs(root, 32000, a.seq, a.batch * (a.steps + 2), a.heads)
    s = stages.STAGES["trained_checkpoint"].settings(lmconfig.validate({"train": {
        "batch_size": a.batch, "max_steps": a.steps, "warmup_steps": 10, "learning_rate": 6e-4, "eval_steps": 10_000,
        "eval_batches": 1, "logging_steps": 10, "save_steps": 10_000, "compile": a.compile, "bf16": True}}))
    ctx = StageContext("trained_checkpoint", "bench", s, ins, root / "out", root / "work", threads=min(8, os.cpu_count() or 1))
    ctx.out.mkdir()
    ctx.work.mkdir()
    started = time.time()
    counts = train.launch(ctx, 1) if a.torchrun else train.build(ctx)
    wall = time.time() - started
    rows = list(csv.DictReader(open(ctx.out / "loss_curve.csv")))
    tps = statistics.median(float(r["tokens_per_second"]) for r in rows if r["tokens_per_second"] and int(r["step"]) > 20)
    model = AutoModelForCausalLM.from_pretrained(ctx.out)
    n_all = sum(p.numel() for p in model.parameters())
    n_mm = n_all - model.get_input_embeddings().weight.numel()
    c = model.config
    flops_per_token = 6 * n_mm + 12 * c.num_hidden_layers * c.hidden_size * a.seq
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK.items() if k in gpu), None)
    result = {
        "gpu": gpu, "batch": a.batch, "seq": a.seq, "steps": a.steps, "compile": a.compile, "torchrun": a.torchrun, "cudnn_sdp": not a.no_cudnn_sdp, "heads": a.heads,
        "parameters": n_all, "matmul_parameters": n_mm, "flops_per_token": flops_per_token,
        "tokens_per_second": round(tps), "mfu": round(tps * flops_per_token / peak, 4) if peak else None,
        "final_train_loss": counts["final_train_loss"], "processes": counts["processes"], "wall_seconds": round(wall, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
    }
    print(json.dumps(result), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
