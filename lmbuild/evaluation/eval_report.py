"""Stage ``eval_report``: evaluate every checkpoint and write the report.

What it does:
  * finds the checkpoints among its inputs by their manifests, each labelled by its input name,
    with the checkpoints a trained one kept along the way (:mod:`lmbuild.evaluation.checkpoints`),
    drawn on the same training run; every entry records ``tokens_seen``, so the report can draw
    each metric against tokens seen;
  * writes the lm-eval tasks into the scratch dir (``artifacts/_work/eval_report/<key>``): the
    held-out task over the first ``eval.val_docs`` validation documents of the ``shards``
    artifact, and a local-data task per ``eval.tasks`` entry with ``data``
    (:mod:`lmbuild.evaluation.lm_eval_tasks`; the entries: :mod:`lmbuild.evaluation.tasks`);
  * with ``eval.average_last``, the mean of the trained model's last kept steps too
    (:func:`~lmbuild.evaluation.checkpoints.with_average`), on the same run;
  * per causal checkpoint, lm-eval's held-out perplexity and extra tasks, resumable through the
    request cache, and greedy sample generations for ``eval.prompts``
    (:mod:`lmbuild.evaluation.causal`);
  * per encoder checkpoint (``model.objective: masked``, :func:`~lmbuild.evaluation.checkpoints.is_encoder`),
    masked-token accuracy and pseudo-perplexity on the same held-out documents (``encoders``: the
    module :mod:`lmbuild.evaluation.masked`, which holds everything an encoder's, passed in by the
    encoder's entry, scripts/eval_report_masked.py, so that a causal report's key holds no encoder
    code); lm-eval's tasks and the generations are skipped for it, with the reason in its entry;
  * per checkpoint, tokens per word and per byte of its tokenizer on the held-out text, its
    parameters and FLOPs per token (:mod:`lmbuild.evaluation.metrics`), and a trained one's
    training summary and loss curve;
  * the lineage: every upstream artifact's manifest (key, settings, inputs, counts;
    :mod:`lmbuild.evaluation.lineage`);
  * writes ``report.json`` in the one shape of ``lmbuild/schemas/report.schema.json`` (every figure per
    checkpoint under ``checkpoints``, whatever its objective) and returns the headline figures
    for the manifest.

What it does not do: train, render (the ``report`` stage does: :mod:`lmbuild.evaluation.report`), write
``manifest.json`` (the runner does), or reach the Hugging Face hub unless the user unsets
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``. Remote code is never trusted.
"""

from __future__ import annotations

# HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: set by lmbuild/__init__.py, imported before this module.
import importlib.metadata
import json
import logging
import sys
import time
from pathlib import Path

import torch
from lm_eval.tasks import TaskManager

from lmbuild.errors import UserError
from lmbuild.evaluation import tasks
from lmbuild.evaluation.causal import ResumableHFLM, evaluate_causal
from lmbuild.evaluation.checkpoints import check_checkpoint, find_checkpoints, is_encoder, with_average
from lmbuild.evaluation.lineage import training_run, walk_lineage
from lmbuild.evaluation.lm_eval_tasks import HELDOUT_TASK, include_folder, make_task_manager, write_heldout_task, write_local_data_task
from lmbuild.evaluation.metrics import model_summary, tokenizer_stats
from lmbuild.store.artifact import read_manifest, write_json
from lmbuild.training.curve import read_curve

log = logging.getLogger(__name__)

TRAINING_SUMMARY = ("initial_val_loss", "final_val_loss", "tokens_seen", "tokens_per_second", "parameters")


# --------------------------------------------------------------------------- inputs




def _folder_digest(path: Path | None) -> str | None:
    """sha256 over the task folder's files (the same digest that enters the eval_report key)."""
    return tasks.folder_digest(path) if path is not None else None


# --------------------------------------------------------------------------- a checkpoint's entry


def evaluate_checkpoint(ck: dict, tm: TaskManager | None, extra_names: list[str], heldout: dict, settings: dict, work: Path, seq_len: int, encoders=None) -> dict:
    """One checkpoint's report entry (lmbuild/schemas/report.schema.json): its figures by its objective
    (a causal LM here, an encoder by ``encoders.evaluate_encoder``, :mod:`lmbuild.evaluation.masked`),
    and what every entry has (run, tokens seen, training).

    ``tm``: the task manager, needed only when the checkpoint is causal."""
    ckpt, label, manifest = ck["path"], ck["label"], ck["manifest"]
    check_checkpoint(label, ckpt)
    counts = manifest.get("counts", {}) or {}
    if is_encoder(ckpt):
        if encoders is None:
            raise UserError(f"{label}: an encoder's checkpoint is evaluated by scripts/eval_report_masked.py, not scripts/eval_report.py")
        part = encoders.evaluate_encoder(ckpt, label, counts, heldout, settings, seq_len)
        model, tok = part.pop("loaded")
        part.update(tokenizer=tokenizer_stats(tok, heldout["texts"]), model=model_summary(model, seq_len))
        del model
    else:
        part = {"objective": "causal", **evaluate_causal(ck, tm, extra_names, heldout, settings, work, seq_len)}
    stage = manifest.get("stage")
    entry = {
        "label": label,
        "stage": stage,
        "key": manifest.get("key"),
        "path": str(ckpt),
        "run": training_run(manifest),
        # Training tokens behind this checkpoint: 0 for a fresh init; None where nobody counted.
        "tokens_seen": counts.get("tokens_seen", 0 if stage == "init_checkpoint" else None),
        **part,
    }
    if stage == "averaged_checkpoint":
        entry["averaged"] = {"steps": counts.get("averaged_steps")}
    if stage == "trained_checkpoint":
        entry["training"] = {
            "summary": {k: counts.get(k) for k in TRAINING_SUMMARY},
            "counts": counts,
            "settings": manifest.get("settings", {}),
            "loss_curve": read_curve(ckpt / "loss_curve.csv"),
        }
    return entry


