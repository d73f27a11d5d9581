"""Which local files a source path names, and the names they go by.

A path in the config is a file or a glob relative to the working directory. Its files are
named relative to the glob's folder (``data/**/*.jsonl`` -> ``a/b.jsonl``), so that ids,
labels and keys stay the same when the corpus is copied or moved elsewhere.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from lmbuild.errors import UserError

MAGIC = set("*?[")


def pattern_root(pattern: str) -> str:
    """The folder a glob is anchored at: its longest leading part without wildcards
    (``data/**/*.jsonl`` -> ``data``; a plain file ``corpus/a.jsonl`` -> ``corpus``)."""
    parts = Path(pattern).parts
    fixed = []
    for p in parts:
        if MAGIC & set(p):
            break
        fixed.append(p)
    if len(fixed) == len(parts):  # no wildcard: the file's folder
        fixed = fixed[:-1]
    return str(Path(*fixed)) if fixed else "."


def relative_pattern(pattern: str) -> str:
    """The part of ``pattern`` below its root: what names a source wherever the corpus lives."""
    return os.path.relpath(pattern, pattern_root(pattern))


def match_files(pattern: str, where: str) -> list[tuple[str, str]]:
    """``(path, name relative to the pattern's root)`` of every file ``pattern`` matches, in name
    order. A file reached twice (through a symbolic link, or a link loop under ``**``) is
    listed once, under its first name; UserError naming ``where`` if nothing matches."""
    root = pattern_root(os.path.expanduser(pattern))
    seen: set[str] = set()
    out = []
    for p in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
        if not os.path.isfile(p):
            continue
        real = os.path.realpath(p)
        if real in seen:
            continue
        seen.add(real)
        out.append((p, os.path.relpath(p, root)))
    if not out:
        raise UserError(f"{where}: no file matches {pattern!r}")
    return out
