"""Stage ``eval_report``: evaluate the trained checkpoint with lm-eval and write the report.

What it does:
  * writes a local lm-eval task, ``lmbuild_heldout``, into the scratch dir: rolling
    log-likelihood (word/byte perplexity, bits per byte, as lm-eval's wikitext task) over the
    first ``eval.val_docs`` held-out validation documents of the ``shards`` artifact;
  * runs it and the extra ``eval.tasks`` (built in, or from ``eval.include_path``) in one
    ``lm_eval.simple_evaluate`` call, with a pinned batch size, fixed seeds, and lm-eval's
    request cache in the scratch dir, so an interrupted evaluation resumes where it stopped;
  * greedy sample generations for ``eval.prompts``;
  * writes ``report.json``, ``report.html``, ``report.md`` and ``loss_curve.png`` (rendered by
    :mod:`lmbuild.report`) and returns the headline figures for the manifest.

lm-eval's request cache is keyed by request text, not by model: it is safe here because
ctx.work belongs to one artifact key (one checkpoint, one batch size). A resumed run may batch
the remaining windows differently, which can move scores in the last float digits.

What it does not do: train, render (see ``lmbuild.report``), write ``manifest.json`` (the
runner does), or reach the Hugging Face hub unless the user unsets ``HF_HUB_OFFLINE`` /
``HF_DATASETS_OFFLINE``. Remote code is never trusted.
"""

from __future__ import annotations

import os

# Set before transformers/datasets/huggingface_hub are imported: they read these at import.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import csv
import hashlib
import importlib.metadata
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import GenerationConfig

from lmbuild import report
from lmbuild.artifact import read_manifest, write_json
from lmbuild.errors import UserError

log = logging.getLogger(__name__)

HELDOUT_TASK = "lmbuild_heldout"
HELDOUT_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
# Held-out documents scored per call, so that their results reach the request cache in steps.
ROLLING_CHUNK = 32
TRAINING_SUMMARY = ("initial_val_loss", "final_val_loss", "tokens_seen", "tokens_per_second", "parameters")
MODEL_CONFIG_KEYS = (
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "tie_word_embeddings",
)


class ResumableHFLM(HFLM):
    """lm-eval's HF model, scoring rolling log-likelihoods ``ROLLING_CHUNK`` documents at a time.

    In lm-eval 0.4.x ``HFLM.loglikelihood_rolling`` writes results to the request cache only
    after every document of the call is scored, so a crash loses the whole held-out pass.
    Scoring in chunks bounds the loss to one chunk; each window is still scored in batches of
    the pinned batch size. Nothing else changes.
    """

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        out: list[float] = []
        for i in range(0, len(requests), ROLLING_CHUNK):
            out.extend(super().loglikelihood_rolling(requests[i : i + ROLLING_CHUNK], disable_tqdm=disable_tqdm))
        return out


# --------------------------------------------------------------------------- tasks