# --------------------------------------------------------------------------- stage


def build(ctx, encoders=None) -> dict:
    """Evaluate every checkpoint input on held-out ``shards`` documents and the configured
    tasks; write the report into ctx.out. ``encoders``: the encoders' evaluation
    (:mod:`lmbuild.evaluation.masked`) where an input is an encoder's checkpoint."""
    started = time.time()
    torch.set_num_threads(ctx.threads)
    s = ctx.settings
    inputs = {k: Path(v) for k, v in ctx.inputs.items()}
    checkpoints = find_checkpoints(inputs)
    if s.get("average_last"):  # the mean of the last kept steps, evaluated beside them
        checkpoints = with_average(checkpoints, s["average_last"], Path(ctx.work))
    shards = inputs["shards"]
    specs = tasks.parse(s.get("tasks") or [])
    extra_names = [t["task"] for t in specs]

    task_dir = Path(ctx.work) / "tasks"
    heldout = write_heldout_task(shards / "val_docs.jsonl", task_dir, s["val_docs"])
    include_path = include_folder(s.get("include_path"))
    # lm-eval's tasks are for causal checkpoints only: a report on encoders alone never loads them.
    causal = [ck["label"] for ck in checkpoints if not is_encoder(ck["path"])]
    local, tm = {}, None
    if causal:
        local = {t["task"]: write_local_data_task(t, i, task_dir, include_path) for i, t in enumerate(specs) if t["data"]}
        tm = make_task_manager(task_dir, include_path, extra_names)
    try:
        seq_len = int(json.loads((shards / "meta.json").read_text())["seq_len"])
    except (OSError, ValueError, KeyError):
        seq_len = None

    entries = []
    for ck in checkpoints:
        log.info("evaluating %s (%s)", ck["label"], ck["path"])
        cfg = json.loads((ck["path"] / "config.json").read_text()) if (ck["path"] / "config.json").is_file() else {}
        entries.append(evaluate_checkpoint(ck, tm, extra_names, heldout, s, Path(ctx.work), seq_len or cfg.get("max_position_embeddings", 0), encoders))
    trained = [e for e in entries if e["stage"] == "trained_checkpoint"]
    # The build's own trained model leads; variants' models (labelled <variant>__...) sit beside it.
    primary = next((e for e in entries if e["label"] == "trained_checkpoint"), (trained or entries)[-1])

    shards_manifest = read_manifest(shards)
    # One shape (lmbuild/schemas/report.schema.json): every figure of a checkpoint under its entry in
    # `checkpoints`; `primary` names the headline one instead of copying its figures.
    data = {
        "key": ctx.key,
        "primary": primary["label"],
        "checkpoints": entries,
        "settings": dict(s),
        "artifacts": {
            "eval_report": ctx.key,
            **{e["label"]: e["key"] for e in entries},
            "shards": shards_manifest.get("key"),
        },
        "lineage": walk_lineage(inputs),
        "lm_eval": {
            "model": f"hf ({ResumableHFLM.__module__}.{ResumableHFLM.__name__})" if causal else None,
            "batch_size": s["batch_size"],
            "limit": s.get("limit"),
            "tasks": [HELDOUT_TASK, *extra_names],
            # The checkpoints lm-eval scored; an encoder's entry says why it skipped them (`skipped`).
            "evaluated": causal,
            "local_data_tasks": {n: str(p) for n, p in local.items()},
            "include_path": str(include_path) if include_path else None,
            "include_path_digest": _folder_digest(include_path),
            "local_files": tasks.fingerprint(s),
            "versions": _versions(),
        },
        "seconds": {e["label"]: e["seconds"] for e in entries},
    }
    data["seconds"]["total"] = round(time.time() - started, 3)
    write_json(Path(ctx.out) / "report.json", data)

    h = primary["headline"]
    out = {
        "checkpoints": [e["label"] for e in entries],
        **{n: h[n] for n in ("heldout_word_perplexity", "heldout_bits_per_byte", "heldout_token_perplexity") if n in h},
        "heldout_docs": heldout["docs"],
        "generations": len(primary["generations"]),
        "dtype": primary["lm_eval"]["dtype"],
        "seconds": data["seconds"]["total"],
    }
    for e in entries:
        for name in encoders.HEADLINE if e["objective"] == "masked" else ("heldout_bits_per_byte",):
            out[f"{e['label']}/{name}"] = e["headline"].get(name)
        for name, entry in e["extra_tasks"].items():
            out[f"{e['label']}/{name}/{entry['metric']}"] = entry["value"]
    for name, entry in primary["extra_tasks"].items():
        out[f"{name}/{entry['metric']}"] = entry["value"]
    log.info("%s: %s in %.1fs", primary["label"], {k: v for k, v in out.items() if k.startswith(primary["label"] + "/")}, data["seconds"]["total"])
    return out


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for dist in ("lm_eval", "torch", "transformers", "tokenizers", "datasets"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out
