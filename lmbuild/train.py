"""Stage ``trained_checkpoint``: train the initial checkpoint on the packed shards with the HF Trainer.

What it does: AdamW (torch's fused kernel) with linear warmup and cosine decay to
``learning_rate * min_lr_ratio``, gradient clipping, weight decay (not on norms or biases),
blocks sampled at random by a sampler seeded with ``seed``, bf16 autocast over fp32 weights
where the hardware has bf16 arithmetic (``bf16: auto``). Validation loss on a fixed subset
(``eval_batches * batch_size`` validation blocks spread evenly over the validation set, so
that it samples every held-out document rather than the first one or two) at step 0, every ``eval_steps``
and at the end. TensorBoard events (loss, validation loss, learning rate, gradient norm) go to
``tensorboard/`` in the artifact.

Trainer checkpoints (model, optimizer, scheduler, RNG, every ``eval_steps``, the last two
kept) go to the stage's work folder, outside the artifact; a rerun after a crash resumes
from the newest complete one.

The artifact: the final model (fp32 safetensors) and tokenizer, loadable with
``AutoModelForCausalLM``/``AutoTokenizer``, and ``loss_curve.csv`` (step, tokens,
train_loss, val_loss, learning_rate, grad_norm; an empty cell where a value was not
measured at that step). A non-finite loss stops training with an error and saves nothing.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import Subset
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback

from lmbuild.errors import UserError
from lmbuild.model import count_parameters
from lmbuild.pack import META, PackedBlocks
from lmbuild.runner import StageContext

log = logging.getLogger(__name__)

CURVE_COLUMNS = ["step", "tokens", "train_loss", "val_loss", "learning_rate", "grad_norm"]


def bf16_available() -> bool:
    """Whether the device does bf16 arithmetic natively (CPU: avx512_bf16 or AMX).

    Without those instructions CPU bf16 is emulated and slower than fp32.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def use_bf16(setting) -> bool:
    return bf16_available() if setting == "auto" else bool(setting)


def evenly_spaced(n: int, k: int) -> list[int]:
    """``min(n, k)`` distinct indices spread evenly over ``range(n)``."""
    k = min(n, k)
    return [i * n // k for i in range(k)]


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint-N in ``folder`` whose trainer_state.json (written last) exists."""
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file() and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


class FiniteLossTrainer(Trainer):
    """A Trainer that raises on the first non-finite training loss, before the optimizer step."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {self.state.global_step + 1}")
        return loss


