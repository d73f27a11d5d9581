"""Training an encoder (``model.objective: masked``): stage ``trained_checkpoint`` for a
ModernBERT masked LM (:mod:`lmbuild.models.modernbert`), run by its own entry
(``scripts/trained_checkpoint_masked.py``).

Training (``train``): the causal stage's Trainer and its one setup
(:func:`lmbuild.training.trainer.make_trainer`, :mod:`lmbuild.training.run`: data order,
checkpoints and resume, divergence checks, loss curve, TensorBoard) on the same packed blocks,
with ``DataCollatorForLanguageModeling`` (``train.mlm_probability``, BERT's 80/10/10
replacement, seeded by ``train.seed``) instead of next-token labels. The validation loss is the masked-LM
loss on a fixed masking of the validation blocks (each block masked from ``seed`` and its
index), so the curve's points are comparable.

What this module does not do: Liger kernels, flash-attention, or more than one training
process (DDP/FSDP are the causal path's). A resumed run continues the data order exactly, but
draws its masks afresh from the seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from lmbuild.errors import UserError
from lmbuild.models.modernbert import MODEL_TYPE
from lmbuild.store.runner import StageContext
from lmbuild.tokens.blocks import META
from lmbuild.training.accel import use_bf16
from lmbuild.training.checkpoints import checkpoint_step, finished, last_checkpoint
from lmbuild.training.run import check_fits, check_model, fit, read_blocks, run_counts, save_logs, save_model
from lmbuild.training.trainer import make_trainer, training_arguments

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
    check_fits(meta, model.config, shards)

    data = read_blocks(s, shards, meta)
    data = dataclasses.replace(data, train=InputIds(data.train), val=FixedMasking(data.val, tokenizer, s["mlm_probability"], s["seed"]))
    bf16 = use_bf16(s["bf16"])
    start_step = checkpoint_step(resume) if resume else 0
    args = training_arguments(s, checkpoints, bf16=bf16, world=1, resume=resume is not None)
    tensorboard = SummaryWriter(log_dir=str(work / "tensorboard"))
    trainer = make_trainer(model, args, data, tokenizer, mlm_collator(tokenizer, s["mlm_probability"], s["seed"]), resume=resume, seed=s["seed"], tensorboard=tensorboard)
    log.info("training encoder %s on %d blocks (bf16=%s, mlm_probability=%g), validating on %d blocks", init, len(data.train), bf16, s["mlm_probability"], len(data.val))
    started = time.time()
    runtime = fit(trainer, resume, done)
    train_seconds = time.time() - started
    check_model(trainer)
    save_model(trainer, tokenizer, out)
    rows = save_logs(trainer, out, work, data.tokens_per_step, tensorboard)
    counts = {
        "objective": "masked",
        "mlm_probability": s["mlm_probability"],
        **run_counts(trainer, rows, data.tokens_per_step, start_step=start_step, runtime=runtime, train_seconds=train_seconds),
        "loss": "masked-LM cross-entropy over the masked positions (nats per masked token)",
        "bf16": bf16,
        "kernels": "torch",
        "attention": "sdpa",
        "processes": 1,
        "parallel": None,
        "resumed_from_step": start_step if resume else None,
    }
    log.info("trained_checkpoint (encoder): %s", counts)
    return counts


def build_train(ctx: StageContext) -> dict:
    """Stage ``trained_checkpoint`` for an encoder (one process)."""
    if ctx.gpus > 1:
        raise UserError(f"model.objective masked trains in one process; resources.trained_checkpoint.gpu is {ctx.gpus} (set it to 0 or 1)")
    return train(ctx.settings, ctx.inputs, ctx.out, ctx.work, ctx.threads)
