"""Training tokens/second on this CPU: our stage (lmbuild.training.trained_checkpoint) against the course's recipe, side by side.

    python bench/train_bench.py [--rounds 2] [--steps 30] [--batch 2] [--seq 512] [--json OUT.jsonl]

The course: DeepLearning.AI / Upstage "Pretraining LLMs", lesson 5: a plain HF ``Trainer`` with
the lesson's ``TrainingArguments`` (adamw_torch, lr 5e-5, no weight decay, linear schedule with 10
warmup steps, gradient checkpointing, 2 dataloader workers, a checkpoint saved every 3 steps
(save_total_limit 2), batch 2). Two variants of it: ``course-fp32`` (fp32 weights, ``bf16=False``:
the issue's baseline) and ``course-bf16`` (as published: weights loaded in bf16, ``bf16=True``).

``plain`` / ``plain-fp32``: the ceiling, a plain PyTorch loop (fused AdamW, bf16 autocast where
the CPU has it / fp32), nothing else.

Ours: ``lmbuild.training.trained_checkpoint.train`` exactly as the stage runs it (fused AdamW, bf16 autocast over fp32
weights where the CPU has bf16 arithmetic, no gradient checkpointing, equal-length blocks
stacked, no per-step host work), with the same model, data, batch and steps; validation and
checkpoints off in the timed steps. Ablations of ours show where the speed comes from.

Same model (this pipeline's default Llama: hidden 256, 4 layers, vocab 8192 BPE trained on the
data), same data (the Python standard library, tokenized and packed into ``--seq`` blocks by our
stages), same tokens per step, alternated ``--rounds`` times in one process. tokens/s = tokens of
steps 6..N / their wall time (the first 5 steps are warm-up), measured by one callback for all.

What it does NOT do: measure quality per step (the recipes use different learning rates), or
large models (see bench/train_gpu.py for the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import relative_command  # bench/common.py, before tests/ goes first on the path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import lmbuild  # noqa: E402,F401 (sets the hub defaults before transformers is imported)
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.models import init_checkpoint as model  # noqa: E402
from lmbuild.tokens import shards as pack, tokenizer
from lmbuild.training import trained_checkpoint as train
from lmbuild.training.accel import bf16_available  # noqa: E402
from lmbuild.training.trainer import CurveCallback  # noqa: E402
from lmbuild.tokens.blocks import ShardedBlocks  # noqa: E402

WARMUP = 5


class Clock(TrainerCallback):
    """Wall time from the end of step WARMUP to the end of the last step."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == WARMUP:
            self.t0 = time.perf_counter()
        if state.global_step == state.max_steps:
            self.seconds = time.perf_counter() - self.t0


def build_inputs(root: Path, seq: int, threads: int) -> dict[str, Path]:
    dedup = lc.write_deduplicated(root / "dedup", lc.stdlib_docs(limit=300))
    tok = lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 8192}), {"deduplicated": dedup}, root, threads=threads)
    shards = lc.run(pack, "shards", lc.settings("shards", pack={"seq_len": seq, "val_fraction": 0.02}, model={"max_position_embeddings": seq}), {"deduplicated": dedup, "tokenizer": tok}, root, threads=threads)
    init = lc.run(model, "init_checkpoint", lc.settings("init_checkpoint", model={"max_position_embeddings": seq}, pack={"seq_len": seq}), {"tokenizer": tok}, root, threads=threads)
    return {"init_checkpoint": init, "shards": shards, "tokenizer": tok}


def course(ins: dict, out: Path, steps: int, batch: int, bf16: bool, saves: bool) -> float:
    """The lesson's Trainer run; returns tokens/s."""
    m = AutoModelForCausalLM.from_pretrained(ins["init_checkpoint"], dtype=torch.bfloat16 if bf16 else torch.float32)
    args = TrainingArguments(
        output_dir=str(out), optim="adamw_torch", max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-5,
        weight_decay=0, warmup_steps=min(10, steps - 1), lr_scheduler_type="linear", gradient_checkpointing=True, dataloader_num_workers=2,
        bf16=bf16, gradient_accumulation_steps=1, logging_steps=3, report_to="none", save_strategy="steps" if saves else "no",
        save_steps=3, save_total_limit=2, seed=0, use_cpu=True, disable_tqdm=True,
    )
    clock = Clock()
    data = ShardedBlocks(ins["shards"])
    Trainer(model=m, args=args, train_dataset=data, callbacks=[clock]).train()
    return (steps - WARMUP) * batch * data.seq_len / clock.seconds


