"""Stage ``trained_checkpoint``: train the initial checkpoint on the packed shards with the HF Trainer.

What it does: AdamW (torch's fused kernel), weight decay (not on norms or biases), gradient
clipping, gradient accumulation, and one of two learning-rate schedules (``lr_scheduler``):

- ``cosine``: linear warmup, then cosine decay to ``learning_rate * min_lr_ratio``.
- ``wsd``: warmup-stable-decay (Hu et al. 2024, "MiniCPM", arXiv:2404.06395): linear warmup,
  a constant learning rate, then a decay over the last ``decay_fraction`` of the steps (10% as
  in MiniCPM; ``decay_steps`` sets it in steps) to ``learning_rate * min_lr_ratio``.

Continue, don't restart (wsd): the stable phase does not depend on the run's length, so its
checkpoints go to a cache beside the artifacts, ``<store>/_stable/<stable key>/step-<n>/``
(:class:`StableCache`; the key is the run's identity without its length,
:func:`lmbuild.training.schedule.stable_key`): the end of the stable phase and the kept steps in it. A
run with a longer stable phase (a raised ``max_steps``), or a decay branched from a kept step
(``max_steps`` S + ``decay_steps`` D), starts at the newest cached step at or before its own
decay start and ends bit-identical to a straight run on CPU. Cosine runs train from step 0:
their learning rate at every step depends on ``max_steps``.

Kept checkpoints: at each of ``keep_steps`` the model is saved (a forced Trainer save) and
ends up in the artifact as ``steps/<n>/``, a ``from_pretrained`` folder with
``checkpoint.json`` (step, tokens seen); the manifest lists them under ``kept``.

Loss spikes (``spike``): :class:`SpikeRule`, skip the batch or roll back to the newest
checkpoint and skip the data read since then (:class:`BlockOrder` ``skips``); the manifest
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
the epoch (:class:`BlockOrder`). Every checkpoint holds ``data_order.json`` (seed, epoch, blocks
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
takes the model and log history from that checkpoint and trains nothing (:func:`finished`;
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
through ``srun``, with a c10d rendezvous on the job's first node (:func:`launch`).

What it does NOT do: tensor/pipeline parallelism, or mixed fp8; multi-node outside SLURM; the
artifact holds fp32 models only (the final one and the kept steps', no optimizer state); the
stable cache is not used under FSDP (sharded checkpoints) and is tested bit-exact on one CPU
process only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
import types
from collections import deque
from pathlib import Path

import torch
from torch.utils.data import Sampler, Subset
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainerState, TrainingArguments, default_data_collator
from transformers.integrations import TensorBoardCallback

from lmbuild.errors import UserError
from lmbuild.models.common import count_parameters
from lmbuild.store.runner import StageContext
from lmbuild.tokens.blocks import META, ShardedBlocks, tokens_per_source, training_blocks
from lmbuild.training import accel
from lmbuild.training import schedule
from lmbuild.training.accel import bf16_available, use_bf16  # noqa: F401 (the bench and tests read them here)
from lmbuild.training.schedule import wsd_decay_start, wsd_decay_steps

log = logging.getLogger(__name__)

CURVE_COLUMNS = ["step", "tokens", "train_loss", "val_loss", "learning_rate", "grad_norm", "tokens_per_second"]
DATA_ORDER = "data_order.json"
SPIKE_STATE = "spike_state.json"  # the spike rule's running mean, in every checkpoint
STABLE_MARK = "stable.json"  # written last into a stable-cache entry: marks it complete
KEPT_MARK = "checkpoint.json"  # step and tokens seen of a kept checkpoint (steps/<n>/)
# A Trainer checkpoint's files that are not the model: what a kept (from_pretrained) folder leaves out.
TRAINER_ONLY = {"trainer_state.json", DATA_ORDER, SPIKE_STATE, STABLE_MARK}
SCHEDULERS = {"cosine": "cosine_with_min_lr", "wsd": "warmup_stable_decay"}


class TrainingDiverged(UserError):
    """A non-finite loss or model: usually a learning rate too high for the model or data."""


class RollBack(Exception):
    """Raised by the spike rule (action rollback) at ``step``, before that step's update."""

    def __init__(self, step: int, loss: float, mean: float):
        super().__init__(f"loss spike at step {step}: {loss:.4g} against a running mean of {mean:.4g}")
        self.step, self.loss, self.mean = step, loss, mean


