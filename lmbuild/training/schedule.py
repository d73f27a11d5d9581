"""Learning-rate schedule arithmetic shared by the config check and training.

It lives apart from ``lmbuild.build.config`` so that it is in the ``trained_checkpoint`` code set
(editing it retrains) while edits to config validation do not retrain anything.
"""

from __future__ import annotations

import hashlib
import json

# The wsd settings that fix only where the run ends and how it decays; every stable-phase step
# is the same without them (lmbuild.training.stable_cache is keyed on the rest).
LENGTH_KEYS = ("max_steps", "decay_fraction", "decay_steps", "keep_steps")


def wsd_decay_steps(train: dict) -> int:
    """Steps of the final decay of the warmup-stable-decay schedule: ``decay_steps`` where set,
    else ``decay_fraction`` of ``max_steps``."""
    if train.get("decay_steps") is not None:
        return int(train["decay_steps"])
    return max(1, round(train["max_steps"] * train["decay_fraction"]))


def wsd_decay_start(train: dict) -> int:
    """The last step of the stable phase: steps before it use a learning rate that does not
    depend on the run's length (warmup, then the constant peak)."""
    return train["max_steps"] - wsd_decay_steps(train)


def stable_key(train: dict, code_hash: str | None, input_keys: dict) -> str:
    """A wsd run's identity without its length: the train settings less :data:`LENGTH_KEYS`, the
    stage's code hash and its inputs' keys. Runs that share it take the same steps up to the
    start of either one's decay (the address of lmbuild.training.stable_cache's stable-phase cache; the plan
    computes it too, so that ``gc`` knows which cache entries a config reaches)."""
    material = {"settings": {k: v for k, v in train.items() if k not in LENGTH_KEYS}, "code": code_hash, "inputs": dict(input_keys)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
