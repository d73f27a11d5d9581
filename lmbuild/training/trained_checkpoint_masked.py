"""Training an encoder (``model.objective: masked``): stage ``trained_checkpoint`` for a
ModernBERT masked LM (:mod:`lmbuild.models.modernbert`), run by its own entry
(``scripts/trained_checkpoint_masked.py``).

Training (``train``): the HF Trainer with ``lmbuild.training.trained_checkpoint``'s pieces (data order, checkpoints
and resume, divergence checks, loss curve, TensorBoard) on the same packed blocks, with
``DataCollatorForLanguageModeling`` (``train.mlm_probability``, BERT's 80/10/10 replacement,
seeded by ``train.seed``) instead of next-token labels. The validation loss is the masked-LM
loss on a fixed masking of the validation blocks (each block masked from ``seed`` and its
index), so the curve's points are comparable.

What this module does not do: Liger kernels, flash-attention, or more than one training
process (DDP/FSDP are the causal path's). A resumed run continues the data order exactly, but
draws its masks afresh from the seed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling
from transformers.integrations import TensorBoardCallback

from lmbuild.errors import UserError
from lmbuild.models.common import count_parameters
from lmbuild.models.modernbert import MODEL_TYPE
from lmbuild.store.runner import StageContext
from lmbuild.tokens.blocks import META, ShardedBlocks, training_blocks
from lmbuild.training.accel import use_bf16
from lmbuild.training.trained_checkpoint import (
    CurveCallback,
    LMTrainer,
    TrainingDiverged,
    check_one_step,
    check_resume,
    checkpoint_step,
    evenly_spaced,
    finished,
    last_checkpoint,
    loss_curve,
    non_finite_parameter,
    training_arguments,
    write_curve,
)

log = logging.getLogger(__name__)


class InputIds(Dataset):
    """Packed blocks as ``{"input_ids"}`` only: the collator draws the masked-LM labels."""

    def __init__(self, blocks: Dataset):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i]["input_ids"]}


class FixedMasking(Dataset):
    """Blocks masked once and for all: block i's masks are drawn from ``seed`` and i, so every
    validation pass scores the same positions."""

    def __init__(self, blocks: Dataset, tokenizer, probability: float, seed: int):
        self.blocks, self.tokenizer, self.probability, self.seed = blocks, tokenizer, probability, seed

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.probability, seed=self.seed * 1_000_003 + i)
        batch = collator([self.blocks[i]["input_ids"]])
        return {"input_ids": batch["input_ids"][0], "labels": batch["labels"][0]}


def mlm_collator(tokenizer, probability: float, seed: int):
    """Training batches are masked here (seeded); validation items arrive masked (FixedMasking)."""
    draw = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=seed)

    def collate(examples: list[dict]) -> dict:
        if "labels" in examples[0]:
            return {k: torch.stack([e[k] for e in examples]) for k in ("input_ids", "labels")}
        # A list of equal-length tensors is stacked, not padded through the tokenizer.
        return draw([e["input_ids"] for e in examples])

    return collate


def train(s: dict, inputs: dict[str, Path], out: Path, work: Path, threads: int) -> dict:
    """Train the encoder in this process; write the artifact into ``out``; return the counts."""
    torch.set_num_threads(threads)
    shards, init = inputs["shards"], inputs["init_checkpoint"]
    meta = json.loads((shards / META).read_text())
    tokenizer = AutoTokenizer.from_pretrained(init)
    if tokenizer.mask_token is None:
        raise UserError(f"{init}: the tokenizer has no mask token (not an encoder's init_checkpoint)")
    checkpoints = work / "trainer"
    resume = last_checkpoint(checkpoints)
    done = finished(resume, s["max_steps"])  # killed after its final checkpoint: nothing left to train
    model = AutoModelForMaskedLM.from_pretrained(resume if done is not None else init, dtype=torch.float32, attn_implementation="sdpa")
    if model.config.model_type != MODEL_TYPE:
        raise UserError(f"{init}: model_type {model.config.model_type!r}, not an encoder ({MODEL_TYPE})")
    if meta["vocab_size"] > model.config.vocab_size:
        raise UserError(f"{shards}: vocab_size {meta['vocab_size']} exceeds the model's {model.config.vocab_size} (a different tokenizer?)")
    if meta["seq_len"] > model.config.max_position_embeddings:
        raise UserError(f"{shards}: seq_len {meta['seq_len']} exceeds model.max_position_embeddings {model.config.max_position_embeddings}")

    train_data = InputIds(training_blocks(shards, s.get("mixture") or {}, s["seed"]))
    val_data = ShardedBlocks(shards, "val")
    per_step = check_one_step(train_data, shards, s)
    val_subset = FixedMasking(Subset(val_data, evenly_spaced(len(val_data), s["eval_batches"] * s["batch_size"])), tokenizer, s["mlm_probability"], s["seed"])
    bf16 = use_bf16(s["bf16"])
    start_step = checkpoint_step(resume) if resume else 0
    args = training_arguments(s, checkpoints, bf16=bf16, world=1, resume=resume is not None)
    tokens_per_step = per_step * meta["seq_len"]
    trainer = LMTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=val_subset,
        processing_class=tokenizer,
        data_collator=mlm_collator(tokenizer, s["mlm_probability"], s["seed"]),
        tokens_per_step=tokens_per_step,
        seed=s["seed"],
        callbacks=[CurveCallback(), TensorBoardCallback(SummaryWriter(log_dir=str(work / "tensorboard")))],
    )
    if resume:
        check_resume(resume, trainer.order)
        log.info("resuming from %s", resume)
    log.info("training encoder %s on %d blocks (bf16=%s, mlm_probability=%g), validating on %d blocks", init, len(train_data), bf16, s["mlm_probability"], len(val_subset))
    started = time.time()
    if done is not None:
        trainer.state, runtime = done, 0.0
    else:
        runtime = trainer.train(resume_from_checkpoint=str(resume) if resume else None).metrics["train_runtime"]
    train_seconds = time.time() - started
    trainer.check_losses()
    bad = non_finite_parameter(trainer.model)
    if bad:
        raise TrainingDiverged(f"non-finite parameter {bad} after step {trainer.state.global_step}: the model is not saved")
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle: never in an artifact
    rows = loss_curve(trainer.state.log_history, tokens_per_step)
    val = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    write_curve(out / "loss_curve.csv", rows)
    shutil.copytree(work / "tensorboard", out / "tensorboard")
    step_seconds = max(runtime - trainer.eval_seconds, 1e-9)
    counts = {
        "objective": "masked",
        "mlm_probability": s["mlm_probability"],
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * tokens_per_step,
        "initial_val_loss": val[0] if val else None,
        "final_val_loss": val[-1] if val else None,
        "final_train_loss": next((r["train_loss"] for r in reversed(rows) if r["train_loss"] is not None), None),
        "loss": "masked-LM cross-entropy over the masked positions (nats per masked token)",
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(trainer.eval_seconds, 3),
        "tokens_per_second": round((trainer.state.global_step - start_step) * tokens_per_step / step_seconds),
        "bf16": bf16,
        "kernels": "torch",
        "attention": "sdpa",
        "processes": 1,
        "parallel": None,
        "parameters": count_parameters(trainer.model),
        "resumed_from_step": start_step if resume else None,
    }
    log.info("trained_checkpoint (encoder): %s", counts)
    return counts


def build_train(ctx: StageContext) -> dict:
    """Stage ``trained_checkpoint`` for an encoder (one process)."""
    if ctx.gpus > 1:
        raise UserError(f"model.objective masked trains in one process; resources.trained_checkpoint.gpu is {ctx.gpus} (set it to 0 or 1)")
    return train(ctx.settings, ctx.inputs, ctx.out, ctx.work, ctx.threads)
