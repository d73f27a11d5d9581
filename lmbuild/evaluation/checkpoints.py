"""The checkpoints an evaluation scores, found among stage ``eval_report``'s inputs.

Every input whose manifest's stage is a checkpoint stage (``init_checkpoint``,
``trained_checkpoint``, and any other ``*checkpoint`` artifact the rule wires in under its own
input name, e.g. a variant's), labelled by its input name, and the checkpoints a trained one
kept along the way (``train.keep_steps``: its manifest's ``kept``), labelled
``<input name>@step-<n>``. Each is a Hugging Face model folder with its tokenizer; an encoder
(``model.objective: masked``) is told by its config's ``model_type``.

What it does not do: load a model, or follow the inputs' own inputs (:mod:`lmbuild.evaluation.lineage`).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmbuild.errors import UserError
from lmbuild.store.artifact import read_manifest
from lmbuild.training.average import average_kept

# The model types of encoders (lmbuild.models.modernbert), read from a checkpoint's config.json.
ENCODER_TYPES = ("modernbert",)


def is_encoder(ckpt: Path) -> bool:
    """The checkpoint folder holds an encoder (``model.objective: masked``)."""
    try:
        return json.loads((ckpt / "config.json").read_text()).get("model_type") in ENCODER_TYPES
    except (OSError, ValueError):
        return False


def check_checkpoint(label: str, ckpt: Path) -> None:
    """UserError unless ``ckpt`` is a Hugging Face model folder saved with its tokenizer."""
    if not (ckpt / "config.json").is_file():
        raise UserError(f"{label} {ckpt} has no config.json: not a Hugging Face model folder")
    if not any((ckpt / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise UserError(f"{label} {ckpt} has no tokenizer files: it must be saved with its tokenizer")


def find_checkpoints(inputs: dict[str, Path]) -> list[dict]:
    """Every input whose manifest's stage is a checkpoint stage, labelled by its input name, in
    input order: ``init_checkpoint``, ``trained_checkpoint``, and whatever else the rule wires
    in (a variant's trained checkpoint under its own name)."""
    out = []
    for name, path in inputs.items():
        try:
            manifest = read_manifest(Path(path))
        except (OSError, ValueError):
            continue
        if str(manifest.get("stage", "")).endswith("checkpoint"):
            # Kept checkpoints first: the entries of one run in the order of tokens seen.
            for kept in (manifest.get("counts") or {}).get("kept") or []:
                counts = {"steps": kept["step"], "tokens_seen": kept["tokens_seen"]}
                # The run's inputs: the report draws it on the same line as the final model (training_run).
                out.append({"label": f"{name}@step-{kept['step']}", "path": Path(path) / kept["path"],
                            "manifest": {"stage": "kept_checkpoint", "key": f"{manifest.get('key')}@step-{kept['step']}", "counts": counts,
                                         "inputs": manifest.get("inputs") or {}}})
            out.append({"label": name, "path": Path(path), "manifest": manifest})
    if not out:
        raise UserError("eval_report: no checkpoint among the inputs (" + ", ".join(inputs) + ")")
    return out


def with_average(checkpoints: list[dict], n: int, work: Path) -> list[dict]:
    """``checkpoints`` with the mean of the build's own trained model's last ``n`` kept steps
    (``eval.average_last``, :mod:`lmbuild.training.average`), written into ``work``, before that
    model: labelled ``trained_checkpoint@average-<n>``, on the same training run, at the tokens
    seen of the newest step it averages (so the curve against tokens seen gains a point)."""
    out = []
    for ck in checkpoints:
        if ck["label"] == "trained_checkpoint":
            folder = work / f"average-{n}"
            info = average_kept(ck["path"], ck["manifest"], n, folder, "eval.average_last")
            key = ck["manifest"].get("key")
            out.append({"label": f"trained_checkpoint@average-{n}", "path": folder,
                        "manifest": {"stage": "averaged_checkpoint", "key": f"{key}@average-{n}",
                                     "counts": {"tokens_seen": info["tokens_seen"], "averaged_steps": info["steps"]},
                                     "inputs": ck["manifest"].get("inputs") or {}}})
        out.append(ck)
    return out
