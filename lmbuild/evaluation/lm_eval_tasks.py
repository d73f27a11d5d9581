"""The lm-eval tasks an evaluation runs, as files and loaded tasks (stage ``eval_report``).

  * ``lmbuild_heldout`` (:data:`HELDOUT_TASK`): written into the scratch dir, rolling
    log-likelihood (word/byte perplexity, bits per byte, as lm-eval's wikitext task) over the
    first ``eval.val_docs`` held-out validation documents of the ``shards`` artifact;
  * for each ``eval.tasks`` entry with ``data``, a task YAML that ``include``s the standard
    task and reads the local file(s) instead of the hub (the entries: :mod:`lmbuild.evaluation.tasks`);
  * the TaskManager that finds them, ``eval.include_path``'s tasks and, only where a name
    needs it, lm-eval's own; the extra tasks loaded once each, and ``eval.limit`` as lm-eval's
    per-task ``samples``.

Every unknown or unloadable task is a UserError naming ``eval.tasks`` or ``eval.include_path``.
What it does not do: run a model (:mod:`lmbuild.evaluation.causal`) or reach the hub itself
(a hub task's data is lm-eval's to fetch, and the hub is off unless the user turns it on).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from lmbuild.errors import UserError
from lmbuild.evaluation import tasks

HELDOUT_TASK = "lmbuild_heldout"


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


def include_folder(value: str | None) -> Path | None:
    """``eval.include_path`` as a resolved folder (None where unset); UserError where it is none."""
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
