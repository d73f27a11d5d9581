"""The HF Trainer as both objectives train with it, and its one setup.

:class:`LMTrainer` adds our data order, divergence checks, the spike rule and throughput
logging to the HF Trainer; :func:`training_arguments` maps the ``train`` settings onto
``TrainingArguments``; :func:`make_trainer` builds the Trainer of a run, causal or masked, and
checks a resumed checkpoint against it.

What this module does not do: load a model or data (the stage modules and
:mod:`lmbuild.training.run` do), choose the checkpoint to resume from, or save the artifact.
"""

from __future__ import annotations

import json
import logging
import math
import time
import types
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback

from lmbuild.errors import UserError
from lmbuild.training import accel
from lmbuild.training.checkpoints import DATA_ORDER, SPIKE_STATE, check_resume
from lmbuild.training.order import BlockOrder
from lmbuild.training.schedule import wsd_decay_steps
from lmbuild.training.spikes import RollBack, SpikeRule, TrainingDiverged, non_finite_parameter

log = logging.getLogger(__name__)

SCHEDULERS = {"cosine": "cosine_with_min_lr", "wsd": "warmup_stable_decay"}


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


def make_trainer(model, args: TrainingArguments, data, tokenizer, collator, *, resume: Path | None, seed: int, tensorboard=None, save_at=(),
                 note: str = "", **extra) -> LMTrainer:
    """The Trainer of a run on ``data`` (:class:`lmbuild.training.run.Blocks`), for both objectives.

    ``resume``: the checkpoint the run starts from, whose data order must be this run's and whose
    spike-rule state the rule takes. ``tensorboard``: a SummaryWriter (rank 0's; None on the
    others). ``extra``: :class:`LMTrainer`'s own arguments (``skips``, ``spike``, ``after_save``).
    """
    trainer = LMTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.val,
        processing_class=tokenizer,
        data_collator=collator,
        tokens_per_step=data.tokens_per_step,
        seed=seed,
        # Events go to the work folder first so that those of a crashed attempt are kept too.
        callbacks=[CurveCallback(save_at)] + ([TensorBoardCallback(tensorboard)] if tensorboard and args.should_save else []),
        **extra,
    )
    if resume:
        check_resume(resume, trainer.order)
        if trainer.spike and (resume / SPIKE_STATE).is_file():
            trainer.spike.load(json.loads((resume / SPIKE_STATE).read_text()))
        log.info("resuming from %s%s", resume, note)
    return trainer