def plain(ins: dict, steps: int, batch: int, bf16: bool) -> float:
    """The ceiling: a plain PyTorch loop over the same model, blocks and batch, fused AdamW, bf16
    autocast where ``bf16``; no Trainer, no schedule, no clipping, no logging. Returns tokens/s."""
    m = AutoModelForCausalLM.from_pretrained(ins["init_checkpoint"], dtype=torch.float32).train()
    data = ShardedBlocks(ins["shards"])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    for step in range(1, steps + 1):
        if step == WARMUP + 1:
            t0 = time.perf_counter()
        ids = torch.stack([data[order[(step * batch + j) % len(data)]]["input_ids"] for j in range(batch)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (steps - WARMUP) * batch * data.seq_len / (time.perf_counter() - t0)


def ours(ins: dict, root: Path, steps: int, batch: int, threads: int, **overrides) -> float:
    s = lc.settings("trained_checkpoint", train={"max_steps": steps, "batch_size": batch, "warmup_steps": min(10, steps - 1), "eval_steps": 10_000,
                                                   "save_steps": 10_000, "eval_batches": 1, "logging_steps": 10, **overrides})
    clock = Clock()
    end = CurveCallback.on_step_end
    CurveCallback.on_step_end = lambda self, *a, **k: (clock.on_step_end(*a, **k), end(self, *a, **k))[1]
    try:
        out, work = root / "out", root / "work"
        out.mkdir(parents=True)
        train.train(s, ins, out, work, threads)
    finally:
        CurveCallback.on_step_end = end
    seq = ShardedBlocks(ins["shards"]).seq_len
    return (steps - WARMUP) * batch * seq / clock.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="course-fp32,course-bf16,course-fp32-nosave,ours,ours-fp32,ours-ckpt")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(tempfile.mkdtemp())
    ins = build_inputs(root / "inputs", a.seq, a.threads)
    runs = {
        "course-fp32": lambda d: course(ins, d, a.steps, a.batch, bf16=False, saves=True),
        "course-bf16": lambda d: course(ins, d, a.steps, a.batch, bf16=True, saves=True),
        "course-fp32-nosave": lambda d: course(ins, d, a.steps, a.batch, bf16=False, saves=False),
        "ours": lambda d: ours(ins, d, a.steps, a.batch, a.threads),
        "ours-fp32": lambda d: ours(ins, d, a.steps, a.batch, a.threads, bf16=False),
        "ours-ckpt": lambda d: ours(ins, d, a.steps, a.batch, a.threads, gradient_checkpointing=True),
        "ours-compile": lambda d: ours(ins, d, a.steps, a.batch, a.threads, compile=True),
        "plain": lambda d: plain(ins, a.steps, a.batch, bf16=bf16_available()),
        "plain-fp32": lambda d: plain(ins, a.steps, a.batch, bf16=False),
    }
    chosen = a.variants.split(",")
    figures: dict[str, list[float]] = {v: [] for v in chosen}
    loads = []
    for r in range(a.rounds):
        for v in chosen:
            loads.append(os.getloadavg()[0])
            tps = runs[v](root / f"{v}-{r}")
            figures[v].append(tps)
            print(f"round {r} {v}: {tps:,.0f} tokens/s (load {loads[-1]:.2f})", flush=True)
    n = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(ins["init_checkpoint"]).parameters())
    med = {v: statistics.median(x) for v, x in figures.items()}
    result = {"command": relative_command(sys.argv), "parameters": n, "batch": a.batch, "seq": a.seq, "steps": a.steps, "threads": a.threads,
              "bf16_native": bf16_available(), "load_min_max": [min(loads), max(loads)], "tokens_per_second": figures,
              "median": {v: round(x) for v, x in med.items()},
              "ratio_vs_course_fp32": {v: round(x / med["course-fp32"], 2) for v, x in med.items()} if "course-fp32" in med else None}
    print(json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
