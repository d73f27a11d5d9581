"""``eval.tasks`` entries and the content of the local files they read.

An entry is either a task name (``hellaswag``: lm-eval's own, whose data comes from the hub,
or a task in ``eval.include_path``) or a standard task with a local copy of its data::

    eval:
      tasks:
        - arc_easy                                  # from the hub
        - {task: hellaswag, data: ../shared/data/eval/hellaswag_val.jsonl, preprocessed: true}

``data`` is a .jsonl/.json/.parquet file holding the split the task scores (its
``test_split``, else ``validation_split``), or a folder with one such file per split named
after it (``validation.jsonl``, ``train.jsonl``...). ``preprocessed: true`` says the documents
already have the fields that the task's ``process_docs`` would produce (as lm-eval's own
preprocessed HellaSwag does), so ``process_docs`` is skipped.

This module is imported when the workflow is parsed (``lmbuild.build.graph`` puts
:func:`fingerprint` into the eval_report key), so it imports nothing heavy: it does not
load lm-eval, and does not check that a name is a real task (``lmbuild.evaluation.lm_eval_tasks`` does).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from lmbuild.errors import UserError

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def parse(tasks: list) -> list[dict]:
    """Entries -> ``{"task", "data", "preprocessed"}`` dicts (``data`` None for a plain name)."""
    out = []
    for i, entry in enumerate(tasks or []):
        if isinstance(entry, str):
            out.append({"task": entry, "data": None, "preprocessed": False})
        else:
            out.append({"task": entry["task"], "data": entry.get("data"), "preprocessed": bool(entry.get("preprocessed", False))})
    names = [e["task"] for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"eval.tasks: task {dup[0]!r} is listed twice")
    return out


def data_files(path: str, where: str) -> dict[str, Path]:
    """split name -> file for a ``data`` entry; a single file is the split ``""`` (the scored one)."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix not in DATA_SUFFIXES:
            raise UserError(f"{where}: {path}: expected a {'/'.join(DATA_SUFFIXES)} file")
        return {"": p.resolve()}
    if p.is_dir():
        files = {f.stem: f.resolve() for f in sorted(p.iterdir()) if f.is_file() and f.suffix in DATA_SUFFIXES}
        if not files:
            raise UserError(f"{where}: {path}: no {'/'.join(DATA_SUFFIXES)} file in the folder")
        return files
    raise UserError(f"{where}: {path}: no such file or folder")


def _hash_files(files: list[Path], root: Path | None = None) -> str:
    h = hashlib.sha256()
    for f in files:
        name = str(f.relative_to(root)) if root else f.name
        h.update(name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def folder_digest(path: Path) -> str:
    """sha256 over a folder's files (relative names and bytes), ``__pycache__`` left out."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return _hash_files(files, path)


def fingerprint(eval_settings: dict) -> dict:
    """Content hashes of every local file the evaluation reads: ``eval.include_path`` and each
    task's ``data``. They enter the eval_report key, so editing a task YAML or a data file
    rebuilds the report (the settings alone hold only their paths)."""
    out: dict = {"include_path": None, "data": {}}
    inc = eval_settings.get("include_path")
    if inc:
        path = Path(inc).expanduser()
        if not path.is_dir():
            raise UserError(f"eval.include_path: folder not found: {inc}")
        out["include_path"] = folder_digest(path.resolve())
    for i, spec in enumerate(parse(eval_settings.get("tasks") or [])):
        if spec["data"]:
            files = data_files(spec["data"], f"eval.tasks[{i}].data")
            out["data"][spec["task"]] = {split: _hash_files([f]) for split, f in files.items()}
    return out


def wikitext_pages(path: Path) -> list[str]:
    """A WikiText release file (``wiki.valid.tokens``, ``valid.txt``...) split into articles, as
    the document-level copy that lm-eval's ``wikitext`` task reads (``EleutherAI/wikitext_document_level``):
    an article starts at a top-level heading line `` = Title = `` and keeps its lines as they are."""
    pages: list[list[str]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines(keepends=True):
        if re.match(r"^ = [^=].* = \n?$", line):
            pages.append([])
        if pages:
            pages[-1].append(line)
    return ["".join(p) for p in pages if "".join(p).strip()]


def main(argv: list[str]) -> int:
    """``python -m lmbuild.evaluation.tasks wikitext IN.txt OUT.jsonl``: {"page": ...} per article."""
    if len(argv) != 3 or argv[0] != "wikitext":
        print("usage: python -m lmbuild.evaluation.tasks wikitext IN.txt OUT.jsonl", file=sys.stderr)
        return 2
    pages = wikitext_pages(Path(argv[1]))
    with open(argv[2], "w", encoding="utf-8") as f:
        for page in pages:
            f.write(json.dumps({"page": page}, ensure_ascii=False) + "\n")
    print(f"{len(pages)} articles -> {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
