"""Model FLOPs utilisation of our training code (lmbuild.training.trained_checkpoint) for a ~125M-parameter Llama on GPUs.

    python bench/train_gpu.py --batch 16 --seq 2048 --steps 60 [--compile] [--compile-mode M] [--kernels torch|liger]
        [--attention sdpa|flash_attention_2] [--nproc N --parallel ddp|fsdp] [--torchrun] [--dry-run] [--json OUT.jsonl]

Builds the stage's inputs in a temporary folder (a random-init Llama, hidden 768, 12 layers, 12
heads, intermediate 2048, vocabulary 32,000, untied output layer; shards of random tokens, which
cost the model the same FLOPs as text) and runs :func:`lmbuild.training.trained_checkpoint.train` exactly as the stage
does: HF Trainer, fused AdamW, bf16 autocast over fp32 weights, SDPA (flash) attention.

MFU = tokens/s * (6 * N + 12 * L * d * T) / peak, the PaLM / torchtitan convention: N the
parameters that do matrix multiplies (all but the input embedding), L layers, d hidden size, T
sequence length (attention scores and values, counted without the causal halving); peak = 989
TFLOP/s dense bf16 for an H100 SXM. tokens/s is the median of the logged figures after the
first 20 steps (which include torch.compile's warm-up), from the run's loss_curve.csv.

Several GPUs: ``--nproc N`` runs the stage under torchrun with N processes (DDP, or FSDP with
``--parallel fsdp``; ``--torchrun`` alone is N = 1, which is how FSDP's overhead on one GPU is
measured); ``--batch`` is per GPU, so the global batch grows with N (weak scaling) and MFU is
over N GPUs' peak. ``--dry-run``: a tiny model, sequence 128 and 25 steps on whatever device
is there (the CPU too), to check a command end to end before GPU minutes are spent on it.

What it does NOT measure: data loading from disk at scale, several nodes, or text quality.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import relative_command

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast  # noqa: E402

from lmbuild.build import config as lmconfig, stages  # noqa: E402

from lmbuild.training import trained_checkpoint as train
from lmbuild.training.launch import launch  # noqa: E402
from lmbuild.training.trainer import CurveCallback  # noqa: E402
from lmbuild.store.runner import StageContext  # noqa: E402

PEAK = {"H100": 989e12, "H200": 989e12}  # dense bf16, SXM


BENCH_MODEL = {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12}
DRY_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}


def inputs(root: Path, vocab: int, seq: int, blocks: int, heads: int = 12, size: dict = BENCH_MODEL) -> dict[str, Path]:
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0")), eos_token="t1", pad_token="t1")
    cfg = LlamaConfig(vocab_size=vocab, **size, num_attention_heads=heads,
                      num_key_value_heads=heads, max_position_embeddings=seq, tie_word_embeddings=False, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    init = root / "init"
    AutoModelForCausalLM.from_config(cfg).save_pretrained(init)
    tok.save_pretrained(init)
    shards = root / "shards"
    shards.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for split, n in (("train", blocks), ("val", 64)):
        rng.integers(2, vocab, size=(n, seq), dtype=np.uint16).tofile(shards / f"{split}.bin")
        files.append({"path": f"{split}.bin", "split": split, "source": "random", "blocks": n, "tokens": n * seq, "documents": n})
    head = {"dtype": "uint16", "seq_len": seq, "vocab_size": vocab, "eos_token_id": 1}
    (shards / "meta.json").write_text(json.dumps(head))
    # The shards artifact's index (lmbuild/tokens/shards.py): the trainer reads its token files from it.
    (shards / "index.json").write_text(json.dumps({**head, "files": files}))
    return {"init_checkpoint": init, "shards": shards}


def profile_steps(first: int, last: int) -> None:
    """Wrap steps first..last in torch.profiler and print the kernels that took the most GPU time."""
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
    begin, end = CurveCallback.on_step_begin, CurveCallback.on_step_end

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

    CurveCallback.on_step_begin, CurveCallback.on_step_end = on_step_begin, on_step_end


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default="default", help="train.compile_mode (reduce-overhead: CUDA graphs)")
    ap.add_argument("--kernels", default="torch", help="train.kernels: torch, liger (Liger's fused linear + cross-entropy, RMSNorm, SwiGLU, RoPE), auto")
    ap.add_argument("--attention", default="sdpa", help="train.attention: sdpa, flash_attention_2, auto")
    ap.add_argument("--torchrun", action="store_true", help="launch through torchrun even with 1 process (DDP or FSDP path, nccl)")
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) under torchrun; --batch is per process")
    ap.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    ap.add_argument("--dry-run", action="store_true", help="tiny model, sequence 128, 25 steps: checks the command on any device")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of steps 41-44")
    ap.add_argument("--no-cudnn-sdp", action="store_true", help="SDPA without the cuDNN backend (PyTorch's flash kernel)")
    ap.add_argument("--heads", type=int, default=12, help="attention heads (12: head size 64; 6: head size 128, as in Llama 3)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.no_cudnn_sdp:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if a.profile:
        profile_steps(41, 44)
    if a.dry_run:
        a.seq, a.steps, a.heads = 128, 25, 2
    root = Path(tempfile.mkdtemp())
    batch = a.batch * a.nproc
    ins = inputs(root, 1000 if a.dry_run else 32000, a.seq, batch * (a.steps + 2), a.heads, DRY_MODEL if a.dry_run else BENCH_MODEL)
    s = stages.STAGES["trained_checkpoint"].settings(lmconfig.validate({"train": {
        "batch_size": batch, "max_steps": a.steps, "warmup_steps": 10, "learning_rate": 6e-4, "eval_steps": 10_000,
        "eval_batches": 1, "logging_steps": 5 if a.dry_run else 10, "save_steps": 10_000, "compile": a.compile, "bf16": True,
        "compile_mode": a.compile_mode, "kernels": a.kernels, "attention": a.attention, "parallel": a.parallel}}))
    threads = max(1, min(8, (os.cpu_count() or 1) // a.nproc))
    ctx = StageContext("trained_checkpoint", "bench", s, ins, root / "out", root / "work", threads=threads * a.nproc)
    ctx.out.mkdir()
    ctx.work.mkdir()
    started = time.time()
    counts = launch(ctx, a.nproc) if a.torchrun or a.nproc > 1 else train.build(ctx)
    wall = time.time() - started
    rows = list(csv.DictReader(open(ctx.out / "loss_curve.csv")))
    tps = statistics.median(float(r["tokens_per_second"]) for r in rows if r["tokens_per_second"] and int(r["step"]) > (10 if a.dry_run else 20))
    model = AutoModelForCausalLM.from_pretrained(ctx.out)
    n_all = sum(p.numel() for p in model.parameters())
    n_mm = n_all - model.get_input_embeddings().weight.numel()
    c = model.config
    flops_per_token = 6 * n_mm + 12 * c.num_hidden_layers * c.hidden_size * a.seq
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = next((v * a.nproc for k, v in PEAK.items() if k in gpu), None)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "command": relative_command(sys.argv),
        "gpu": gpu, "gpus": a.nproc, "batch_per_gpu": a.batch, "batch": batch, "seq": a.seq, "steps": a.steps, "compile": a.compile,
        "compile_mode": a.compile_mode, "torchrun": a.torchrun or a.nproc > 1, "parallel": counts["parallel"], "kernels": counts["kernels"],
        "attention": counts["attention"], "cudnn_sdp": not a.no_cudnn_sdp, "heads": a.heads, "dry_run": a.dry_run,
        "parameters": n_all, "matmul_parameters": n_mm, "flops_per_token": flops_per_token,
        "tokens_per_second": round(tps), "mfu": round(tps * flops_per_token / peak, 4) if peak else None,
        "final_train_loss": counts["final_train_loss"], "processes": counts["processes"], "wall_seconds": round(wall, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() and not (a.torchrun or a.nproc > 1) else None,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__, "liger_kernel": _version("liger-kernel"),
        "cuda": torch.version.cuda,
    }
    print(json.dumps(result), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
