"""Kept steps: the checkpoints a run keeps beyond its last two Trainer checkpoints.

At each of ``keep_steps`` the model goes to ``<work>/kept/step-<n>/`` (a ``from_pretrained``
folder with ``checkpoint.json``), and finally into the artifact as ``steps/<n>/``; a wsd run also
puts the checkpoints of its kept stable-phase steps and of the end of its stable phase into the
stable cache (:class:`lmbuild.training.stable_cache.StableCache`).

What this module does not do: save a checkpoint (the Trainer does, at the steps of
:attr:`KeptSteps.save_at`), or choose where a run resumes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmbuild.training.checkpoints import KEPT_MARK, is_model_file, kept_folder, link_files
from lmbuild.training.stable_cache import StableCache


class KeptSteps:
    """Called after each complete checkpoint (``after_save(folder, step)``): a kept step's copy,
    a stable-cache entry; :meth:`export` then writes the kept steps into the artifact."""

    def __init__(self, work: Path, keep: list[int], cache: StableCache | None, decay_start: int, tokens_per_step: int):
        self.work, self.keep, self.cache, self.decay_start, self.tokens_per_step = work, keep, cache, decay_start, tokens_per_step
        self.cached: list[int] = []  # steps this run put into the stable cache
        # Steps the Trainer must save at, whatever save_steps says.
        self.save_at = set(keep) | ({decay_start} if cache else set())

    def __call__(self, folder: Path, step: int) -> None:
        info = {"tokens_seen": step * self.tokens_per_step}
        if step in self.keep and not kept_folder(self.work, step).is_dir():
            tmp = self.work / "kept" / f".tmp-{step}"
            shutil.rmtree(tmp, ignore_errors=True)
            link_files(folder, tmp, is_model_file)
            (tmp / KEPT_MARK).write_text(json.dumps({"step": step, **info}))
            os.rename(tmp, kept_folder(self.work, step))
        stable = step <= self.decay_start and (step in self.keep or step == self.decay_start)
        if self.cache and stable and self.cache.put(folder, step, info):
            self.cached.append(step)

    def export(self, out: Path) -> list[dict]:
        """Each kept step's model into ``out/steps/<n>/`` (from the work folder, or the stable
        cache where a continued run did not train that step); the manifest's ``kept``."""
        kept = []
        for k in self.keep:
            src = kept_folder(self.work, k) if kept_folder(self.work, k).is_dir() else (self.cache.entry(k) if self.cache else None)
            if src is None or not src.is_dir():
                raise RuntimeError(f"kept step {k}: no checkpoint was saved at that step")
            link_files(src, out / "steps" / str(k), is_model_file)
            (out / "steps" / str(k) / KEPT_MARK).write_text(json.dumps({"step": k, "tokens_seen": k * self.tokens_per_step}))
            kept.append({"step": k, "tokens_seen": k * self.tokens_per_step, "path": f"steps/{k}"})
        return kept

    def stable_counts(self, continued_from: int | None) -> dict | None:
        """The manifest's ``stable`` (None without a stable cache)."""
        if self.cache is None:
            return None
        return {"key": self.cache.key, "decay_start": self.decay_start, "continued_from_step": continued_from, "cached_steps": self.cached}