def write_heldout_task(val_docs: Path, task_dir: Path, n_docs: int) -> dict:
    """Write the first ``n_docs`` non-empty documents and the task YAML into ``task_dir``.

    Returns the documents' count, bytes and texts. Raises UserError if there are none.
    """
    if not val_docs.is_file():
        raise UserError(f"shards artifact has no validation documents: {val_docs} is missing")
    task_dir.mkdir(parents=True, exist_ok=True)
    texts = []
    with val_docs.open(encoding="utf-8") as f:
        for line in f:
            if len(texts) >= n_docs:
                break
            if line.strip():
                doc = json.loads(line)
                if doc.get("text", "").strip():
                    texts.append(doc["text"])
    if not texts:
        raise UserError(f"shards artifact has no validation documents in {val_docs} (raise pack.val_fraction)")
    data = task_dir / f"{HELDOUT_TASK}.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n")
    config = {
        "task": HELDOUT_TASK,
        "dataset_path": "json",
        # cache_dir keeps the datasets cache of this scratch file out of ~/.cache.
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}, "cache_dir": str((task_dir / "hf_datasets").resolve())},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        # A field name, not "{{text}}": the template path would literal_eval texts like "[1, 2]".
        "doc_to_target": "text",
        "metric_list": [
            {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        ],
        "metadata": {"version": 1.0},
    }
    (task_dir / f"{HELDOUT_TASK}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {"docs": len(texts), "bytes": sum(len(t.encode("utf-8")) for t in texts), "texts": texts}


def _include_path(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"eval.include_path: folder not found: {value}")
    return path


def _unknown_task_error(unknown: list[str], include_path: Path | None) -> UserError:
    where = f" or in eval.include_path {include_path}" if include_path else " (set eval.include_path for local tasks)"
    return UserError(f"eval.tasks: unknown lm-eval task(s) {', '.join(unknown)}: not among lm-eval's tasks{where}")


def _absent_from_builtin_yaml(names: list[str]) -> list[str]:
    """Names that occur nowhere in the text of lm-eval's built-in task YAMLs (~0.7 s to read).

    Every built-in task, group and tag name is written in one of those files, so such a
    name is certainly unknown; a name that does occur still needs the real index.
    """
    import lm_eval.tasks

    todo = {n: n.encode() for n in names}
    for path in Path(lm_eval.tasks.__file__).parent.rglob("*.yaml"):
        text = path.read_bytes()
        todo = {n: b for n, b in todo.items() if b not in text}
        if not todo:
            break
    return list(todo)


def make_task_manager(task_dir: Path, include_path: Path | None, names: list[str]) -> TaskManager:
    """A TaskManager that knows our task, the include_path's and, if needed, lm-eval's own.

    Indexing lm-eval's ~14k built-in task files takes ~15 s here, so it is done only for a
    name that is not in the local folders and may be built in. Unknown names raise
    UserError naming eval.tasks.
    """
    if HELDOUT_TASK in names:
        raise UserError(f"eval.tasks: {HELDOUT_TASK} is always run; remove it from the list")
    # Later paths override earlier ones: our task wins over a namesake in include_path.
    paths = ([str(include_path)] if include_path else []) + [str(task_dir)]
    try:
        tm = TaskManager(include_path=paths, include_defaults=False)
        missing = [n for n in names if n not in tm.all_tasks]
        if missing:
            if absent := _absent_from_builtin_yaml(missing):
                raise _unknown_task_error(absent, include_path)
            tm = TaskManager(include_path=paths, include_defaults=True)
    except UserError:
        raise
    except Exception as exc:  # a malformed YAML in the user's folder
        raise UserError(f"eval.include_path: lm-eval could not index the task folder: {_first_line(exc)}") from exc
    unknown = [n for n in names if n not in tm.all_tasks]
    if unknown:
        raise _unknown_task_error(unknown, include_path)
    return tm


def load_extra_tasks(tm: TaskManager, names: list[str]) -> tuple[list, dict[str, Any]]:
    """Load each extra task or group once; return the top-level objects and the leaf tasks.

    A task whose data cannot be loaded (e.g. a hub data set while offline) is a UserError.
    """
    tops: list = []
    leaves: dict[str, Any] = {}
    for name in names:
        try:
            loaded = tm.load([name])
        except Exception as exc:
            hint = ""
            if os.environ.get("HF_DATASETS_OFFLINE") == "1":
                hint = " (the hub is off, HF_DATASETS_OFFLINE=1: use a local task in eval.include_path)"
            raise UserError(f"eval.tasks: lm-eval could not load task {name!r}: {_first_line(exc)}{hint}") from exc
        children = {c for kids in loaded.get("group_map", {}).values() for c in kids}
        tops += [g for n, g in loaded.get("groups", {}).items() if n not in children]
        tops += [t for n, t in loaded["tasks"].items() if n not in children]
        leaves.update(loaded["tasks"])
    return tops, leaves


def limit_samples(leaves: dict[str, Any], limit: int | None) -> dict[str, list[int]] | None:
    """``eval.limit`` for the extra tasks only, as lm-eval's per-task ``samples`` (first N docs).

    lm-eval's own ``limit`` would also cut the held-out task, whose size is eval.val_docs.
    """
    if limit is None or not leaves:
        return None
    return {name: list(range(min(limit, len(task.eval_docs)))) for name, task in leaves.items()}


# --------------------------------------------------------------------------- results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _number(value) -> float | None:
    """A finite float, or None for lm-eval's "N/A", NaN and inf (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def collect_metrics(results: dict) -> dict:
    """lm-eval's results -> {task: {alias, version, n_samples, metrics: {name: {value, stderr, higher_is_better}}}}.

    A metric's name is lm-eval's, with ``,filter`` appended unless the filter is "none".
    """
    out = {}
    higher = results.get("higher_is_better", {})
    for task, entries in results.get("results", {}).items():
        metrics = {}
        for key, value in entries.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else key
            metrics[name] = {
                "value": _number(value),
                "stderr": _number(entries.get(f"{metric}_stderr,{filt}")),
                "higher_is_better": higher.get(task, {}).get(metric),
            }
        out[task] = {
            "alias": str(entries.get("alias", task)).strip(),
            "version": results.get("versions", {}).get(task),
            "n_samples": results.get("n-samples", {}).get(task),
            "metrics": metrics,
        }
    return out


def main_metric(results: dict, task: str, metrics: dict) -> str | None:
    """The first metric of the task's metric_list (lm-eval's order), else the first reported."""
    reported = metrics.get(task, {}).get("metrics", {})
    for entry in results.get("configs", {}).get(task, {}).get("metric_list", []) or []:
        if entry.get("metric") in reported:
            return entry["metric"]
    return next(iter(reported), None)


# --------------------------------------------------------------------------- generations


@torch.no_grad()
def generate_samples(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int) -> list[dict]:
    """Greedy continuations of each prompt; stops early at the end-of-text token.

    The prompt follows an end-of-text token, as a document does in training and in lm-eval's
    rolling windows. A prompt too long for the context keeps its end.
    """
    model.eval()
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
    # Keep prompt + completion within the trained context where the prompt allows.
    prefix = [eos] if eos is not None else []
    room = max(1, getattr(model.config, "max_position_embeddings", 10**9) - max_new_tokens - len(prefix))
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"][-room:]
        ids = ids or [0]  # an empty prompt and no end-of-text token
        input_ids = torch.tensor([ids], device=device)
        seq = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
        new = seq[0, len(ids) :].tolist()
        out.append(
            {
                "prompt": prompt,
                "completion": tokenizer.decode(new, skip_special_tokens=False),
                "new_tokens": len(new),
                "stopped_at_eos": bool(new) and new[-1] == eos,
            }
        )
    return out


# --------------------------------------------------------------------------- inputs


def read_loss_curve(path: Path) -> list[dict]:
    """loss_curve.csv -> rows with numbers (None for empty cells); [] if the file is missing."""
    if not path.is_file():
        log.warning("no loss curve at %s", path)
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if k is None:
                    continue
                v = (v or "").strip()
                try:
                    parsed[k] = None if v == "" else (int(float(v)) if k in ("step", "tokens") else float(v))
                except ValueError:
                    parsed[k] = None
            rows.append(parsed)
    return rows


def _model_config(ckpt: Path) -> dict:
    try:
        config = json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: config[k] for k in MODEL_CONFIG_KEYS if k in config}


def _folder_digest(path: Path | None) -> str | None:
    """sha256 over the task folder's files: eval.include_path enters the key by name only."""
    if path is None:
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _check_checkpoint(ckpt: Path) -> None:
    if not (ckpt / "config.json").is_file():
        raise UserError(f"trained_checkpoint {ckpt} has no config.json: not a Hugging Face model folder")
    if not any((ckpt / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise UserError(f"trained_checkpoint {ckpt} has no tokenizer files: it must be saved with its tokenizer")


# --------------------------------------------------------------------------- stage


def build(ctx) -> dict:
    """Evaluate ``trained_checkpoint`` on held-out ``shards`` documents; write the report into ctx.out."""
    started = time.time()
    torch.set_num_threads(ctx.threads)
    s = ctx.settings
    ckpt = Path(ctx.inputs["trained_checkpoint"])
    shards = Path(ctx.inputs["shards"])
    _check_checkpoint(ckpt)
    extra_names = list(s.get("tasks") or [])

    task_dir = Path(ctx.work) / "tasks"
    heldout = write_heldout_task(shards / "val_docs.jsonl", task_dir, s["val_docs"])
    include_path = _include_path(s.get("include_path"))
    tm = make_task_manager(task_dir, include_path, extra_names)
    tops, leaves = load_extra_tasks(tm, extra_names)
    samples = limit_samples(leaves, s.get("limit"))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_args = {"pretrained": str(ckpt), "dtype": "float32", "trust_remote_code": False}
    lm = ResumableHFLM(**model_args, batch_size=s["batch_size"], device=device)
    cache = Path(ctx.work) / "lm_eval_cache"
    seed = s["seed"]
    t0 = time.time()
    results = simple_evaluate(
        model=lm,
        tasks=[HELDOUT_TASK, *tops],
        task_manager=tm,
        batch_size=s["batch_size"],
        device=device,
        use_cache=str(cache),
        samples=samples,
        log_samples=False,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    eval_seconds = time.time() - t0
    metrics = collect_metrics(results)

    # Token-level held-out loss, comparable with training's val loss: total NLL from bits/byte.
    held = {m: metrics[HELDOUT_TASK]["metrics"].get(m, {}).get("value") for m in HELDOUT_METRICS}
    n_tokens = sum(len(lm.tok_encode(t)) for t in heldout["texts"])
    token_loss = held["bits_per_byte"] * math.log(2) * heldout["bytes"] / n_tokens if held["bits_per_byte"] is not None else None

    t0 = time.time()
    generations = generate_samples(lm.model, lm.tokenizer, list(s["prompts"]), s["max_new_tokens"], seed)
    gen_seconds = time.time() - t0

    trained = read_manifest(ckpt)
    shards_manifest = read_manifest(shards)
    counts = trained.get("counts", {}) or {}
    headline = {
        "initial_val_loss": counts.get("initial_val_loss"),
        "final_val_loss": counts.get("final_val_loss"),
        "heldout_token_loss": token_loss,
        "heldout_token_perplexity": math.exp(token_loss) if token_loss is not None and token_loss < 700 else None,
        "heldout_word_perplexity": held["word_perplexity"],
        "heldout_byte_perplexity": held["byte_perplexity"],
        "heldout_bits_per_byte": held["bits_per_byte"],
        "heldout_docs": heldout["docs"],
        "heldout_tokens": n_tokens,
        "heldout_bytes": heldout["bytes"],
    }
    extra_main = {}
    for name in extra_names:
        metric = main_metric(results, name, metrics)
        if metric is not None:
            extra_main[name] = {"metric": metric, **metrics[name]["metrics"][metric]}
    cfg = results.get("config", {})
    data = {
        "key": ctx.key,
        "headline": headline,
        "extra_tasks": extra_main,
        "metrics": metrics,
        "training": {
            "summary": {k: counts.get(k) for k in TRAINING_SUMMARY},
            "counts": counts,
            "settings": trained.get("settings", {}),
            "model": _model_config(ckpt),
        },
        "loss_curve": read_loss_curve(ckpt / "loss_curve.csv"),
        "generations": generations,
        "settings": dict(s),
        "artifacts": {
            "eval_report": ctx.key,
            "trained_checkpoint": trained.get("key"),
            "shards": shards_manifest.get("key"),
            "trained_checkpoint_inputs": {n: i.get("key") for n, i in (trained.get("inputs") or {}).items()},
        },
        "lm_eval": {
            "model": "hf (lmbuild.evaluate.ResumableHFLM)",
            "model_args": model_args,
            "batch_size": s["batch_size"],
            "device": device,
            "limit": s.get("limit"),
            "samples_per_task": {t: (m.get("n_samples") or {}).get("effective") for t, m in metrics.items()},
            "seeds": {k: cfg.get(k) for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
            "bootstrap_iters": cfg.get("bootstrap_iters"),
            "tasks": [HELDOUT_TASK, *extra_names],
            "include_path": str(include_path) if include_path else None,
            "include_path_digest": _folder_digest(include_path),
            "max_length": lm.max_length,
            "versions": _versions(),
        },
        "seconds": {"lm_eval": round(eval_seconds, 3), "generation": round(gen_seconds, 3)},
    }
    data["seconds"]["total"] = round(time.time() - started, 3)
    write_outputs(data, Path(ctx.out))

    out = {
        "heldout_word_perplexity": held["word_perplexity"],
        "heldout_bits_per_byte": held["bits_per_byte"],
        "heldout_token_perplexity": headline["heldout_token_perplexity"],
        "heldout_docs": heldout["docs"],
        "generations": len(generations),
        "eval_seconds": round(eval_seconds, 3),
        "generation_seconds": round(gen_seconds, 3),
    }
    for name, entry in extra_main.items():
        out[f"{name}/{entry['metric']}"] = entry["value"]
    log.info("held-out word perplexity %s, bits/byte %s over %d docs in %.1fs", held["word_perplexity"], held["bits_per_byte"], heldout["docs"], eval_seconds)
    return out


def write_outputs(data: dict, out: Path) -> None:
    """report.json, loss_curve.png, report.html (PNG embedded) and report.md into ``out``."""
    write_json(out / "report.json", data)
    png = report.loss_curve_png(data["loss_curve"], data["headline"].get("heldout_token_loss"))
    (out / "loss_curve.png").write_bytes(png)
    (out / "report.html").write_text(report.render_html(data, png), encoding="utf-8")
    (out / "report.md").write_text(report.render_markdown(data, "loss_curve.png"), encoding="utf-8")


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for dist in ("lm_eval", "torch", "transformers", "tokenizers", "datasets"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out
