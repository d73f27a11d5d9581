"""A stage's code set: the source files whose bytes its key covers, found by reading imports.

From the scripts a stage's rules run (``Stage.entry_paths``: ``scripts/<name>.py`` and its parts'
scripts, or an encoder's own entry), every ``lmbuild`` module they import (anywhere in the file:
function-level imports too), the modules those import, and so on; with each module its parent
packages' ``__init__.py`` (Python runs them first), and the data files the stage declares
(``Stage.files``: templates, schemas). So the set is what the stage's jobs run.

The walk stops at the engine (:data:`ENGINE`): parse-time code (lmbuild.build), job plumbing
(lmbuild.store, lmbuild.errors) and the command (lmbuild.cli), which move bytes, write manifests
and compute keys but never an artifact's content; editing them re-keys nothing (a change there
that must rebuild everything bumps lmbuild.build.keys.KEY_LEN). The engine imports no stage
module, only the shared leaves (:data:`LEAVES`), which are in the code sets of the stages that
import them. The import graph of lmbuild has no circle (tests/build/test_plan.py walks it).

What this module does not do: import or run the code it reads.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lmbuild"

# Engine: parse time, job plumbing, the command. In no key.
ENGINE = ("lmbuild.build", "lmbuild.store", "lmbuild.errors", "lmbuild.cli")
# Stage-side modules that the engine reads too (which files a source names, a dataset's data
# files, the raw fan-out, per-source cleaning settings, layer plans, the wsd schedule's
# arithmetic, the loss curve's reader, eval task entries). Each imports nothing of lmbuild but
# lmbuild.errors and other leaves, and nothing heavy at import time; editing one re-keys the
# stages that import it.
LEAVES = (
    "lmbuild.numbers",  # a figure read as a number: tracking and the report stages
    "lmbuild.data.files", "lmbuild.data.hub", "lmbuild.data.groups", "lmbuild.data.overrides", "lmbuild.data.eval_sources",
    "lmbuild.models.layer_plan", "lmbuild.training.schedule", "lmbuild.training.curve", "lmbuild.evaluation.tasks",
)


def is_engine(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in ENGINE)


def module_path(name: str) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), or None where the name is
    not a module (a function or class imported from one)."""
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for cand in (PACKAGE / rel / "__init__.py", PACKAGE / rel.with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def imports(path: Path) -> set[str]:
    """lmbuild names a source file imports, anywhere in it (function-level imports too): each
    module, and ``module.name`` for each name taken from one (a submodule, or not a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lmbuild" and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lmbuild")
    return out


def module_imports(module: str) -> set[str]:
    """The lmbuild modules (not names) that ``module``'s own file imports."""
    return {m for m in imports(module_path(module)) if module_path(m) is not None and m != module}


@lru_cache(maxsize=None)
def walk(scripts: tuple[Path, ...]) -> tuple[str, ...]:
    """Every lmbuild module outside the engine that ``scripts`` reach through imports, with
    their parent packages."""
    todo = [m for s in scripts for m in imports(s)]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen or is_engine(mod) or module_path(mod) is None:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the packages Python runs first
        todo.extend(imports(module_path(mod)))
    return tuple(sorted(seen))


def code_files(scripts: tuple[Path, ...], files: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``scripts``, the files of the modules they reach (:func:`walk`) and the data ``files``,
    relative to the repo root."""
    found = set(scripts) | {module_path(m) for m in walk(tuple(scripts))} | {ROOT / f for f in files}
    return tuple(sorted(str(f.relative_to(ROOT)) for f in found if f.exists()))


@lru_cache(maxsize=None)
def file_digest(rel: str) -> str:
    """sha256 of one source file (relative to the repo root): the manifest's ``code_digests``,
    so that ``lmbuild why`` can name the code file that changed."""
    return hashlib.sha256((ROOT / rel).read_bytes()).hexdigest()


def files_hash(rels) -> str:
    """sha256 over source files (paths relative to the repo root, and their bytes)."""
    h = hashlib.sha256()
    for rel in rels:
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    return h.hexdigest()
