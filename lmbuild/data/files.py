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
import io
import lzma
import os
from pathlib import Path

from lmbuild.errors import UserError

MAGIC = set("*?[")

# Magic bytes of the compressed formats read here (bz2: "BZh", a block size digit, then the
# first block's magic, so a text that starts with "BZh" is not bz2); zstd through `zstandard`.
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


def source_name(src: dict) -> str:
    """The label stored in the ``source`` column: ``name``, or ``<type>:<path>`` with a local
    path taken below its folder (``data/**/*.jsonl`` -> ``jsonl:**/*.jsonl``), so that a corpus
    that moves keeps its labels, ids and keys. (Here, not in sources.py, because the config check
    names sources too: data.mixture, data.clean.per_source.)"""
    if src.get("name"):
        return src["name"]
    if src["type"] == "embedded":
        return src["type"]
    path = src.get("prompts") if src["type"] == "synthetic" else src.get("path")
    return f"{src['type']}:{relative_pattern(path) if src['type'] != 'hf' else path}"


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


class _ZstdReader(io.RawIOBase):
    """A zstd file as a stream of bytes, frame after frame, one input chunk at a time.

    zstandard's own stream reader returns a truncated file's bytes as if it had ended there;
    this one raises EOFError as gzip, bz2 and lzma do. Memory holds one zstd window (8 MiB at
    the default levels, up to 2 GiB for ``--long=31``), never the whole file.
    """

    CHUNK = 1 << 20

    def __init__(self, path: str):
        import zstandard

        self._error = zstandard.ZstdError
        self._dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
        self._fh = open(path, "rb")
        self._obj = self._dctx.decompressobj()
        self._pending = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self._pending:
            chunk = self._fh.read(self.CHUNK)
            if not chunk:
                if self._in_frame:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
                return 0
            while chunk:
                self._in_frame = True
                try:
                    self._pending += self._obj.decompress(chunk)
                except self._error as exc:  # corrupt data: an OSError, as gzip's BadGzipFile is
                    raise OSError(f"corrupt zstd data: {exc}") from None
                chunk = b""
                if self._obj.eof:  # a frame ended: the rest is the next frame
                    self._in_frame = False
                    chunk = self._obj.unused_data
                    self._obj = self._dctx.decompressobj()
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _zstd_open(path: str, mode: str = "rb"):
    return io.BufferedReader(_ZstdReader(path), buffer_size=1 << 20)


def open_binary(path: str):
    """``path`` opened for reading bytes, decompressed (as a stream) when its content is gzip,
    bz2, xz or zstd. Does not look at the file's name."""
    kind = compression_of(path)
    return {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open, "zstd": _zstd_open}.get(kind, open)(path, "rb")
