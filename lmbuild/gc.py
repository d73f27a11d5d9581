"""Garbage collection of an artifact store: what the current config and its variants no
longer reach, and what crashed or finished builds left behind (DVC's ``gc``, Bazel's ``clean``).

``snakemake gc`` lists, ``snakemake gc_remove`` removes:
  * artifacts ``<store>/<stage>/<key>`` whose (stage, key) the plan does not reach;
  * temporary folders ``.tmp-*`` whose writer is dead (their flock is free);
  * fan-out parts (``raw_parts/<key>``, ``cleaned_parts/<key>``, ``_parts/deduplicated/<key>``, ``shards_parts/<key>``) of an artifact
    that is complete or unreachable, and empty part folders;
  * ``_work`` scratch of an artifact that is complete or unreachable (a reachable, unfinished
    one keeps its scratch: training resumes from it), and free lock files;
  * stable-phase caches ``_stable/<key>`` (lmbuild.train: where a longer wsd run continues)
    that no wsd run of the config reaches (``("_stable", key)`` not in ``reachable``), and
    their dead writers' temporary folders. A reachable cache is kept whole.
The listing says how many bytes removal frees (a hard-linked file counts only if every link
goes: the cleaned artifact links its parts' files).

What it does not do: touch anything whose build lock or temp-folder lock another process holds,
look outside the store, or know other checkouts' configs: in a store shared by several
checkouts, an artifact only another config reaches counts as unreachable here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

from lmbuild.artifact import is_complete, try_lock

KEY = re.compile(r"[0-9a-f]{16}")
PART_FOLDERS = {"raw_parts": "raw", "cleaned_parts": "cleaned", "_parts/deduplicated": "deduplicated", "shards_parts": "shards"}


@dataclasses.dataclass
class Entry:
    kind: str  # artifact | temp | parts | work | lock | empty | stable
    path: Path
    why: str


def _busy(path: Path) -> bool:
    """Whether another process holds an flock on ``path`` (a folder or a lock file)."""
    if not path.exists():
        return False
    try:
        fd = try_lock(path)
    except OSError:
        return True
    if fd is None:
        return True
    os.close(fd)
    return False


def _stage_of(name: str, stages: list[str]) -> str | None:
    """The plan stage of a runner stage name: 'cleaned_part' -> cleaned, 'deduplicated.map-001' ->
    deduplicated."""
    hits = [s for s in stages if name == s or name.startswith(s + ".") or name.startswith(s + "_")]
    return max(hits, key=len) if hits else None


def scan(root: Path, reachable: set[tuple[str, str]], stages: list[str]) -> list[Entry]:
    """Everything in the store at ``root`` that ``gc_remove`` would remove, sorted by path."""
    root = Path(root)
    out: list[Entry] = []
    done = lambda stage, key: (stage, key) not in reachable or is_complete(root / stage / key)  # noqa: E731
    for stage in stages:
        folder = root / stage
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".tmp-"):
                if not _busy(p):
                    out.append(Entry("temp", p, "temporary folder of a dead writer"))
            elif p.is_dir() and KEY.fullmatch(p.name) and (stage, p.name) not in reachable:
                if not _busy(root / "_locks" / f"{stage}-{p.name}.lock"):
                    out.append(Entry("artifact", p, "not reached by the config or its variants"))
    for rel, stage in PART_FOLDERS.items():
        folder = root / rel
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.name == "_work":
                continue
            if p.is_dir() and KEY.fullmatch(p.name):
                if not any(p.iterdir()):
                    out.append(Entry("empty", p, "empty part folder"))
                elif done(stage, p.name) and not _busy(root / "_locks" / f"{stage}-{p.name}.lock"):
                    out.append(Entry("parts", p, f"parts of a {'complete' if (stage, p.name) in reachable else 'unreachable'} {stage} artifact"))
    for work in sorted({root / "_work", *(root / rel / "_work" for rel in PART_FOLDERS)}):
        if not work.is_dir():
            continue
        for sdir in sorted(work.iterdir()):
            stage = _stage_of(sdir.name, stages)
            if not sdir.is_dir() or stage is None:
                continue
            if not any(sdir.iterdir()):
                out.append(Entry("empty", sdir, "empty scratch folder"))
                continue
            for p in sorted(sdir.iterdir()):
                key = p.name.split(".")[0]
                if p.suffix == ".lock":
                    if not _busy(p):
                        out.append(Entry("lock", p, "lock file nobody holds"))
                elif (p.is_dir() and KEY.fullmatch(key) and done(stage, key) and not _busy(Path(f"{p}.lock"))
                      and not _busy(root / "_locks" / f"{stage}-{key}.lock")):
                    out.append(Entry("work", p, f"scratch of a {'complete' if (stage, key) in reachable else 'unreachable'} {stage} artifact"))
    stable = root / "_stable"
    if stable.is_dir():
        for p in sorted(stable.iterdir()):
            if not (p.is_dir() and KEY.fullmatch(p.name)):
                continue
            if ("_stable", p.name) not in reachable:
                out.append(Entry("stable", p, "stable-phase cache that no wsd run of the config reaches"))
            else:
                out += [Entry("temp", t, "temporary folder of a dead writer") for t in sorted(p.glob(".tmp-*")) if not _busy(t)]
    locks = root / "_locks"
    if locks.is_dir():
        for p in sorted(locks.glob("*.lock")):
            if not _busy(p):
                out.append(Entry("lock", p, "build lock nobody holds"))
    return out


def freed_bytes(entries: list[Entry]) -> int:
    """Bytes that removing ``entries`` frees: each inode once, and only if all its links go."""
    seen: dict[tuple[int, int], list[int]] = {}
    for e in entries:
        paths = [e.path] if e.path.is_file() else (p for p in e.path.rglob("*") if p.is_file() and not p.is_symlink())
        for p in paths:
            st = p.lstat()
            rec = seen.setdefault((st.st_dev, st.st_ino), [st.st_size, st.st_nlink, 0])
            rec[2] += 1
    return sum(size for size, nlink, count in seen.values() if count >= nlink)


def remove(entries: list[Entry], root: Path) -> None:
    for e in entries:
        if e.path.is_dir() and not e.path.is_symlink():
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            e.path.unlink(missing_ok=True)
    # Folders the removals emptied (e.g. _work/<stage>/), two levels below the store or deeper:
    # never the store or its stage folders.
    root = Path(root).resolve()
    for e in entries:
        parent = e.path.parent.resolve()
        while len(parent.relative_to(root).parts) >= 2 and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def report(entries: list[Entry], root: Path, removed: bool) -> str:
    freed = freed_bytes(entries)
    lines = [f"{e.kind:8s} {e.path}  ({e.why})" for e in entries]
    if not entries:
        lines.append(f"gc: nothing to remove in {root}")
    elif removed:
        lines.append(f"gc: removed {len(entries)} entries, {_human(freed)} ({freed} bytes) freed")
    else:
        lines.append(f"gc: {len(entries)} entries, {_human(freed)} ({freed} bytes) would be freed; "
                     "nothing removed (dry run): `snakemake gc_remove` removes them")
    return "\n".join(lines)


def gc(root: Path, reachable: set[tuple[str, str]], stages: list[str], *, do_remove: bool = False) -> str:
    """List (and with ``do_remove``, remove) what the store at ``root`` no longer needs; the report."""
    entries = scan(Path(root), reachable, stages)
    text = report(entries, Path(root), do_remove)  # sizes before removing
    if do_remove:
        remove(entries, root)
    return text
