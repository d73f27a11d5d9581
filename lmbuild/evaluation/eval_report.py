"""Stage ``eval_report``: evaluate every checkpoint with lm-eval and write the report.

What it does:
  * finds the checkpoints among its inputs by their manifests (``init_checkpoint``,
    ``trained_checkpoint``, and any other ``*checkpoint`` artifact the rule wires in under
    its own input name, e.g. a variant's), each labelled by its input name, and the
    checkpoints a trained one kept along the way (``train.keep_steps``: its manifest's
    ``kept``), labelled ``<input name>@step-<n>`` and drawn on the same training run; every
    entry records ``tokens_seen``, so the report can draw each metric against tokens seen;
  * writes a local lm-eval task, ``lmbuild_heldout``, into the scratch dir: rolling
    log-likelihood (word/byte perplexity, bits per byte, as lm-eval's wikitext task) over the
    first ``eval.val_docs`` held-out validation documents of the ``shards`` artifact;
  * for each ``eval.tasks`` entry with ``data``, a task YAML that ``include``s the standard
    task and reads the local file(s) instead of the hub (see :mod:`lmbuild.evaluation.tasks`);
  * per causal checkpoint, runs the held-out task and the extra tasks in one
    ``lm_eval.simple_evaluate`` call with a pinned batch size, fixed seeds, and lm-eval's
    request cache in the scratch dir (``artifacts/_work/eval_report/<key>``, one cache file
    per checkpoint), so an interrupted evaluation resumes where it stopped;
  * greedy sample generations for ``eval.prompts`` from each checkpoint; tokens per word and
    per byte of its tokenizer on the held-out text; its parameters and FLOPs per token;
  * per encoder checkpoint (``model.objective: masked``, :func:`is_encoder`), masked-token
    accuracy and pseudo-perplexity on the same held-out documents (``encoders``: the module
    :mod:`lmbuild.evaluation.masked`, which holds everything an encoder's, passed in by the
    encoder's entry, scripts/eval_report_masked.py, so that a causal report's key holds no encoder
    code); lm-eval's tasks and the generations are skipped for it, with the reason in its entry;
  * the lineage: every upstream artifact's manifest (key, settings, inputs, counts);
  * writes ``report.json`` in the one shape of ``lmbuild/schemas/report.schema.json`` (every figure per
    checkpoint under ``checkpoints``, whatever its objective) and returns the headline figures
    for the manifest.

lm-eval's request cache is keyed by request text, not by model: it is safe here because each
cache file belongs to one checkpoint of one artifact key (so one batch size). A resumed run may
batch the remaining windows differently, which can move scores in the last float digits.

What it does not do: train, render (the ``report`` stage does: :mod:`lmbuild.evaluation.report`), write
``manifest.json`` (the runner does), or reach the Hugging Face hub unless the user unsets
``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``. Remote code is never trusted.
"""

from __future__ import annotations

import os

# HF_HUB_OFFLINE / HF_DATASETS_OFFLINE: set by lmbuild/__init__.py, imported before this module.
import importlib.metadata
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml
from transformers import GenerationConfig

from lmbuild.errors import UserError
from lmbuild.evaluation import tasks
from lmbuild.models.common import FLOPS_FORMULA, count_parameters, llama_flops_per_token
from lmbuild.store.artifact import read_manifest, write_json
from lmbuild.training import accel
from lmbuild.training.curve import read_curve

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


