"""Learning-rate schedule arithmetic shared by the config check and training.

It lives apart from ``lmbuild.config`` so that it is in the ``trained_checkpoint`` code set
(editing it retrains) while edits to config validation do not retrain anything.
"""

from __future__ import annotations


def wsd_decay_steps(train: dict) -> int:
    """Steps of the final decay of the warmup-stable-decay schedule."""
    return max(1, round(train["max_steps"] * train["decay_fraction"]))
