"""Stage ``trained_checkpoint``: train the initial checkpoint on the packed shards with the HF Trainer.

What it does: AdamW (torch's fused kernel), weight decay (not on norms or biases), gradient
clipping, gradient accumulation, and one of two learning-rate schedules (``lr_scheduler``):

- ``cosine``: linear warmup, then cosine decay to ``learning_rate * min_lr_ratio``.
- ``wsd``: warmup-stable-decay (Hu et al. 2024, "MiniCPM", arXiv:2404.06395): linear warmup,
  a constant learning rate, then a decay over the last ``decay_fraction`` of the steps (10% as
  in MiniCPM; ``decay_steps`` sets it in steps) to ``learning_rate * min_lr_ratio``.

Continue, don't restart (wsd): the stable phase does not depend on the run's length, so its
checkpoints go to a cache beside the artifacts, ``<store>/_stable/<stable key>/step-<n>/``
(:class:`lmbuild.training.stable_cache.StableCache`; the key is the run's identity without its length,
:func:`lmbuild.training.schedule.stable_key`): the end of the stable phase and the kept steps in it. A
run with a longer stable phase (a raised ``max_steps``), or a decay branched from a kept step
(``max_steps`` S + ``decay_steps`` D), starts at the newest cached step at or before its own
decay start and ends bit-identical to a straight run on CPU. Cosine runs train from step 0:
their learning rate at every step depends on ``max_steps``.

Kept checkpoints: at each of ``keep_steps`` the model is saved (a forced Trainer save) and
ends up in the artifact as ``steps/<n>/``, a ``from_pretrained`` folder with
``checkpoint.json`` (step, tokens seen); the manifest lists them under ``kept``.

Loss spikes (``spike``): :class:`lmbuild.training.spikes.SpikeRule`, skip the batch or roll back to the newest
checkpoint and skip the data read since then (:class:`lmbuild.training.order.BlockOrder` ``skips``); the manifest
counts every skipped step and rollback under ``spikes``.

bf16 autocast over fp32 weights where the hardware has bf16 arithmetic (``bf16: auto``),
optional gradient checkpointing and ``torch.compile`` (``compile_mode``). On a GPU, where
installed: Liger Kernel's fused linear + cross-entropy, RMSNorm, SwiGLU and RoPE
(``kernels``), flash-attn (``attention``); elsewhere transformers' own layers and SDPA
(:mod:`lmbuild.training.accel` resolves the ``auto`` choices). Validation loss on a fixed subset
(``eval_batches * batch_size`` validation blocks spread evenly over the validation set) at
step 0, every ``eval_steps`` and at the end.

Data order: a permutation of the training blocks (every token shard as one dataset, or the
epoch that ``data.mixture`` draws from them: :mod:`lmbuild.tokens.blocks`) drawn from ``seed`` and
the epoch (:class:`lmbuild.training.order.BlockOrder`). Every checkpoint holds ``data_order.json`` (seed, epoch, blocks
consumed, a hash of the permutation); a resume checks that it draws the same permutation and
the Trainer skips the blocks already consumed, so a resumed run sees the same blocks in the
same order as one that never stopped. ``batch_size`` is global: with N processes each gets
``batch_size / N`` consecutive blocks of that order, so the data a step sees does not depend
on the number of GPUs.

Resume: Trainer checkpoints (model, optimizer, scheduler, RNG, data order) every
``save_steps`` go to the stage's work folder, outside the artifact, the last two kept. A rerun
after a crash or a kill resumes from the newest complete one (``trainer_state.json``, which the
Trainer writes last, marks it complete; a folder killed mid-save is skipped). A kill after the
final checkpoint (step ``max_steps``) and before the artifact leaves a finished run: the rerun
takes the model and log history from that checkpoint and trains nothing (:func:`lmbuild.training.checkpoints.finished`;
the Trainer, resumed there, would take one more step).

Non-finite values: a non-finite training loss stops training with a one-line error naming
the step and the value (on CPU before that step's update; on a GPU at the next log or save,
to keep the host from waiting on the device every step); a model with a non-finite parameter is never saved, neither as
a checkpoint nor as the artifact, so the newest checkpoint on disk stays a good one.

Logs: loss, learning rate, gradient norm, tokens seen and tokens per second (training time
only: validation and checkpoint saves are left out) every ``logging_steps``, as data
(``loss_curve.csv``) and as TensorBoard events (``tensorboard/``), both in the artifact.

More than one GPU: ``build(ctx)`` with ``ctx.gpus`` = N > 1 (the rule's ``gpu`` resource,
which the runner reads) runs the same training under ``torchrun --standalone --nproc_per_node N`` (DDP,
or FSDP with ``parallel: fsdp``), launched from an argv list; ``nproc=1`` never touches
torch.distributed. More than one node (``ctx.nodes`` > 1, SLURM only): one torchrun per node
through ``srun``, with a c10d rendezvous on the job's first node (:mod:`lmbuild.training.launch`).

What it does NOT do: tensor/pipeline parallelism, or mixed fp8; multi-node outside SLURM; the
artifact holds fp32 models only (the final one and the kept steps', no optimizer state); the
stable cache is not used under FSDP (sharded checkpoints) and is tested bit-exact on one CPU
process only.

Its parts, each in its module under lmbuild/training/: the Trainer and its one setup, shared with
the encoder (trainer.py), the steps around it (run.py), the data order (order.py), checkpoints on
disk (checkpoints.py), kept steps (kept.py), the stable cache (stable_cache.py), loss spikes
(spikes.py), the loss curve (curve.py), torchrun and srun (launch.py). :func:`train` reads top to
bottom: inputs and checks, setup, the training loop with its rollbacks, the artifact.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, default_data_collator

from lmbuild.store.runner import StageContext
from lmbuild.tokens.blocks import META, tokens_per_source
from lmbuild.training import accel
from lmbuild.training.checkpoints import finished, last_checkpoint
from lmbuild.training.kept import KeptSteps
from lmbuild.training.launch import launch, worker
from lmbuild.training.run import check_fits, check_model, fit, read_blocks, run_counts, save_logs, save_model
from lmbuild.training.schedule import wsd_decay_start
from lmbuild.training.spikes import RollBack, Rollbacks
from lmbuild.training.stable_cache import StableCache, choose_resume, stable_key
from lmbuild.training.trainer import make_trainer, training_arguments

log = logging.getLogger(__name__)


def train(s: dict, inputs: dict[str, Path], out: Path, work: Path, threads: int, world: int = 1, store: Path | None = None, lineage: dict | None = None) -> dict | None:
    """Train in this process (one rank of ``world``); rank 0 writes the artifact into ``out``.

    ``store``: the artifact store, whose stable cache a wsd run reads and writes (None: none).
    Returns the counts on rank 0, None on the others.
    """
    # Inputs and their checks.
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (GPU only; no effect on CPU)
    shards, init = inputs["shards"], inputs["init_checkpoint"]
    meta = json.loads((shards / META).read_text())
    tokenizer = AutoTokenizer.from_pretrained(init)
    kernels, attention = accel.kernels(s["kernels"]), accel.attention(s["attention"])
    check_fits(meta, AutoConfig.from_pretrained(init), shards)
    data = read_blocks(s, shards, meta)

    # Set up: precision and processes, kept steps and the stable cache, spikes, TensorBoard.
    bf16 = accel.use_bf16(s["bf16"])
    checkpoints = work / "trainer"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    # FSDP under torchrun, also with one process (its overhead on one GPU is measurable).
    fsdp = s["parallel"] == "fsdp" and (world > 1 or "LOCAL_RANK" in os.environ)
    keep = sorted(s.get("keep_steps") or [])
    spike = s.get("spike") or {"action": "none"}
    # The stable cache: wsd only (a cosine schedule depends on the length at every step), and
    # not under FSDP, whose checkpoints are sharded per process.
    wsd = s["lr_scheduler"] == "wsd"
    decay_start = wsd_decay_start(s) if wsd else 0
    cache = StableCache(store, stable_key(s, inputs, lineage or {})) if wsd and store is not None and not fsdp else None
    kept = KeptSteps(work, keep, cache, decay_start, data.tokens_per_step)  # runs after each checkpoint
    rollbacks = Rollbacks(work, spike)
    tensorboard = SummaryWriter(log_dir=str(work / "tensorboard")) if rank0 else None

    # Train from the newest checkpoint (or stable-cache entry); a spike's rollback trains again
    # from the newest one before it, without the data read since then.
    first_start = None
    while True:
        start = choose_resume(last_checkpoint(checkpoints), cache, decay_start, keep, work)
        first_start = start.step if first_start is None else first_start
        if start.path and not start.from_cache and rank0:
            kept(start.path, start.step)  # a kill between a checkpoint and its kept copy or cache entry: make them now
        done = None if start.from_cache else finished(start.path, s["max_steps"])
        model = AutoModelForCausalLM.from_pretrained(start.path if done is not None else init, dtype=torch.float32, attn_implementation=attention)
        args = training_arguments(s, checkpoints, bf16=bf16, world=world, resume=start.path is not None, fsdp=fsdp, liger=kernels == "liger")
        # Blocks are equal-length: stack them. The Trainer's default with a tokenizer pads each batch
        # through Python lists (76 ms for 16 x 2048 tokens here) and adds an all-ones attention mask.
        trainer = make_trainer(model, args, data, tokenizer, default_data_collator, resume=start.path, seed=s["seed"], tensorboard=tensorboard,
                               save_at=kept.save_at, note=" (the stable-phase cache)" if start.from_cache else "",
                               skips=rollbacks.skips(start.path), spike=spike, after_save=kept)
        log.info("training %s on %d blocks (bf16=%s, kernels=%s, attention=%s, %d process(es)), validating on %d blocks",
                 init, len(data.train), bf16, kernels, attention, world, len(data.val))
        started = time.time()
        try:
            runtime = fit(trainer, start.path, done)
            break
        except RollBack as rb:
            back = choose_resume(last_checkpoint(checkpoints), cache, decay_start, keep, work)
            rollbacks.record(rb, back.step, data.per_step)
            del trainer, model
    train_seconds = time.time() - started
    check_model(trainer)

    # The artifact: model, curve and events (rank 0), kept steps, counts.
    if not save_model(trainer, tokenizer, out, sharded=fsdp and done is None):
        return None
    rows = save_logs(trainer, out, work, data.tokens_per_step, tensorboard)
    kept_steps = kept.export(out)
    steps = trainer.state.global_step
    counts = {
        **run_counts(trainer, rows, data.tokens_per_step, start_step=start.step, runtime=runtime, train_seconds=train_seconds),
        "bf16": bf16,
        "kernels": kernels,
        "attention": attention,
        "processes": world,
        "nodes": world // int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        "parallel": "fsdp" if fsdp else ("ddp" if world > 1 else None),
        "resumed_from_step": first_start or None,
        "steps_trained": steps - start.step,  # this job's last attempt: a rollback's discarded steps not counted
        "stable": kept.stable_counts(start.step if start.from_cache else None),
        "kept": kept_steps,
        "spikes": rollbacks.counts(trainer.spike),
        "tokens_per_source": tokens_per_source(data.train, trainer.order, steps * data.per_step),
    }
    log.info("trained_checkpoint: %s", counts)
    return counts


def build(ctx: StageContext, nproc: int | None = None) -> dict:
    """Train in this process, or under torchrun when the job has more than one GPU.

    ``nproc`` defaults to ``ctx.gpus`` (the rule's ``gpu`` resource); tests pass it to run
    several CPU processes (gloo)."""
    nproc = max(1, ctx.gpus) if nproc is None else nproc
    if nproc > 1 or ctx.nodes > 1:
        return launch(ctx, nproc, ctx.nodes)
    return train(ctx.settings, ctx.inputs, ctx.out, ctx.work, ctx.threads, store=ctx.store, lineage=ctx.lineage)


if __name__ == "__main__":  # a torchrun worker (lmbuild.training.launch)
    sys.exit(worker(sys.argv[1], train))
