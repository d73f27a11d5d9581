"""Loss spikes and divergence: the spike rule, its rollbacks, and non-finite values.

What this module does not do: act on a spike inside a step (:class:`lmbuild.training.trainer.LMTrainer`
skips the update or raises :class:`RollBack`), or pick the checkpoint a rollback returns to
(:func:`lmbuild.training.stable_cache.choose_resume`).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from pathlib import Path

import torch

from lmbuild.errors import UserError
from lmbuild.training.checkpoints import DATA_ORDER

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """A non-finite loss or model: usually a learning rate too high for the model or data."""


class RollBack(Exception):
    """Raised by the spike rule (action rollback) at ``step``, before that step's update."""

    def __init__(self, step: int, loss: float, mean: float):
        super().__init__(f"loss spike at step {step}: {loss:.4g} against a running mean of {mean:.4g}")
        self.step, self.loss, self.mean = step, loss, mean


def non_finite_parameter(model: torch.nn.Module) -> str | None:
    """The name of the first parameter with a non-finite value, or None."""
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


class Rollbacks:
    """A run's rollbacks so far, in the work folder's ``spikes.json`` (so that a rerun after a
    crash still skips their data windows): each rollback, and each skipped window as
    ``[first block, blocks]`` of the stream the Trainer reads (:class:`lmbuild.training.order.BlockOrder` ``skips``).

    It does not decide that a step is a spike (:class:`SpikeRule`)."""

    def __init__(self, work: Path, spike: dict):
        self.file, self.spike = work / "spikes.json", spike
        self.done: list[dict] = json.loads(self.file.read_text())["rollbacks"] if self.file.is_file() else []

    def skips(self, resume: Path | None) -> list:
        """Data windows skipped by rollbacks: those the checkpoint records, and this run's own."""
        windows = []
        if resume and (resume / DATA_ORDER).is_file():
            windows += json.loads((resume / DATA_ORDER).read_text()).get("skips", [])
        if self.file.is_file():
            windows += json.loads(self.file.read_text())["skips"]
        return windows

    def record(self, rb: RollBack, to: int, per_step: int) -> None:
        """A rollback from ``rb.step`` to step ``to``: the blocks read in between are never read
        again. Raises :class:`TrainingDiverged` past ``max_rollbacks``."""
        window = [to * per_step, (rb.step - to) * per_step]
        self.done.append({"step": rb.step, "to_step": to, "loss": rb.loss, "mean": rb.mean, "skipped_blocks": window[1]})
        log.warning("%s: rolling back to step %d and skipping %d blocks", rb, to, window[1])
        if len(self.done) > self.spike["max_rollbacks"]:
            raise TrainingDiverged(f"{rb}: more than train.spike.max_rollbacks ({self.spike['max_rollbacks']}) rollbacks") from None
        old = json.loads(self.file.read_text()) if self.file.is_file() else {"skips": []}
        self.file.write_text(json.dumps({"skips": old["skips"] + [window], "rollbacks": self.done}))

    def counts(self, rule: SpikeRule | None) -> dict | None:
        """The manifest's ``spikes``: every skipped step and rollback (None without a rule)."""
        if rule is None:
            return None
        return {"action": self.spike["action"], "skipped_steps": rule.skipped, "rollbacks": self.done, "skips": len(rule.skipped) + len(self.done)}