class CurveCallback(TrainerCallback):
    """Logs the last step too, and raises on a non-finite validation loss or gradient norm."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        for name in ("eval_loss", "grad_norm"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(value):
                raise RuntimeError(f"non-finite {name.replace('eval_', 'validation ')} at step {state.global_step}")


def loss_curve(log_history: list[dict], tokens_per_step: int) -> list[dict]:
    """One row per logged step from ``trainer.state.log_history``; None where not measured."""
    rows: dict[int, dict] = {}
    fields = {"loss": "train_loss", "eval_loss": "val_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}
    for entry in log_history:
        if not any(k in entry for k in fields):
            continue  # the end-of-training summary
        step = entry["step"]
        row = rows.setdefault(step, {c: None for c in CURVE_COLUMNS} | {"step": step, "tokens": step * tokens_per_step})
        for key, column in fields.items():
            if key in entry:
                row[column] = entry[key]
    return [rows[s] for s in sorted(rows)]


def write_curve(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CURVE_COLUMNS)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def build(ctx: StageContext) -> dict:
    s = ctx.settings
    torch.set_num_threads(ctx.threads)
    shards, init = ctx.inputs["shards"], ctx.inputs["init_checkpoint"]
    meta = json.loads((shards / META).read_text())
    tokenizer = AutoTokenizer.from_pretrained(init)
    model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
    if meta["vocab_size"] > model.config.vocab_size:
        raise UserError(f"{shards}: vocab_size {meta['vocab_size']} exceeds the model's {model.config.vocab_size} (a different tokenizer?)")
    if meta["seq_len"] > model.config.max_position_embeddings:
        raise UserError(f"{shards}: seq_len {meta['seq_len']} exceeds model.max_position_embeddings {model.config.max_position_embeddings}")

    train_data = PackedBlocks(shards / "train.bin", meta["seq_len"], meta["dtype"])
    val_data = PackedBlocks(shards / "val.bin", meta["seq_len"], meta["dtype"])
    per_step = s["batch_size"] * s["gradient_accumulation_steps"]
    if len(train_data) < per_step:
        raise UserError(
            f"{shards}: {len(train_data)} training blocks, fewer than one step's train.batch_size * "
            f"train.gradient_accumulation_steps = {per_step}"
        )
    val_subset = Subset(val_data, evenly_spaced(len(val_data), s["eval_batches"] * s["batch_size"]))
    bf16 = use_bf16(s["bf16"])
    checkpoints = ctx.work / "trainer"
    resume = last_checkpoint(checkpoints) if checkpoints.exists() else None
    start_step = int(resume.name.split("-")[-1]) if resume else 0

    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=s["max_steps"],
        per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=s["batch_size"],
        gradient_accumulation_steps=s["gradient_accumulation_steps"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": s["min_lr_ratio"]},
        warmup_steps=s["warmup_steps"],
        optim="adamw_torch_fused",
        weight_decay=s["weight_decay"],
        adam_beta1=s["adam_beta1"],
        adam_beta2=s["adam_beta2"],
        max_grad_norm=s["max_grad_norm"],
        seed=s["seed"],
        data_seed=s["seed"],
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="steps",
        eval_steps=s["eval_steps"],
        eval_on_start=resume is None,  # a checkpoint's log history already has it
        prediction_loss_only=True,
        logging_strategy="steps",
        logging_steps=s["logging_steps"],
        logging_first_step=True,
        logging_nan_inf_filter=False,  # the default drops non-finite losses from the logs
        save_strategy="steps",
        save_steps=s["eval_steps"],
        save_total_limit=2,
        report_to="none",  # TensorBoard through the callback below, writing into the artifact
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = FiniteLossTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=val_subset,
        processing_class=tokenizer,
        # Events go to the work folder first so that those of a crashed attempt are kept too.
        callbacks=[CurveCallback(), TensorBoardCallback(SummaryWriter(log_dir=str(ctx.work / "tensorboard")))],
    )
    if resume:
        log.info("resuming from %s", resume)
    log.info("training %s on %d blocks (bf16=%s), validating on %d blocks", init, len(train_data), bf16, len(val_subset))
    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.time() - started

    history = trainer.state.log_history
    tokens_per_step = per_step * meta["seq_len"]
    rows = loss_curve(history, tokens_per_step)
    val = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    model.save_pretrained(ctx.out)
    tokenizer.save_pretrained(ctx.out)
    write_curve(ctx.out / "loss_curve.csv", rows)
    shutil.copytree(ctx.work / "tensorboard", ctx.out / "tensorboard")

    # Throughput of this process's steps, leaving out the time spent validating.
    eval_seconds = sum(e["eval_runtime"] for e in history if "eval_runtime" in e and e["step"] >= start_step)
    step_seconds = max(result.metrics["train_runtime"] - eval_seconds, 1e-9)
    counts = {
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * tokens_per_step,
        "initial_val_loss": val[0] if val else None,
        "final_val_loss": val[-1] if val else None,
        "final_train_loss": next((r["train_loss"] for r in reversed(rows) if r["train_loss"] is not None), None),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(eval_seconds, 3),
        "tokens_per_second": round((trainer.state.global_step - start_step) * tokens_per_step / step_seconds),
        "bf16": bf16,
        "parameters": count_parameters(model),
        "resumed_from_step": start_step if resume else None,
    }
    log.info("trained_checkpoint: %s", counts)
    return counts
