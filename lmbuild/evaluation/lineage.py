"""Where a report's checkpoints come from, read from manifests (stage ``eval_report``).

  * the lineage: every artifact upstream of the inputs (following manifests' input paths),
    with its key, settings, inputs, counts and code hash, by ``stage/key``;
  * the training run a checkpoint belongs to, so the report can draw each metric against
    tokens seen along the run.

What it does not do: read an artifact's files other than its manifest.
"""

from __future__ import annotations

from pathlib import Path

from lmbuild.store.artifact import read_manifest


def walk_lineage(inputs: dict[str, Path]) -> dict[str, dict]:
    """Every artifact upstream of ``inputs`` (following manifests' input paths), by ``stage/key``."""
    out: dict[str, dict] = {}
    todo = [Path(p) for p in inputs.values()]
    while todo:
        path = todo.pop()
        try:
            m = read_manifest(path)
        except (OSError, ValueError):
            continue
        ref = f"{m.get('stage')}/{m.get('key')}"
        if ref in out:
            continue
        out[ref] = {k: m.get(k) for k in ("stage", "key", "settings", "inputs", "counts", "code_hash", "code_files", "seconds", "started", "versions")}
        out[ref]["path"] = str(path)
        todo.extend(Path(i["path"]) for i in (m.get("inputs") or {}).values() if i.get("path"))
    return out


def training_run(manifest: dict) -> str | None:
    """The training run a checkpoint belongs to: the key of the init_checkpoint it starts from
    (its own key for an init_checkpoint). Checkpoints of one run share it, so the report can
    draw each metric against tokens seen along the run."""
    if manifest.get("stage") == "init_checkpoint":
        return manifest.get("key")
    for i in (manifest.get("inputs") or {}).values():
        if i.get("stage") == "init_checkpoint":
            return i.get("key")
    return manifest.get("key")
