"""Local input files: glob patterns matched without symlink loops, compressed files opened by
their content.

:func:`match_files` is what ``data.sources[].path`` and the source fingerprints of
:mod:`lmbuild.plan` both use, so ingest reads exactly the files that entered the key.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import os

# Magic bytes of the compressed formats the standard library reads (bz2: "BZh", a block
# size digit, then the first block's magic, so a text that starts with "BZh" is not bz2).
_GZIP, _XZ, _ZSTD = b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"


def match_files(pattern: str) -> list[str]:
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
        rest = os.sep.join(parts[i + 1 :]) or "*"  # "dir/**" matches every file below dir
        bases = glob.glob(head) if glob.has_magic(head) else [head or os.curdir]
        found = []
        for base in sorted(bases):
            for folder in _walk_once(base):
                # The pattern's tail (which may hold another "**") inside each folder.
                found += match_files(os.path.join(glob.escape(folder), rest))
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
