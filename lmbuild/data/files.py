"""Which local files a source path names, and the names they go by.

A path in the config is a file or a glob relative to the working directory. Its files are
named relative to the glob's folder (``data/**/*.jsonl`` -> ``a/b.jsonl``), so that ids,
labels and keys stay the same when the corpus is copied or moved elsewhere. Globs follow
symlinks without looping (:func:`glob_files`); files are opened by their content, compressed
or not (:func:`open_binary`).
"""

from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import os
from pathlib import Path

from lmbuild.errors import UserError

MAGIC = set("*?[")

# Magic bytes of the compressed formats the standard library reads (bz2: "BZh", a block
# size digit, then the first block's magic, so a text that starts with "BZh" is not bz2).
_GZIP, _XZ, _ZSTD = b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"


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
    order; UserError naming ``where`` if nothing matches.

    Symlinks are followed, but each folder is walked once (:func:`glob_files`): a link back up
    the tree (a loop) or a second link to a folder already walked adds nothing. A file reached
    twice (through a symbolic link) is listed once, under its first name.
    """
    pattern = os.path.expanduser(pattern)
    root = pattern_root(pattern)
    out = [(p, os.path.relpath(p, root)) for p in glob_files(pattern)]
    if not out:
        raise UserError(f"{where}: no file matches {pattern!r}")
    return out


def glob_files(pattern: str) -> list[str]:
    """Files matching ``pattern`` (a path or a glob, ``**`` recursive as in :mod:`glob`),
    sorted, each real file once.

    Symlinks are followed, but a directory is walked only once: a link back up the tree (a
    loop), or a second link to a folder already walked, adds nothing, so ``data/**/*.jsonl``
    cannot read one file twice or recurse until the OS gives up (Python's ``glob`` follows a
    loop ~40 levels deep and with two loops explodes exponentially). A file reached by two
    paths (a symlinked file beside its target) is kept once, under its first path in sorted
    order. Hidden files and folders match only a pattern that names
    them, as in :mod:`glob`.
    """
    parts = pattern.split(os.sep)
    if "**" not in parts:
        found = glob.glob(pattern)
    else:
        i = parts.index("**")
        head = os.sep.join(parts[:i]) or (os.sep if pattern.startswith(os.sep) else "")
        rest = os.sep.join(parts[i + 1 :]) if parts[i + 1 :] else "*"  # "dir/**": every file below
        bases = glob.glob(head) if glob.has_magic(head) else [head or os.curdir]
        found = []
        for base in sorted(bases):
            for folder in _walk_once(base):
                # The pattern's tail (which may hold another "**") inside each folder.
                found += glob_files(os.path.join(glob.escape(folder), rest))
        if not head:  # glob reports "./x" as "x" for a relative pattern
            found = [f[2:] if f.startswith(os.curdir + os.sep) else f for f in found]
    files, seen = [], set()
    for f in sorted(set(found)):
        real = os.path.realpath(f)
        if real not in seen and os.path.isfile(f):
            seen.add(real)
            files.append(f)
    return files


def _walk_once(base: str) -> list[str]:
    """``base`` and every folder below it (symlinks followed, hidden ones skipped), each real
    folder once, in sorted depth-first order."""
    out, seen = [], set()

    def visit(folder: str) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            return
        seen.add(real)
        out.append(folder)
        try:
            names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and e.is_dir())
        except OSError:  # unreadable, or a dangling link: glob skips those too
            return
        for name in names:
            visit(os.path.join(folder, name))

    if os.path.isdir(base):
        visit(base)
    return out


def compression_of(path: str) -> str | None:
    """``"gzip"``, ``"bz2"``, ``"xz"`` or ``"zstd"`` by the file's first bytes, else None: a
    ``.jsonl`` that is really gzip is read as gzip, whatever its name says."""
    with open(path, "rb") as fh:
        head = fh.read(10)
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return "bz2"
    if head.startswith(_XZ):
        return "xz"
    if head.startswith(_ZSTD):
        return "zstd"
    return None


class CompressionNotSupported(OSError):
    """A compressed format that the standard library cannot read (zstd on Python < 3.14)."""


def open_binary(path: str):
    """``path`` opened for reading bytes, decompressed when its content is gzip, bz2 or xz.

    Raises :class:`CompressionNotSupported` for zstd. Does not look at the file's name."""
    kind = compression_of(path)
    if kind == "zstd":
        raise CompressionNotSupported("the file is zstd-compressed, which is not read yet: decompress it (zstd -d)")
    return {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(kind, open)(path, "rb")
