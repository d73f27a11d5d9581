"""The stable-phase cache of wsd runs, and the checkpoint a run starts from.

``<store>/_stable/<stable key>/step-<n>/``: Trainer checkpoints of a wsd run's stable phase,
keyed on the run's identity without its length (:func:`stable_key`), so that a longer run, or
a decay branched from a kept step, continues from one instead of step 0.

What this module does not do: decide which steps go into the cache
(:class:`lmbuild.training.kept.KeptSteps`), or remove entries (``snakemake gc``,
lmbuild.store.gc).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from lmbuild.training import schedule
from lmbuild.training.checkpoints import STABLE_MARK, checkpoint_step, kept_folder, link_files


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
        link_files(checkpoint, tmp, lambda f: f.name != STABLE_MARK)
        (tmp / STABLE_MARK).write_text(json.dumps({"stable_key": self.key, "step": step, **info}, indent=1))
        try:
            os.rename(tmp, self.entry(step))
        except OSError:  # another run wrote it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        return True


class Start(NamedTuple):
    """Where a run (or a rollback) starts: a checkpoint folder (None: the initial model), its
    step, and whether it is a stable-cache entry."""

    path: Path | None
    step: int
    from_cache: bool


def choose_resume(work_ckpt: Path | None, cache: StableCache | None, decay_start: int, keep: list[int], work: Path) -> Start:
    """The checkpoint to start from: this key's newest work checkpoint, or a later stable-cache
    entry at or before ``decay_start`` whose earlier kept steps are all at hand."""
    start = checkpoint_step(work_ckpt) if work_ckpt else 0
    if cache is not None:
        at_hand = set(cache.steps()) | {k for k in keep if kept_folder(work, k).is_dir()}
        usable = [t for t in cache.steps() if start < t <= decay_start and all(k in at_hand for k in keep if k <= t)]
        if usable:
            return Start(cache.entry(max(usable)), max(usable), True)
    return Start(work_ckpt, start, False)