def evenly_spaced(n: int, k: int) -> list[int]:
    """``min(n, k)`` distinct indices spread evenly over ``range(n)``."""
    k = min(n, k)
    return [i * n // k for i in range(k)]


def checkpoint_step(path: Path) -> int | None:
    tail = path.name.split("-")[-1]
    return int(tail) if path.name.startswith("checkpoint-") and tail.isdigit() else None


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


def finished(resume: Path | None, max_steps: int) -> TrainerState | None:
    """The Trainer state (step, log history) of ``resume`` (a complete checkpoint) if it is at
    ``max_steps``: the run finished and was killed before its artifact was written; else None.

    Such a checkpoint must not go to ``Trainer.train``: its loop takes a step before it checks
    ``max_steps`` (transformers 5.x ``_run_epoch``), so wherever ``max_steps`` is not a multiple of
    the epoch's steps the run would end at ``max_steps + 1``. The caller loads the model from the
    checkpoint instead and takes this state.
    """
    if resume is None:
        return None
    state = TrainerState.load_from_json(str(resume / "trainer_state.json"))
    return state if state.global_step >= max_steps else None


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint-N in ``folder`` that is complete.

    Complete: ``trainer_state.json`` (the Trainer writes it after the model, optimizer,
    scheduler and RNG files) and our ``data_order.json`` exist. A folder killed mid-save lacks
    the first and is skipped.
    """
    if not folder.is_dir():
        return None
    done = [p for p in folder.iterdir() if checkpoint_step(p) is not None and (p / "trainer_state.json").is_file() and (p / DATA_ORDER).is_file()]
    return max(done, key=checkpoint_step, default=None)


class BlockOrder(Sampler[int]):
    """The training blocks in a seeded random order, a fresh permutation each epoch.

    The permutation is a function of (seed, epoch, number of blocks) alone, so it can be
    recorded in a checkpoint (:meth:`state`) and checked on resume. It does NOT shard: under
    DDP accelerate splits each global batch of this order between the processes.

    ``skips``: ``(at, length)`` pairs from spike rollbacks: from position ``at`` of the stream
    the Trainer reads (epochs laid end to end), the order jumps ``length`` blocks ahead, so the
    data window that caused a spike is never read again. Each epoch still yields ``n`` blocks,
    so the Trainer's step and epoch counting is unchanged.
    """

    def __init__(self, n: int, seed: int, skips=()):
        self.n, self.seed, self.epoch = n, seed, 0
        self.skips = sorted({(int(a), int(b)) for a, b in skips})

    def source(self, position: int) -> int:
        """Where stream ``position`` reads in the unskipped order."""
        return position + sum(length for at, length in self.skips if at <= position)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + (self.epoch if epoch is None else epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        if not self.skips:
            return iter(self.permutation().tolist())
        perms: dict[int, list[int]] = {}

        def block(position: int) -> int:
            q = self.source(position)
            if q // self.n not in perms:
                perms[q // self.n] = self.permutation(q // self.n).tolist()
            return perms[q // self.n][q % self.n]

        return (block(self.epoch * self.n + i) for i in range(self.n))

    def __len__(self) -> int:
        return self.n

    def state(self, epoch: int, blocks_consumed: int) -> dict:
        perm = self.permutation(epoch)
        return {
            "sampler": "torch.randperm(blocks, generator=manual_seed(seed * 1000003 + epoch))",
            "seed": self.seed,
            "epoch": epoch,
            "blocks": self.n,
            "blocks_consumed": blocks_consumed,
            "permutation_sha256": hashlib.sha256(perm.numpy().tobytes()).hexdigest(),
            "first_blocks": perm[:8].tolist(),
            "skips": [list(w) for w in self.skips],
        }


def non_finite_parameter(model: torch.nn.Module) -> str | None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p.detach()).all():
            return name
    return None


class SpikeRule:
    """Loss spikes (``train.spike``): a step whose loss is above ``factor`` times the mean of the
    last ``window`` accepted step losses, ``patience`` steps in a row, is acted on.

    - ``skip``: that batch makes no optimizer update (OLMo 2, Team OLMo 2024, arXiv:2501.00656,
      skips such steps in OLMo-core's SkipStepAdamW: a rolling interval of 128 steps, no
      decision before half of it is filled; this rule takes both).
    - ``rollback``: training goes back to the last checkpoint and skips the data between it and
      the spike (PaLM, Chowdhery et al. 2022, arXiv:2204.02311, sec. 5.1: "restart from a
      checkpoint roughly 100 steps before the spike, and skip roughly 200-500 data batches").

    Neither paper gives a ratio to the mean (OLMo-core uses mean + 6 standard deviations);
    ``factor`` 2 is far above the step-to-step noise of a training loss. A spike's loss does not
    enter the mean. The rule reads the loss on the host every step: on a GPU that is one
    synchronisation per step, paid only when the rule is on. It does NOT look at gradient norms.
    """

    def __init__(self, settings: dict):
        self.action = settings["action"]
        self.factor, self.window, self.patience = settings["factor"], settings["window"], settings["patience"]
        self.history: deque[float] = deque(maxlen=self.window)
        self.run = 0  # spiking steps in a row
        self.skipped: list[int] = []

    def mean(self) -> float | None:
        return sum(self.history) / len(self.history) if len(self.history) >= max(1, self.window // 2) else None

    def observe(self, loss: float) -> bool:
        """Whether this step's loss calls for the action."""
        mean = self.mean()
        if mean is not None and loss > self.factor * mean:
            self.run += 1
            return self.run >= self.patience
        self.run = 0
        self.history.append(loss)
        return False

    def state(self) -> dict:
        return {"history": list(self.history), "run": self.run, "skipped": list(self.skipped)}

    def load(self, state: dict) -> None:
        self.history = deque(state["history"], maxlen=self.window)
        self.run, self.skipped = state["run"], list(state["skipped"])


class LMTrainer(Trainer):
    """The HF Trainer with our data order, divergence checks and throughput logging.

    - ``training_step`` raises :class:`TrainingDiverged` on the first non-finite loss, before
      the optimizer step.
    - ``_save_checkpoint`` refuses a model with a non-finite parameter and records the data
      order in the checkpoint.
    - ``log`` adds ``tokens_seen`` and ``tokens_per_second`` (wall time since the last log,
      less the time spent validating and saving).
    - the spike rule (:class:`SpikeRule`) sees each step's loss before its update; ``skip``
      drops the update in the optimizer's ``step``, ``rollback`` raises :class:`RollBack`.
    - ``after_save(folder, step)`` runs after each complete checkpoint (kept steps, stable cache).
    """

    def __init__(self, *args, tokens_per_step: int, seed: int, skips=(), spike: dict | None = None, after_save=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_per_step = tokens_per_step
        self.order = BlockOrder(len(self.train_dataset), seed, skips)
        self.spike = SpikeRule(spike) if spike and spike["action"] != "none" else None
        self._step_losses: list[torch.Tensor] = []  # this optimizer step's micro-batch losses
        self._skip_update = False
        self.after_save = after_save
        self._mark: tuple[float, int] | None = None  # (time, step) of the last throughput figure; set at this process's first step
        self._excluded = 0.0  # seconds spent validating or saving since then
        self.eval_seconds = 0.0  # this process's validation time
        self._losses: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet checked for finiteness

    def _get_train_sampler(self, train_dataset=None):
        return self.order

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._mark is None:  # after loading, data skipping and validation on start; a resume's step count
            self._mark, self._excluded = (time.perf_counter(), self.state.global_step), 0.0
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._losses.append((self.state.global_step + 1, loss.detach()))
        if loss.device.type == "cpu" or self.spike:
            self.check_losses()  # free on CPU: before this step's optimizer update
        if self.spike:
            self._step_losses.append(loss.detach())
            if len(self._step_losses) == self.args.gradient_accumulation_steps:
                total = torch.stack(self._step_losses).float().sum()
                if self.args.world_size > 1:  # one decision for all processes: the mean of their losses
                    torch.distributed.all_reduce(total)
                    total /= self.args.world_size
                self.spike_check(float(total))
        return loss

    def spike_check(self, loss: float) -> None:
        """The spike rule on this step's loss (summed over its micro-batches)."""
        self._step_losses.clear()
        step, mean = self.state.global_step + 1, self.spike.mean()
        if not self.spike.observe(loss):
            return
        if self.spike.action == "rollback":
            raise RollBack(step, loss, mean)
        log.warning("loss spike at step %d: %.4g against a running mean of %.4g; the batch is skipped", step, loss, mean)
        self.spike.skipped.append(step)
        self._skip_update = True

    def create_optimizer(self, model=None):
        """The Trainer's optimizer whose ``step`` does nothing after a skipped batch.

        Bound as a method so that the LR scheduler's own wrapper of ``step`` still works; the
        scheduler steps either way, so a skipped batch still counts as a step.
        """
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.spike and self.spike.action == "skip" and not getattr(optimizer, "_lmbuild_guarded", False):
            original = type(optimizer).step

            def step(opt, *args, **kwargs):
                if self._skip_update:
                    self._skip_update = False
                    return None
                return original(opt, *args, **kwargs)

            optimizer.step = types.MethodType(step, optimizer)
            optimizer._lmbuild_guarded = True
        return optimizer

    def check_losses(self) -> None:
        """Raise on the first non-finite loss since the last check.

        On a GPU this runs at every log and save rather than every step: reading the loss
        each step would make the host wait for the device and stall the queue of kernels.
        Updates made from a non-finite loss in between are never saved (_save_checkpoint).
        """
        if not self._losses:
            return
        steps, losses = zip(*self._losses)
        self._losses.clear()
        finite = torch.isfinite(torch.stack(losses).float()).tolist()
        if not all(finite):
            i = finite.index(False)
            raise TrainingDiverged(
                f"non-finite training loss {losses[i].item()} at step {steps[i]}: "
                f"lower train.learning_rate ({self.args.learning_rate:g}) or check the data"
            )

    def evaluate(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - started
            self._excluded += seconds
            self.eval_seconds += seconds

    def _save_checkpoint(self, model, trial):
        started = time.perf_counter()
        self.check_losses()
        bad = non_finite_parameter(self.model)
        if bad:
            raise TrainingDiverged(f"non-finite parameter {bad} at step {self.state.global_step}: not saved over the last good checkpoint")
        step = self.state.global_step
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{step}"
        if self.args.should_save:
            # Written before the Trainer's files, so that trainer_state.json (last) still marks the folder complete.
            folder.mkdir(parents=True, exist_ok=True)
            blocks = step * self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
            state = self.order.state(blocks // len(self.order), blocks)
            (folder / DATA_ORDER).write_text(json.dumps(state, indent=1))
            if self.spike:
                (folder / SPIKE_STATE).write_text(json.dumps(self.spike.state()))
        super()._save_checkpoint(model, trial)
        if self.args.should_save and self.after_save:
            self.after_save(folder, step)
        self._excluded += time.perf_counter() - started

    def log(self, logs, start_time=None):
        self.check_losses()
        if "loss" in logs:
            step = self.state.global_step
            now = time.perf_counter()
            then, last = self._mark
            logs["tokens_seen"] = step * self.tokens_per_step
            seconds = now - then - self._excluded
            if step > last and seconds > 0:
                logs["tokens_per_second"] = (step - last) * self.tokens_per_step / seconds
            self._mark, self._excluded = (now, step), 0.0
        super().log(logs, start_time)


class CurveCallback(TrainerCallback):
    """Logs the last step too, saves at ``save_at`` (kept steps, the end of a wsd stable phase)
    and raises on a non-finite validation loss or gradient norm."""

    def __init__(self, save_at=()):
        self.save_at = set(save_at)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        if state.global_step in self.save_at:
            control.should_save = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        for name in ("eval_loss", "grad_norm"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(value):
                raise TrainingDiverged(f"non-finite {name.replace('eval_', 'validation ')} {value} at step {state.global_step}")


def loss_curve(log_history: list[dict], tokens_per_step: int) -> list[dict]:
    """One row per logged step from ``trainer.state.log_history``; None where not measured."""
    rows: dict[int, dict] = {}
    fields = {"loss": "train_loss", "eval_loss": "val_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "tokens_per_second": "tokens_per_second"}
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


def check_resume(resume: Path, order: BlockOrder) -> None:
    """The checkpoint's data order must be the one this run draws (same seed, same blocks)."""
    saved = json.loads((resume / DATA_ORDER).read_text())
    now = order.state(saved["epoch"], saved["blocks_consumed"])
    if saved["permutation_sha256"] != now["permutation_sha256"]:
        raise UserError(
            f"{resume / DATA_ORDER}: the checkpoint's data order (seed {saved['seed']}, {saved['blocks']} blocks) is not this run's "
            f"(seed {now['seed']}, {now['blocks']} blocks); delete {resume.parent} to start over"
        )


def training_arguments(s: dict, output_dir: Path, *, bf16: bool, world: int, resume: bool, fsdp: bool = False, liger: bool = False) -> TrainingArguments:
    """TrainingArguments from the ``train`` settings; ``batch_size`` is split over ``world`` processes."""
    if s["batch_size"] % world:
        raise UserError(f"train.batch_size {s['batch_size']} is not divisible by the {world} processes (GPUs) given")
    kwargs: dict = {}
    if s["lr_scheduler"] == "wsd":
        kwargs["lr_scheduler_kwargs"] = {"num_decay_steps": wsd_decay_steps(s), "decay_type": "cosine", "min_lr_ratio": s["min_lr_ratio"]}
    else:
        kwargs["lr_scheduler_kwargs"] = {"min_lr_rate": s["min_lr_ratio"]}
    if s["gradient_checkpointing"]:
        kwargs.update(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    if s["compile"] and s["compile_mode"] != "default":
        kwargs["torch_compile_mode"] = s["compile_mode"]
    if liger:
        kwargs.update(use_liger_kernel=True, liger_kernel_config=dict(accel.LIGER_CONFIG))
    if fsdp:
        kwargs.update(fsdp=True, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"], "state_dict_type": "FULL_STATE_DICT"})
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=s["max_steps"],
        per_device_train_batch_size=s["batch_size"] // world,
        per_device_eval_batch_size=max(1, s["batch_size"] // world),
        gradient_accumulation_steps=s["gradient_accumulation_steps"],
        learning_rate=s["learning_rate"],
        lr_scheduler_type=SCHEDULERS[s["lr_scheduler"]],
        warmup_steps=s["warmup_steps"],
        optim="adamw_torch_fused",
        weight_decay=s["weight_decay"],
        adam_beta1=s["adam_beta1"],
        adam_beta2=s["adam_beta2"],
        max_grad_norm=s["max_grad_norm"],
        seed=s["seed"],
        bf16=bf16,
        torch_compile=s["compile"],
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="steps",
        eval_steps=s["eval_steps"],
        eval_on_start=not resume,  # a checkpoint's log history already has it
        prediction_loss_only=True,
        logging_strategy="steps",
        logging_steps=s["logging_steps"],
        logging_first_step=True,
        logging_nan_inf_filter=False,  # the default drops non-finite losses from the logs
        save_strategy="steps",
        save_steps=s["save_steps"],
        save_total_limit=2,
        report_to="none",  # TensorBoard through our callback, writing into the work folder
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        **kwargs,
    )


def _link_files(src: Path, dest: Path, keep=lambda p: True) -> None:
    """Hard-link (copy across file systems) the files of ``src`` that ``keep`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and keep(f):
            try:
                os.link(f, dest / f.name)
            except OSError:
                shutil.copy2(f, dest / f.name)


def is_model_file(path: Path) -> bool:
    """Whether a Trainer checkpoint's file belongs to the model folder (not optimizer, RNG, state)."""
    return path.name not in TRAINER_ONLY and path.suffix not in (".pt", ".pth", ".bin")


def stable_key(s: dict, inputs: dict[str, Path], lineage: dict) -> str:
    """:func:`lmbuild.training.schedule.stable_key` of this job: its input artifacts' keys from their manifests."""
    keys = {}
    for name, path in sorted(inputs.items()):
        try:
            keys[name] = json.loads((Path(path) / "manifest.json").read_text())["key"]
        except (OSError, ValueError, KeyError):
            keys[name] = None
    return schedule.stable_key(s, lineage.get("code_hash"), keys)


class StableCache:
    """``<store>/_stable/<stable_key>/step-<n>/``: Trainer checkpoints of a wsd run's stable phase.

    A wsd run writes the checkpoint at the end of its stable phase and those of its kept steps
    in the stable phase here (hard links of the work folder's, written through a temporary folder
    and a rename, ``stable.json`` last); a run with the same stable key and at least that long a
    stable phase resumes from the newest one instead of step 0. Entries hold the optimizer,
    scheduler and RNG state as torch files, which the Trainer loads with ``weights_only=True``;
    they are never part of an artifact. ``snakemake gc`` lists them (lmbuild.store.gc).
    """

    def __init__(self, store: Path, key: str):
        self.key, self.folder = key, Path(store) / "_stable" / key

    def entry(self, step: int) -> Path:
        return self.folder / f"step-{step}"

    def steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in self.folder.iterdir() if p.name.startswith("step-") and p.name[5:].isdigit() and (p / STABLE_MARK).is_file())

    def put(self, checkpoint: Path, step: int, info: dict) -> bool:
        if self.entry(step).is_dir():
            return False
        tmp = self.folder / f".tmp-step-{step}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _link_files(checkpoint, tmp, lambda f: f.name != STABLE_MARK)
        (tmp / STABLE_MARK).write_text(json.dumps({"stable_key": self.key, "step": step, **info}, indent=1))
        try:
            os.rename(tmp, self.entry(step))
        except OSError:  # another run wrote it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True


def kept_folder(work: Path, step: int) -> Path:
    return work / "kept" / f"step-{step}"


def choose_resume(work_ckpt: Path | None, cache: StableCache | None, decay_start: int, keep: list[int], work: Path) -> tuple[Path | None, bool]:
    """The checkpoint to start from: this key's newest work checkpoint, or a later stable-cache
    entry at or before ``decay_start`` whose earlier kept steps are all at hand. (path, from cache)."""
    start = checkpoint_step(work_ckpt) if work_ckpt else 0
    if cache is None:
        return work_ckpt, False
    at_hand = set(cache.steps()) | {k for k in keep if kept_folder(work, k).is_dir()}
    usable = [t for t in cache.steps() if start < t <= decay_start and all(k in at_hand for k in keep if k <= t)]
    if usable:
        return cache.entry(max(usable)), True
    return work_ckpt, False


def _skips(resume: Path | None, work: Path) -> list:
    """Data windows skipped by rollbacks: those the checkpoint records, and this run's own."""
    windows = []
    if resume and (resume / DATA_ORDER).is_file():
        windows += json.loads((resume / DATA_ORDER).read_text()).get("skips", [])
    spikes = work / "spikes.json"
    if spikes.is_file():
        windows += json.loads(spikes.read_text())["skips"]
    return windows


def train(s: dict, inputs: dict[str, Path], out: Path, work: Path, threads: int, world: int = 1, store: Path | None = None, lineage: dict | None = None) -> dict | None:
    """Train in this process (one rank of ``world``); rank 0 writes the artifact into ``out``.

    ``store``: the artifact store, whose stable cache a wsd run reads and writes (None: none).
    Returns the counts on rank 0, None on the others.
    """
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls outside autocast (GPU only; no effect on CPU)
    shards, init = inputs["shards"], inputs["init_checkpoint"]
    meta = json.loads((shards / META).read_text())
    tokenizer = AutoTokenizer.from_pretrained(init)
    kernels, attention = accel.kernels(s["kernels"]), accel.attention(s["attention"])
    config = AutoConfig.from_pretrained(init)
    if meta["vocab_size"] > config.vocab_size:
        raise UserError(f"{shards}: vocab_size {meta['vocab_size']} exceeds the model's {config.vocab_size} (a different tokenizer?)")
    if meta["seq_len"] > config.max_position_embeddings:
        raise UserError(f"{shards}: seq_len {meta['seq_len']} exceeds model.max_position_embeddings {config.max_position_embeddings}")

    # Every token shard as one dataset; data.mixture (s["mixture"], absent when empty) picks the blocks of an epoch.
    train_data = training_blocks(shards, s.get("mixture") or {}, s["seed"])
    val_data = ShardedBlocks(shards, "val")
    per_step = check_one_step(train_data, shards, s)
    val_subset = Subset(val_data, evenly_spaced(len(val_data), s["eval_batches"] * s["batch_size"]))
    bf16 = use_bf16(s["bf16"])
    checkpoints = work / "trainer"
    # FSDP under torchrun, also with one process (its overhead on one GPU is measurable).
    fsdp = s["parallel"] == "fsdp" and (world > 1 or "LOCAL_RANK" in os.environ)
    tokens_per_step = per_step * meta["seq_len"]
    keep = sorted(s.get("keep_steps") or [])
    spike = s.get("spike") or {"action": "none"}
    # The stable cache: wsd only (a cosine schedule depends on the length at every step), and
    # not under FSDP, whose checkpoints are sharded per process.
    wsd = s["lr_scheduler"] == "wsd"
    decay_start = wsd_decay_start(s) if wsd else 0
    cache = StableCache(store, stable_key(s, inputs, lineage or {})) if wsd and store is not None and not fsdp else None
    cached: list[int] = []
    save_at = set(keep) | ({decay_start} if cache else set())

    def after_save(folder: Path, step: int) -> None:
        info = {"tokens_seen": step * tokens_per_step}
        if step in keep and not kept_folder(work, step).is_dir():
            tmp = work / "kept" / f".tmp-{step}"
            shutil.rmtree(tmp, ignore_errors=True)
            _link_files(folder, tmp, is_model_file)
            (tmp / KEPT_MARK).write_text(json.dumps({"step": step, **info}))
            os.rename(tmp, kept_folder(work, step))
        if cache and step <= decay_start and (step in keep or step == decay_start) and cache.put(folder, step, info):
            cached.append(step)

    tensorboard = SummaryWriter(log_dir=str(work / "tensorboard")) if int(os.environ.get("RANK", "0")) == 0 else None
    spikes_file = work / "spikes.json"
    rollbacks = json.loads(spikes_file.read_text())["rollbacks"] if spikes_file.is_file() else []
    first_start = None
    while True:
        resume, from_cache = choose_resume(last_checkpoint(checkpoints), cache, decay_start, keep, work)
        start_step = checkpoint_step(resume) if resume and not from_cache else (int(resume.name[5:]) if resume else 0)
        first_start = start_step if first_start is None else first_start
        if resume and not from_cache and int(os.environ.get("RANK", "0")) == 0:
            # A kill between a checkpoint and its kept copy or cache entry: make them now.
            after_save(resume, start_step)
        done = None if from_cache else finished(resume, s["max_steps"])
        model = AutoModelForCausalLM.from_pretrained(resume if done is not None else init, dtype=torch.float32, attn_implementation=attention)
        args = training_arguments(s, checkpoints, bf16=bf16, world=world, resume=resume is not None, fsdp=fsdp, liger=kernels == "liger")
        trainer = LMTrainer(
            model=model,
            args=args,
            train_dataset=train_data,
            eval_dataset=val_subset,
            processing_class=tokenizer,
            # Blocks are equal-length: stack them. The Trainer's default with a tokenizer pads each batch
            # through Python lists (76 ms for 16 x 2048 tokens here) and adds an all-ones attention mask.
            data_collator=default_data_collator,
            tokens_per_step=tokens_per_step,
            seed=s["seed"],
            skips=_skips(resume, work),
            spike=spike,
            after_save=after_save,
            # Events go to the work folder first so that those of a crashed attempt are kept too.
            callbacks=[CurveCallback(save_at)] + ([TensorBoardCallback(tensorboard)] if tensorboard and args.should_save else []),
        )
        if resume:
            check_resume(resume, trainer.order)
            if trainer.spike and (resume / SPIKE_STATE).is_file():
                trainer.spike.load(json.loads((resume / SPIKE_STATE).read_text()))
            log.info("resuming from %s%s", resume, " (the stable-phase cache)" if from_cache else "")
        log.info("training %s on %d blocks (bf16=%s, kernels=%s, attention=%s, %d process(es)), validating on %d blocks",
                 init, len(train_data), bf16, kernels, attention, world, len(val_subset))
        started = time.time()
        if done is not None:  # killed after its final checkpoint: nothing left to train
            trainer.state, runtime = done, 0.0
            break
        try:
            runtime = trainer.train(resume_from_checkpoint=str(resume) if resume else None).metrics["train_runtime"]
            break
        except RollBack as rb:
            # Back to the newest checkpoint; the blocks read from there up to the spike are never read again.
            back, back_cached = choose_resume(last_checkpoint(checkpoints), cache, decay_start, keep, work)
            to = 0 if back is None else (int(back.name[5:]) if back_cached else checkpoint_step(back))
            window = [to * per_step, (rb.step - to) * per_step]
            rollbacks.append({"step": rb.step, "to_step": to, "loss": rb.loss, "mean": rb.mean, "skipped_blocks": window[1]})
            log.warning("%s: rolling back to step %d and skipping %d blocks", rb, to, window[1])
            if len(rollbacks) > spike["max_rollbacks"]:
                raise TrainingDiverged(f"{rb}: more than train.spike.max_rollbacks ({spike['max_rollbacks']}) rollbacks") from None
            old = json.loads(spikes_file.read_text()) if spikes_file.is_file() else {"skips": []}
            spikes_file.write_text(json.dumps({"skips": old["skips"] + [window], "rollbacks": rollbacks}))
            del trainer, model
    train_seconds = time.time() - started
    trainer.check_losses()
    bad = non_finite_parameter(trainer.model)
    if bad:
        raise TrainingDiverged(f"non-finite parameter {bad} after step {trainer.state.global_step}: the model is not saved")

    if fsdp and done is None:
        trainer.save_model(str(out))  # gathers the full state dict; rank 0 writes
    if not trainer.is_world_process_zero():
        return None
    if not fsdp or done is not None:  # a finished checkpoint's model is whole in every process
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(out)
        tokenizer.save_pretrained(out)
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle: never in an artifact
    history = trainer.state.log_history
    rows = loss_curve(history, tokens_per_step)
    val = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    write_curve(out / "loss_curve.csv", rows)
    if tensorboard:
        tensorboard.close()
    shutil.copytree(work / "tensorboard", out / "tensorboard")
    kept = []
    for k in keep:
        src = kept_folder(work, k) if kept_folder(work, k).is_dir() else (cache.entry(k) if cache else None)
        if src is None or not src.is_dir():
            raise RuntimeError(f"kept step {k}: no checkpoint was saved at that step")
        _link_files(src, out / "steps" / str(k), is_model_file)
        (out / "steps" / str(k) / KEPT_MARK).write_text(json.dumps({"step": k, "tokens_seen": k * tokens_per_step}))
        kept.append({"step": k, "tokens_seen": k * tokens_per_step, "path": f"steps/{k}"})

    # Throughput of this process's steps, leaving out the time spent validating.
    eval_seconds = trainer.eval_seconds
    step_seconds = max(runtime - eval_seconds, 1e-9)
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
        "kernels": kernels,
        "attention": attention,
        "processes": world,
        "nodes": world // int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        "parallel": "fsdp" if fsdp else ("ddp" if world > 1 else None),
        "parameters": count_parameters(trainer.accelerator.unwrap_model(trainer.model)),
        "resumed_from_step": first_start or None,
        # Steps this job computed (the last attempt; a rollback's discarded steps not counted).
        "steps_trained": trainer.state.global_step - start_step,
        "stable": None if cache is None else {
            "key": cache.key, "decay_start": decay_start, "continued_from_step": start_step if from_cache else None, "cached_steps": cached,
        },
        "kept": kept,
        "spikes": None if trainer.spike is None else {
            "action": spike["action"], "skipped_steps": trainer.spike.skipped, "rollbacks": rollbacks,
            "skips": len(trainer.spike.skipped) + len(rollbacks),
        },
        "tokens_per_source": tokens_per_source(train_data, trainer.order, trainer.state.global_step * per_step),
    }
    log.info("trained_checkpoint: %s", counts)
    return counts


def torchrun_argv(nproc: int, spec: Path) -> list[str]:
    """The launch command as an argv list (no shell, nothing from config in a command string)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}", "-m", "lmbuild.training.trained_checkpoint", str(spec)]


def slurm_hosts() -> list[str]:
    """This SLURM job's hosts, first one first (``scontrol show hostnames $SLURM_JOB_NODELIST``)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist or not os.environ.get("SLURM_JOB_ID"):
        raise UserError("resources.trained_checkpoint.nodes > 1 needs a SLURM job (no SLURM_JOB_NODELIST here): run with --profile profiles/slurm")
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True).stdout.split()


def rendezvous_port(job_id: str) -> int:
    """The c10d port on the first node: one per SLURM job id, so that two jobs sharing a node differ."""
    return 29500 + int(job_id) % 10000


def srun_torchrun_argv(nnodes: int, nproc: int, spec: Path, *, host: str, port: int, job_id: str, srun_nodes: int | None = None) -> list[str]:
    """One torchrun agent per node through srun (an argv list; config never reaches a shell).

    ``--overlap``: the job's own step (the SLURM plugin runs the job under ``srun -n1``) holds
    the first node's CPUs. ``srun_nodes`` < ``nnodes`` puts several agents on one node (tests)."""
    srun_nodes = nnodes if srun_nodes is None else srun_nodes
    srun = ["srun", "--overlap", f"--nodes={int(srun_nodes)}", f"--ntasks={int(nnodes)}", f"--ntasks-per-node={-(-int(nnodes) // int(srun_nodes))}", "--kill-on-bad-exit=1"]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={int(nnodes)}", f"--nproc_per_node={int(nproc)}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint={host}:{int(port)}", f"--rdzv_id=lmbuild-{int(job_id)}",
    ]
    return [*srun, *torchrun, "-m", "lmbuild.training.trained_checkpoint", str(spec)]


def launch(ctx: StageContext, nproc: int, nodes: int = 1, *, srun_nodes: int | None = None) -> dict:
    """Run :func:`train` under torchrun with ``nproc`` processes per node; return rank 0's counts.

    On ``nodes`` > 1 (a SLURM job on that many nodes), one torchrun per node through srun."""
    spec = ctx.work / "launch.json"
    result, error = ctx.work / "counts.json", ctx.work / "error.txt"
    for stale in (result, error):
        stale.unlink(missing_ok=True)
    spec.write_text(json.dumps({
        "settings": ctx.settings, "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out": str(ctx.out), "work": str(ctx.work),
        "threads": max(1, ctx.threads // nproc), "counts": str(result), "error": str(error),
        "store": str(ctx.store) if ctx.store else None, "lineage": ctx.lineage,
    }))
    if nodes > 1:
        hosts, job_id = slurm_hosts(), os.environ["SLURM_JOB_ID"]
        if srun_nodes is None and len(hosts) != nodes:
            raise UserError(f"resources.trained_checkpoint.nodes is {nodes} but SLURM gave this job {len(hosts)} node(s): {' '.join(hosts)}")
        argv = srun_torchrun_argv(nodes, nproc, spec, host=hosts[0], port=rendezvous_port(job_id), job_id=job_id, srun_nodes=srun_nodes)
    else:
        argv = torchrun_argv(nproc, spec)
    log.info("launching %s", argv)
    rc = subprocess.run(argv, check=False).returncode
    if error.exists():
        raise UserError(error.read_text().strip())
    if rc != 0 or not result.exists():
        raise RuntimeError(f"torchrun with {nproc} processes on {nodes} node(s) exited with status {rc}; the workers' tracebacks are in the job's log")
    return json.loads(result.read_text())


def build(ctx: StageContext, nproc: int | None = None) -> dict:
    """Train in this process, or under torchrun when the job has more than one GPU.

    ``nproc`` defaults to ``ctx.gpus`` (the rule's ``gpu`` resource); tests pass it to run
    several CPU processes (gloo)."""
    nproc = max(1, ctx.gpus) if nproc is None else nproc
    if nproc > 1 or ctx.nodes > 1:
        return launch(ctx, nproc, ctx.nodes)
    return train(ctx.settings, ctx.inputs, ctx.out, ctx.work, ctx.threads, store=ctx.store, lineage=ctx.lineage)


def _worker(spec_path: str) -> int:
    """One torchrun worker: train, rank 0 writes counts; a UserError becomes one line in error.txt."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    spec = json.loads(Path(spec_path).read_text())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        counts = train(spec["settings"], {k: Path(v) for k, v in spec["inputs"].items()}, Path(spec["out"]), Path(spec["work"]), spec["threads"], world,
                       Path(spec["store"]) if spec.get("store") else None, spec.get("lineage"))
    except UserError as exc:
        Path(spec["error"]).write_text(f"{exc}\n")
        raise
    if counts is not None:
        Path(spec["counts"]).write_text(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
