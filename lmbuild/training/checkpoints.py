"""A training run's checkpoints on disk: their files, which one a run resumes from, and copies.

Trainer checkpoints (``checkpoint-<step>/``: model, optimizer, scheduler, RNG, our data order and
spike-rule state) go to the stage's work folder; ``trainer_state.json``, which the Trainer
writes last, marks one complete. A kept step's copy (``kept/step-<n>/``) holds only the model's
files (:func:`is_model_file`), a ``from_pretrained`` folder.

What this module does not do: write a checkpoint (the Trainer does, with
:class:`lmbuild.training.trainer.LMTrainer`'s additions), or choose between a work checkpoint and
the stable cache (:func:`lmbuild.training.stable_cache.choose_resume`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from transformers import TrainerState

from lmbuild.errors import UserError

DATA_ORDER = "data_order.json"  # the data order's state, in every checkpoint
SPIKE_STATE = "spike_state.json"  # the spike rule's running mean, in every checkpoint
STABLE_MARK = "stable.json"  # written last into a stable-cache entry: marks it complete
KEPT_MARK = "checkpoint.json"  # step and tokens seen of a kept checkpoint (steps/<n>/)
# A Trainer checkpoint's files that are not the model: what a kept (from_pretrained) folder leaves out.
TRAINER_ONLY = {"trainer_state.json", DATA_ORDER, SPIKE_STATE, STABLE_MARK}


def checkpoint_step(path: Path) -> int | None:
    tail = path.name.split("-")[-1]
    return int(tail) if path.name.startswith("checkpoint-") and tail.isdigit() else None


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


def check_resume(resume: Path, order) -> None:
    """The checkpoint's data order must be the one this run draws (``order``, a
    :class:`lmbuild.training.order.BlockOrder`: same seed, same blocks)."""
    saved = json.loads((resume / DATA_ORDER).read_text())
    now = order.state(saved["epoch"], saved["blocks_consumed"])
    if saved["permutation_sha256"] != now["permutation_sha256"]:
        raise UserError(
            f"{resume / DATA_ORDER}: the checkpoint's data order (seed {saved['seed']}, {saved['blocks']} blocks) is not this run's "
            f"(seed {now['seed']}, {now['blocks']} blocks); delete {resume.parent} to start over"
        )


def link_files(src: Path, dest: Path, keep=lambda p: True) -> None:
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


def kept_folder(work: Path, step: int) -> Path:
    """Where a kept step's model waits in the work folder until the artifact is written."""
    return work / "kept" / f"step-{step}"
