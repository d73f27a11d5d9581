"""The steps of a training run that both objectives take, around :func:`lmbuild.training.trainer.make_trainer`.

The data (:func:`read_blocks`: training blocks, a fixed validation subset, the blocks one step
reads), the checks of the inputs, training or taking a finished checkpoint (:func:`fit`), the
model's last check (:func:`check_model`), writing the model, curve and TensorBoard events into the
artifact, and the counts every run reports (:func:`run_counts`).

What this module does not do: choose a checkpoint to resume from, keep steps, or launch
processes (the causal stage's own parts: :mod:`lmbuild.training.trained_checkpoint`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset
from transformers import TrainerState

from lmbuild.errors import UserError
from lmbuild.models.common import count_parameters
from lmbuild.tokens.blocks import ShardedBlocks, training_blocks
from lmbuild.training.curve import loss_curve, write_curve
from lmbuild.training.spikes import TrainingDiverged, non_finite_parameter
from lmbuild.training.trainer import LMTrainer


def evenly_spaced(n: int, k: int) -> list[int]:
    """``min(n, k)`` distinct indices spread evenly over ``range(n)``."""
    k = min(n, k)
    return [i * n // k for i in range(k)]


def check_one_step(train_data, shards: Path, s: dict) -> int:
    """Blocks one optimizer step reads (``batch_size * gradient_accumulation_steps``); a UserError
    where an epoch has fewer, naming ``data.mixture`` when the mixture chose the epoch's blocks."""
    per_step = s["batch_size"] * s["gradient_accumulation_steps"]
    if len(train_data) >= per_step:
        return per_step
    need = f"one step needs train.batch_size * train.gradient_accumulation_steps = {per_step}"
    if s.get("mixture"):
        raise UserError(f"config: data.mixture: gives {len(train_data)} training blocks per epoch, but {need} (raise the mixture's weights, tokens or epochs)")
    raise UserError(f"{shards}: {len(train_data)} training blocks, fewer than {need}")


def check_fits(meta: dict, config, shards: Path) -> None:
    """The shards' vocabulary and block length must fit the model (``config``)."""
    if meta["vocab_size"] > config.vocab_size:
        raise UserError(f"{shards}: vocab_size {meta['vocab_size']} exceeds the model's {config.vocab_size} (a different tokenizer?)")
    if meta["seq_len"] > config.max_position_embeddings:
        raise UserError(f"{shards}: seq_len {meta['seq_len']} exceeds model.max_position_embeddings {config.max_position_embeddings}")


@dataclass
class Blocks:
    """What a run reads: the training blocks (an epoch's), the validation subset, and the blocks
    and tokens of one optimizer step."""

    train: Dataset
    val: Dataset
    per_step: int
    tokens_per_step: int


def read_blocks(s: dict, shards: Path, meta: dict) -> Blocks:
    """Every token shard as one dataset (data.mixture, ``s["mixture"]`` when set, picks the blocks
    of an epoch), and ``eval_batches * batch_size`` validation blocks spread evenly over the
    validation set."""
    train = training_blocks(shards, s.get("mixture") or {}, s["seed"])
    val = ShardedBlocks(shards, "val")
    per_step = check_one_step(train, shards, s)
    return Blocks(train, Subset(val, evenly_spaced(len(val), s["eval_batches"] * s["batch_size"])), per_step, per_step * meta["seq_len"])


def fit(trainer: LMTrainer, resume: Path | None, done: TrainerState | None) -> float:
    """Train from ``resume`` (None: from the start); the seconds the Trainer's loop took.

    ``done``: the state of a finished checkpoint (:func:`lmbuild.training.checkpoints.finished`),
    taken as it is: nothing left to train."""
    if done is not None:
        trainer.state = done
        return 0.0
    return trainer.train(resume_from_checkpoint=str(resume) if resume else None).metrics["train_runtime"]


def check_model(trainer: LMTrainer) -> None:
    """Raise on a non-finite loss not yet checked, or a non-finite parameter: such a model is never saved."""
    trainer.check_losses()
    bad = non_finite_parameter(trainer.model)
    if bad:
        raise TrainingDiverged(f"non-finite parameter {bad} after step {trainer.state.global_step}: the model is not saved")


def save_model(trainer: LMTrainer, tokenizer, out: Path, sharded: bool = False) -> bool:
    """The model and tokenizer into ``out`` (rank 0 writes); whether this process is rank 0.

    ``sharded``: an FSDP model that must be gathered from every process first."""
    if sharded:
        trainer.save_model(str(out))  # gathers the full state dict; rank 0 writes
    if not trainer.is_world_process_zero():
        return False
    if not sharded:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(out)
        tokenizer.save_pretrained(out)
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle: never in an artifact
    return True


def save_logs(trainer: LMTrainer, out: Path, work: Path, tokens_per_step: int, tensorboard=None) -> list[dict]:
    """``loss_curve.csv`` and the TensorBoard events (written to ``work`` first) into ``out``; the curve's rows."""
    rows = loss_curve(trainer.state.log_history, tokens_per_step)
    write_curve(out / "loss_curve.csv", rows)
    if tensorboard:
        tensorboard.close()
    shutil.copytree(work / "tensorboard", out / "tensorboard")
    return rows


def run_counts(trainer: LMTrainer, rows: list[dict], tokens_per_step: int, *, start_step: int, runtime: float, train_seconds: float) -> dict:
    """The counts every run reports: steps, tokens, losses, time, throughput and parameters.

    Throughput is this process's, over the steps it trained (from ``start_step``), leaving out
    the time spent validating."""
    steps = trainer.state.global_step
    val = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    return {
        "steps": steps,
        "tokens_seen": steps * tokens_per_step,
        "initial_val_loss": val[0] if val else None,
        "final_val_loss": val[-1] if val else None,
        "final_train_loss": next((r["train_loss"] for r in reversed(rows) if r["train_loss"] is not None), None),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(trainer.eval_seconds, 3),
        "tokens_per_second": round((steps - start_step) * tokens_per_step / max(runtime - trainer.eval_seconds, 1e-9)),
        "parameters": count_parameters(trainer.accelerator.unwrap_model(trainer.model)),
    }
