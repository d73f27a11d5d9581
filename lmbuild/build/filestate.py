"""Local files by content: their sha256 through a small state cache, as DVC does.

Keys must follow the bytes of a user's files, not their path or modification time (a ``git
clone``, ``cp`` or ``rsync`` without ``-t``, or a corpus moved to the cluster's file system
changes those and nothing else). Hashing a 100 GB corpus at every parse is not acceptable,
so the hash of each file is remembered under its ``(device, inode, size, mtime_ns)``: a file
is read again only when one of those changes (a touch rehashes it once, and its key stays).

What this does not do: notice an edit that keeps size and mtime (as no stat cache can); share
its cache between machines (inodes are per file system: a new machine hashes once).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

CHUNK = 4 << 20


class StateCache:
    """sha256 of files, remembered by ``(device, inode, size, mtime_ns)`` in a JSON file.

    ``path=None`` keeps the cache in memory only. Several processes may share one file: each
    merges what is on disk before it writes, and writes through a rename; a lost update costs
    one rehash, never a wrong hash.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, str] = self._load()
        self.dirty = False
        self.used: set[str] = set()
        self.hashed_bytes = 0
        self.hash_seconds = 0.0

    def _load(self) -> dict:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # a damaged cache only costs a rehash

    def digest(self, path: str | os.PathLike) -> str:
        st = os.stat(path)
        stat_key = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        found = self.entries.get(stat_key)
        self.used.add(stat_key)
        if found:
            return found
        t0 = time.perf_counter()
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        self.hash_seconds += time.perf_counter() - t0
        self.hashed_bytes += st.st_size
        self.entries[stat_key] = h.hexdigest()
        self.dirty = True
        return h.hexdigest()

    def folder_digest(self, folder: str | os.PathLike) -> str:
        """sha256 over a folder's files: their names relative to it and their digests
        (``__pycache__`` left out)."""
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        return hashlib.sha256(json.dumps([[str(p.relative_to(folder)), self.digest(p)] for p in files]).encode()).hexdigest()

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        # An older stat of a file looked up here (touched, edited) is dropped, so the cache
        # keeps one entry per file instead of growing with every touch.
        files = {k.rsplit(":", 2)[0] for k in self.used}
        merged = {k: v for k, v in {**self._load(), **self.entries}.items() if k in self.used or k.rsplit(":", 2)[0] not in files}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, sort_keys=True))
        os.replace(tmp, self.path)
        self.dirty = False
