"""Canonical serialisation and hashing: the one place that turns settings into a key.

Torch-free and import-free, because the workflow's parse and every job hash with it.
"""

from __future__ import annotations

import copy
import hashlib
import json

KEY_LEN = 16  # hex digits of an artifact's address


def canonical(obj) -> str:
    """Canonical JSON: sorted keys, no spaces, floats via repr, no NaN (stable across runs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(obj) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


def sorted_tree(obj):
    """``obj`` with every mapping's keys in sorted order (lists keep their order)."""
    if isinstance(obj, dict):
        return {k: sorted_tree(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, (list, tuple)):
        return [sorted_tree(v) for v in obj]
    return obj


def apply_patches(settings: dict, patches: list) -> dict:
    """The settings a job runs with: the key's settings with each located path put back."""
    out = copy.deepcopy(settings)
    for where, field, path in patches:
        node = out
        for p in where:
            node = node[p]
        node[field] = path
    return out
