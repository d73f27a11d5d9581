"""The evaluated tasks' local data as decontamination sources of stage ``deduplicated``.

The build knows what it will evaluate (``eval.tasks``), so by default
(``data.dedup.decontaminate.eval_tasks: true``) every evaluated task with local data is a
decontamination source: its files' content enters the deduplicated key (the ``locate`` hook)
and a training document sharing a 13-gram with it is dropped (lmbuild.data.decontamination).
A task has local data when its ``eval.tasks`` entry has ``data`` (every split file but
``train``), or when a task YAML in ``eval.include_path`` names it and reads local files
through ``dataset_kwargs.data_files`` (every split but ``train``).

``data.dedup.decontaminate.skip_tasks`` opts tasks out; ``data.dedup.decontaminate.tasks``
names tasks that must be sources (a UserError if one is not evaluated or has no local data).

Imported when the workflow is parsed (the stage table): nothing heavy. What it does not do:
follow a task YAML's ``include:``, load lm-eval, read the hub (a hub task's data is not local,
and is not a source), or cover the held-out perplexity documents, which come from the
``shards`` artifact downstream of this stage, not from a local file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lmbuild.errors import UserError
from lmbuild.evaluation.tasks import data_files, parse


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads lm-eval's ``!function`` (and any other tag) as a plain value."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _include_path_tasks(include: str | None) -> dict[str, list[str]]:
    """task name -> its local data files, for the task YAMLs of ``eval.include_path``."""
    if not include:
        return {}
    folder = Path(include).expanduser()
    if not folder.is_dir():
        raise UserError(f"eval.include_path: folder not found: {include}")
    out: dict[str, list[str]] = {}
    for f in sorted(folder.rglob("*.yaml")):
        try:
            doc = yaml.load(f.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (a SafeLoader)
        except (yaml.YAMLError, UnicodeDecodeError):
            continue  # lm-eval reports a broken YAML when it loads the task
        if not isinstance(doc, dict) or not isinstance(doc.get("task"), str):
            continue
        files = (doc.get("dataset_kwargs") or {}).get("data_files") if isinstance(doc.get("dataset_kwargs"), dict) else None
        if isinstance(files, str):
            files = {"": files}
        if not isinstance(files, dict):
            continue
        paths = []
        for split, value in sorted(files.items()):
            if split == "train":
                continue
            for p in [value] if isinstance(value, str) else (value or []):
                if isinstance(p, str) and Path(p).expanduser().is_file():
                    paths.append(p)
        if paths:
            out.setdefault(doc["task"], paths)
    return out


def task_sources(eval_settings: dict, decontaminate: dict) -> list[dict]:
    """``[{"task", "path"}]``: one entry per local data file of every evaluated task that is a
    decontamination source, in ``eval.tasks`` order."""
    specs = parse(eval_settings.get("tasks") or [])
    names = [s["task"] for s in specs]
    wanted = list(decontaminate.get("tasks") or [])
    for name in wanted:
        if name not in names:
            raise UserError(f"data.dedup.decontaminate.tasks: {name!r} is not an evaluated task (eval.tasks)")
    if not decontaminate.get("eval_tasks", True) and not wanted:
        return []
    skip = set(decontaminate.get("skip_tasks") or [])
    both = sorted(skip & set(wanted))
    if both:
        raise UserError(f"data.dedup.decontaminate: task {both[0]!r} is in both tasks and skip_tasks")
    included = _include_path_tasks(eval_settings.get("include_path"))
    out = []
    for i, spec in enumerate(specs):
        name = spec["task"]
        if name in skip or (not decontaminate.get("eval_tasks", True) and name not in wanted):
            continue
        if spec["data"]:
            files = data_files(spec["data"], f"eval.tasks[{i}].data")
            paths = [str(p) for split, p in files.items() if split != "train"]
        else:
            paths = included.get(name, [])
        if not paths and name in wanted:
            raise UserError(
                f"data.dedup.decontaminate.tasks: task {name!r} has no local data to decontaminate against "
                "(give eval.tasks an entry with data:, or a task YAML in eval.include_path with local data_files)"
            )
        out += [{"task": name, "path": p} for p in paths]
    return out