def find_task_yaml(name: str, folders: list[Path]) -> Path | None:
    """The YAML file that defines task ``name`` (``task: name``) in ``folders``, first match."""
    pattern = re.compile(rf"^task:\s*[\"']?{re.escape(name)}[\"']?\s*$", re.M)
    for folder in folders:
        for path in sorted(folder.rglob("*.yaml")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if pattern.search(text):
                return path
    return None


def write_local_data_task(spec: dict, index: int, task_dir: Path, include_path: Path | None) -> Path:
    """A task YAML that ``include``s the standard task ``spec["task"]`` and reads its documents
    from ``spec["data"]`` (lm-eval's own include mechanism: prompts, metrics and
    ``!function`` helpers stay the standard task's).

    The single data file becomes the split the task scores (``test_split``, else
    ``validation_split``); a folder's ``<split>.jsonl`` files keep their names, and splits it
    lacks are switched off. Raises UserError naming ``eval.tasks[i]``.
    """
    import lm_eval.tasks

    where = f"eval.tasks[{index}]"
    folders = ([include_path] if include_path else []) + [Path(lm_eval.tasks.__file__).parent]
    base = find_task_yaml(spec["task"], folders)
    if base is None:
        raise UserError(f"{where}.task: no lm-eval task named {spec['task']!r} (built in or in eval.include_path) to read local data for")
    # lm-eval's own loader, as its TaskManager reads a task: the include chain merged, local
    # keys winning, ``!function`` tags left unresolved (nothing of the task is imported here).
    try:
        plain = load_yaml(base, resolve_func=False, recursive=True)
    except Exception as exc:  # noqa: BLE001 (a malformed YAML or include cycle in the user's folder)
        raise UserError(f"{where}.task: lm-eval could not read {base}: {_first_line(exc)}") from exc
    files = tasks.data_files(spec["data"], f"{where}.data")
    scored = plain.get("test_split") or plain.get("validation_split")
    if not scored:
        raise UserError(f"{where}.task: {spec['task']} has no test or validation split to score")
    if "" in files:
        files = {scored: files[""]}
    split_keys = ("training_split", "validation_split", "test_split", "fewshot_split")
    splits = {k: (plain.get(k) if plain.get(k) in files else None) for k in split_keys}
    if not (splits["test_split"] or splits["validation_split"]):
        raise UserError(f"{where}.data: {spec['data']} has no file for the split {spec['task']} scores ({scored}); found {', '.join(files)}")
    fmt = {tasks.DATA_SUFFIXES[f.suffix] for f in files.values()}
    if len(fmt) != 1:
        raise UserError(f"{where}.data: mixes JSON and Parquet files")
    cfg = {
        "include": str(base),
        "task": spec["task"],
        "dataset_path": fmt.pop(),
        "dataset_name": None,
        # cache_dir keeps the datasets cache of these files out of ~/.cache.
        "dataset_kwargs": {"data_files": {k: str(v) for k, v in files.items()}, "cache_dir": str((task_dir / "hf_datasets").resolve())},
        **splits,
    }
    if spec["preprocessed"]:
        cfg["process_docs"] = None
    folder = task_dir / "local"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{spec['task']}.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


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
def generate_samples(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, dtype: str = "float32") -> list[dict]:
    """Greedy continuations of each prompt; stops early at the end-of-text token.

    ``dtype`` bfloat16: under bf16 autocast, as the scoring.

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
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
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


def _model_config(ckpt: Path) -> dict:
    try:
        config = json.loads((ckpt / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: config[k] for k in MODEL_CONFIG_KEYS if k in config}


def _folder_digest(path: Path | None) -> str | None:
    """sha256 over the task folder's files (the same digest that enters the eval_report key)."""
    return tasks.folder_digest(path) if path is not None else None


# The model types of encoders (lmbuild.models.modernbert), read from a checkpoint's config.json.
ENCODER_TYPES = ("modernbert",)


def is_encoder(ckpt: Path) -> bool:
    """The checkpoint folder holds an encoder (``model.objective: masked``)."""
    try:
        return json.loads((ckpt / "config.json").read_text()).get("model_type") in ENCODER_TYPES
    except (OSError, ValueError):
        return False


def _check_checkpoint(label: str, ckpt: Path) -> None:
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


def tokenizer_stats(tokenizer, texts: list[str]) -> dict:
    """Vocabulary size and tokens per whitespace word and per UTF-8 byte over ``texts``."""
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    words = sum(len(t.split()) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "vocab_size": len(tokenizer),
        "tokens": tokens,
        "words": words,
        "bytes": nbytes,
        "tokens_per_word": tokens / words if words else None,
        "tokens_per_byte": tokens / nbytes if nbytes else None,
    }


def model_summary(model, seq_len: int) -> dict:
    """Config, parameters (each shared tensor once) and training FLOPs per token (lmbuild.models.common)."""
    config = model.config.to_dict()
    params = count_parameters(model)
    summary = {"config": {k: config[k] for k in MODEL_CONFIG_KEYS if k in config}, "parameters": params, "seq_len": seq_len}
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")
    if all(k in config for k in needed):
        m = {k: config[k] for k in needed}
        summary["flops_per_token"] = llama_flops_per_token(m, config["vocab_size"], seq_len)
        summary["flops_formula"] = FLOPS_FORMULA
    return summary


def evaluate_causal(ck: dict, tm: TaskManager, extra_names: list[str], heldout: dict, settings: dict, work: Path, seq_len: int) -> dict:
    """A causal checkpoint's figures: lm-eval (held-out perplexity + extra tasks), generations,
    tokenizer and model. The request cache is per checkpoint: lm-eval keys it by request text,
    not by model."""
    s = settings
    ckpt, label = ck["path"], ck["label"]
    tops, leaves = load_extra_tasks(tm, extra_names)
    samples = limit_samples(leaves, s.get("limit"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # eval.dtype bfloat16: bf16 autocast over the fp32 weights, as in training; log-softmax in fp32 either way.
    dtype = accel.eval_dtype(s.get("dtype", "auto"))
    model_args = {"pretrained": str(ckpt), "dtype": "float32", "mixed_precision_dtype": None if dtype == "float32" else dtype,
                  "softmax_dtype": "float32", "trust_remote_code": False}
    lm = ResumableHFLM(**model_args, batch_size=s["batch_size"], device=device)
    seed = s["seed"]
    t0 = time.time()
    results = simple_evaluate(
        model=lm,
        tasks=[HELDOUT_TASK, *tops],
        task_manager=tm,
        batch_size=s["batch_size"],
        device=device,
        use_cache=str(work / f"lm_eval_cache_{label}"),
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
    tok = tokenizer_stats(lm.tokenizer, heldout["texts"])
    n_tokens = tok["tokens"]
    token_loss = held["bits_per_byte"] * math.log(2) * heldout["bytes"] / n_tokens if held["bits_per_byte"] is not None else None

    t0 = time.time()
    generations = generate_samples(lm.model, lm.tokenizer, list(s["prompts"]), s["max_new_tokens"], seed, dtype)
    gen_seconds = time.time() - t0

    counts = ck["manifest"].get("counts", {}) or {}
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
    part = {
        "headline": headline,
        "metrics": metrics,
        "extra_tasks": extra_main,
        "generations": generations,
        "tokenizer": tok,
        "model": model_summary(lm.model, seq_len),
        "lm_eval": {
            "model_args": model_args,
            "device": device,
            "dtype": dtype,
            "samples_per_task": {t: (m.get("n_samples") or {}).get("effective") for t, m in metrics.items()},
            "seeds": {k: cfg.get(k) for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")},
            "bootstrap_iters": cfg.get("bootstrap_iters"),
            "max_length": lm.max_length,
        },
        "seconds": {"lm_eval": round(eval_seconds, 3), "generation": round(gen_seconds, 3)},
    }
    del lm
    return part


def evaluate_checkpoint(ck: dict, tm: TaskManager | None, extra_names: list[str], heldout: dict, settings: dict, work: Path, seq_len: int, encoders=None) -> dict:
    """One checkpoint's report entry (lmbuild/schemas/report.schema.json): its figures by its objective
    (a causal LM here, an encoder by ``encoders.evaluate_encoder``, :mod:`lmbuild.evaluation.masked`),
    and what every entry has (run, tokens seen, training).

    ``tm``: the task manager, needed only when the checkpoint is causal."""
    ckpt, label, manifest = ck["path"], ck["label"], ck["manifest"]
    _check_checkpoint(label, ckpt)
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
    shards = inputs["shards"]
    specs = tasks.parse(s.get("tasks") or [])
    extra_names = [t["task"] for t in specs]

    task_dir = Path(ctx.work) / "tasks"
    heldout = write_heldout_task(shards / "val_docs.jsonl", task_dir, s["val_docs"])
    include_path = _include_path(s.get("include_path"))
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
            "model": "hf (lmbuild.evaluation.eval_report.ResumableHFLM)" if causal else None,
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
