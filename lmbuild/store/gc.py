"""Garbage collection of an artifact store that several checkouts may share: what no
registered config reached lately and no running build holds, and what crashed or finished
builds left behind (DVC's ``gc``, Bazel's ``clean``).

``snakemake gc`` lists what stays and what goes, each with why; ``snakemake gc_remove``
removes what goes. Kept are the ``stage/key``s that
  * this checkout's config and its variants reach now;
  * a running build holds (``<store>/_refs/live/``, lmbuild.store.registry): always, whatever the scope;
  * a registered config (``<store>/_refs/<checkout>.json``: every checkout sharing the store,
    lmbuild.store.registry.register) planned within ``retention_days`` (default 30), as ``scope`` allows:
    ``unregistered`` (the default) counts every registration, ``checkout`` every one but this
    checkout's own (its earlier configs' keys may go), ``store`` none (everything this config
    does not reach goes, other checkouts' too: DVC's ``gc --workspace``).
What goes:
  * artifacts ``<store>/<stage>/<key>`` whose (stage, key) is not kept;
  * temporary folders ``.tmp-*`` whose writer is dead (their flock is free);
  * keyed parts (``_parts/<stage>/<part key>``: raw, cleaned and dedup map parts, each a store
    entry with its manifest) that no kept complete artifact lists in its ``counts.part_keys``, unless
    recent (as an unregistered key); per-artifact parts (``_parts/<stage>/<key>/<part>``: dedup
    buckets, shards parts) of an artifact that is complete or not kept; empty part folders;
  * ``_work`` scratch of an artifact that is complete or not kept (a kept, unfinished one keeps
    its scratch: training resumes from it), and free lock files;
  * stable-phase caches ``_stable/<key>`` (lmbuild.training.stable_cache: where a longer wsd run continues)
    not kept, and their dead writers' temporary folders. A kept cache is kept whole;
  * live files of builds that died, and (``forget: stale``) registrations with no key planned
    within the window.
The listing says how many bytes removal frees (a hard-linked file counts only if every link
goes: the cleaned artifact links its parts' files). ``gc`` holds ``<store>/_refs/.lock`` while
it decides and removes: a build that starts meanwhile waits, then plans against what is left.

A key that no registration ever planned (written by a build that does not register: an
lmbuild from before registrations, the Python API) stays, except at scope ``store``, until
``retention_days`` after it was last written.

What it does not do: touch anything whose build lock or temp-folder lock another process holds,
look outside the store, or know which of its keys a build that does not register still needs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from pathlib import Path

from lmbuild.store.artifact import is_complete, listed_parts, release, try_lock
from lmbuild.store.registry import REFS, live_builds, refs_lock, registrations

KEY = re.compile(r"[0-9a-f]{16}")
PARTS = "_parts"  # fan-out parts: <store>/_parts/<stage>/<key>/<part> (rules/common.smk part_path)
SCOPES = ("unregistered", "checkout", "store")
DAY = 86400.0


@dataclasses.dataclass
class Policy:
    """What gc may remove (config ``gc:``; lmbuild/schemas/config.schema.yaml has the defaults)."""

    scope: str = "unregistered"
    retention_days: float = 30.0
    forget: str = "none"  # none | stale

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise ValueError(f"gc.scope: {self.scope!r} is not one of {', '.join(SCOPES)}")
        if self.forget not in ("none", "stale"):
            raise ValueError(f"gc.forget: {self.forget!r} is not one of none, stale")


@dataclasses.dataclass
class Entry:
    kind: str  # artifact | temp | parts | work | lock | empty | stable | registration | live
    path: Path
    why: str
    remove: bool = True


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


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size, upto in (("second", 1, 120), ("minute", 60, 7200), ("hour", 3600, 2 * DAY)):
        if seconds < upto:
            n = int(seconds // size)
            return f"{n} {unit}{'' if n == 1 else 's'}"
    n = int(seconds // DAY)
    return f"{n} days"


def newest_write(path: Path) -> float | None:
    """When ``path`` was last written: its manifest's mtime (written last) if it has one, else the
    newest mtime of it and its folders (creating or removing a file touches its folder's)."""
    try:
        manifest = path / "manifest.json"
        if manifest.is_file():
            return manifest.stat().st_mtime
        return max([path.stat().st_mtime, *(Path(d).stat().st_mtime for d, _, _ in os.walk(path) if d != str(path))])
    except OSError:
        return None


class Decision:
    """Which ``stage/key``s stay and why, and why any other goes: from this checkout's plan
    (``current``), the running builds and the registrations, under ``policy``."""

    def __init__(self, root: Path, current: set[str], checkout: str | None, policy: Policy, now: float):
        self.policy, self.now = policy, now
        self.registrations = registrations(root)
        self.live, self.dead_live = live_builds(root)
        self.window = policy.retention_days * DAY
        self.keep: dict[str, str] = {k: "reached by this checkout's config" for k in sorted(current)}
        self.keep_all = next((b for b in self.live if "*" in b.keys), None)  # a live file it cannot read
        for b in self.live:
            for k in sorted(b.keys):
                self.keep.setdefault(k, f"held by a running build ({b.label()})")
        # Each key's newest reach by any registration, and by those the scope counts.
        self.last: dict[str, tuple[float, object]] = {}
        counted: dict[str, tuple[float, object]] = {}
        for r in self.registrations:
            counts = policy.scope == "unregistered" or (policy.scope == "checkout" and r.id != checkout)
            for k, t in r.keys.items():
                if k not in self.last or t > self.last[k][0]:
                    self.last[k] = (t, r)
                if counts and now - t <= self.window and (k not in counted or t > counted[k][0]):
                    counted[k] = (t, r)
        for k, (t, r) in sorted(counted.items()):
            self.keep.setdefault(k, f"reached by {r.label()} {age(now - t)} ago")

    def kept(self, stage: str, key: str) -> str | None:
        """Why ``stage/key`` stays, or None if it goes."""
        why = self.keep.get(f"{stage}/{key}")
        if why is None and self.keep_all is not None:
            return f"a running build's record cannot be read ({self.keep_all.path}): everything stays"
        return why

    def unregistered_but_recent(self, stage: str, key: str, path: Path) -> str | None:
        """Why ``path`` of ``stage/key`` stays although not kept: no registration ever planned the
        key, and it was written within the window, by a build that does not register (a checkout
        on an lmbuild from before registrations, the Python API). Not at ``gc.scope: store``."""
        if self.policy.scope == "store" or f"{stage}/{key}" in self.last:
            return None
        t = newest_write(path)
        if t is None or self.now - t > self.window:
            return None
        return (f"written {age(self.now - t)} ago by a build that no registration names; "
                f"kept for gc.retention_days ({self.policy.retention_days:g})")

    def gone(self, stage: str, key: str) -> str:
        """Why ``stage/key`` goes (it is not kept)."""
        hit = self.last.get(f"{stage}/{key}")
        if hit is None:
            return "reached by no registered config"
        t, r = hit
        when = f"last reached by {r.label()} {age(self.now - t)} ago"
        if self.now - t > self.window:
            return f"{when}, beyond gc.retention_days ({self.policy.retention_days:g})"
        if self.policy.scope == "checkout":
            return f"{when}, this checkout's earlier config (gc.scope: checkout)"
        return f"{when}; gc.scope: store counts only this checkout's config"


def scan(root: Path, reachable: set[tuple[str, str]], stages: list[str], *, policy: Policy | None = None,
         checkout: str | None = None, now: float | None = None) -> list[Entry]:
    """Everything in the store at ``root`` that gc keeps or removes (``Entry.remove``), each
    with why. ``reachable``: the (stage, key)s of this checkout's config and its variants;
    ``checkout``: this checkout's registration id (lmbuild.store.registry.checkout_id)."""
    root = Path(root)
    policy = policy or Policy()
    now = time.time() if now is None else now
    d = Decision(root, {f"{s}/{k}" for s, k in reachable}, checkout, policy, now)
    out: list[Entry] = []
    locks = root / "_locks"

    def artifact_state(stage: str, key: str, path: Path) -> tuple[bool, str]:
        """(whether the parts or scratch at ``path`` of ``stage/key`` may go, why)."""
        why = d.kept(stage, key)
        if is_complete(root / stage / key):
            return True, f"of a complete {stage} artifact"
        why = why or d.unregistered_but_recent(stage, key, path)
        if why is None:
            return True, f"of a {stage} artifact that goes: {d.gone(stage, key)}"
        return False, f"of an unfinished {stage} artifact, {why}"

    for stage in stages:
        folder = root / stage
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".tmp-"):
                busy = _busy(p)
                out.append(Entry("temp", p, "its writer is alive" if busy else "temporary folder of a dead writer", not busy))
            elif p.is_dir() and KEY.fullmatch(p.name):
                why = d.kept(stage, p.name) or d.unregistered_but_recent(stage, p.name, p)
                if why is not None:
                    out.append(Entry("artifact", p, why, False))
                elif _busy(locks / f"{stage}-{p.name}.lock"):
                    out.append(Entry("artifact", p, "another build holds its build lock", False))
                else:
                    out.append(Entry("artifact", p, d.gone(stage, p.name)))
    listed = listed_parts([e.path for e in out if e.kind == "artifact" and not e.remove])
    for stage in stages:
        folder = root / PARTS / stage
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.name == "_work" or not (p.is_dir() and KEY.fullmatch(p.name)):
                continue
            if not any(p.iterdir()):
                out.append(Entry("empty", p, "empty part folder"))
                continue
            if (p / "manifest.json").is_file():  # a keyed part: a store entry of its own
                out.append(_keyed_part(p, stage, listed, d))
                continue
            goes, why = artifact_state(stage, p.name, p)
            if goes and _busy(locks / f"{stage}-{p.name}.lock"):
                goes, why = False, "another build holds its build lock"
            out.append(Entry("parts", p, f"parts {why}" if why.startswith("of") else why, goes))
    for work in sorted({root / "_work", root / PARTS / "_work", *(root / PARTS / stage / "_work" for stage in stages)}):
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
                    busy = _busy(p)
                    out.append(Entry("lock", p, "held by a running job" if busy else "lock file nobody holds", not busy))
                elif p.is_dir() and KEY.fullmatch(key):
                    goes, why = artifact_state(stage, key, p)
                    if goes and (_busy(Path(f"{p}.lock")) or _busy(locks / f"{stage}-{key}.lock")):
                        goes, why = False, "a running job or build holds its lock"
                    if not goes and why.startswith("of an unfinished"):
                        why = f"resumable scratch {why}"
                    out.append(Entry("work", p, f"scratch {why}" if goes else why, goes))
    stable = root / "_stable"
    if stable.is_dir():
        for p in sorted(stable.iterdir()):
            if not (p.is_dir() and KEY.fullmatch(p.name)):
                continue
            why = d.kept("_stable", p.name) or d.unregistered_but_recent("_stable", p.name, p)
            if why is None:
                out.append(Entry("stable", p, f"stable-phase cache that no kept wsd run reaches: {d.gone('_stable', p.name)}"))
            else:
                out.append(Entry("stable", p, f"stable-phase cache, {why}", False))
                out += [Entry("temp", t, "temporary folder of a dead writer") for t in sorted(p.glob(".tmp-*")) if not _busy(t)]
    if locks.is_dir():
        for p in sorted(locks.glob("*.lock")):
            busy = _busy(p)
            out.append(Entry("lock", p, "held by a running build" if busy else "build lock nobody holds", not busy))
    out += _refs_entries(root, d, checkout)
    return out


def _keyed_part(p: Path, stage: str, listed: dict[str, str], d: "Decision") -> Entry:
    """A keyed part (``_parts/<stage>/<part key>``) stays while a kept artifact lists it, or while
    it is recent (a build that has not gathered it yet: as an unregistered key, within
    ``retention_days``, never at scope ``store``); else it goes."""
    owner = listed.get(f"{stage}/{p.name}")
    kept = d.kept(f"{PARTS}/{stage}", p.name)
    if kept is not None:
        return Entry("parts", p, f"part {kept}", False)
    if owner is not None:
        return Entry("parts", p, f"part of the kept artifact {owner}", False)
    why = d.unregistered_but_recent(f"{PARTS}/{stage}", p.name, p)
    if why is not None:
        return Entry("parts", p, f"part that no kept artifact lists, {why}", False)
    return Entry("parts", p, "part that no kept artifact lists")


def _refs_entries(root: Path, d: Decision, checkout: str | None) -> list[Entry]:
    """The registrations (kept; a stale one forgotten on request) and dead builds' live files."""
    out = []
    live_ids = {b.id for b in d.live}
    for r in d.registrations:
        recent = sum(d.now - t <= d.window for t in r.keys.values())
        said = f"registration of {r.label()}: last parse {age(d.now - r.updated)} ago, {recent} of {len(r.keys)} keys planned within {d.policy.retention_days:g} days"
        if r.id == checkout:
            out.append(Entry("registration", r.path, f"{said}; this checkout's", False))
        elif recent or r.id in live_ids:
            out.append(Entry("registration", r.path, said, False))
        elif d.policy.forget == "stale":
            out.append(Entry("registration", r.path, f"{said}; forgotten (gc.forget: stale)"))
        else:
            out.append(Entry("registration", r.path, f"{said}: counts for nothing now; gc.forget: stale forgets it", False))
    for p in d.dead_live:
        out.append(Entry("live", p, "record of a build that is no longer running"))
    refs = root / REFS
    if refs.is_dir():
        out += [Entry("temp", p, "a registration write that did not finish") for p in sorted(refs.glob(".*.part"))]
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


def report(entries: list[Entry], root: Path, removed: bool, policy: Policy | None = None) -> str:
    """What stays and what goes, one line each with why, and the bytes removal frees."""
    policy = policy or Policy()
    goes = [e for e in entries if e.remove]
    freed = freed_bytes(goes)
    lines = [f"{'remove' if e.remove else 'keep':6s} {e.kind:12s} {e.path}  ({e.why})" for e in sorted(entries, key=lambda e: e.remove)]
    kept = len(entries) - len(goes)
    if not goes:
        lines.append(f"gc: nothing to remove in {root} ({kept} entries kept)")
    elif removed:
        lines.append(f"gc: removed {len(goes)} entries, {_human(freed)} ({freed} bytes) freed; {kept} kept")
    else:
        lines.append(f"gc: {len(goes)} entries, {_human(freed)} ({freed} bytes) would be freed; {kept} kept; "
                     "nothing removed (dry run): `snakemake gc_remove` removes them")
    lines.append(f"gc: gc.scope {policy.scope}, gc.retention_days {policy.retention_days:g}, gc.forget {policy.forget} "
                 "(set with e.g. --config gc='{scope: checkout}'; docs/design.md, Garbage collection)")
    return "\n".join(lines)


def gc(root: Path, reachable: set[tuple[str, str]], stages: list[str], *, do_remove: bool = False,
       policy: Policy | None = None, checkout: str | None = None, now: float | None = None) -> str:
    """List (and with ``do_remove``, remove) what the store at ``root`` no longer needs; the
    report. Holds the store's registration lock throughout (see the module docstring)."""
    root = Path(root)
    policy = policy or Policy()
    if not root.is_dir():
        return f"gc: nothing to remove in {root} (no such folder)"
    fd = refs_lock(root, "gc")
    try:
        entries = scan(root, reachable, stages, policy=policy, checkout=checkout, now=now)
        text = report(entries, root, do_remove, policy)  # sizes before removing
        if do_remove:
            remove([e for e in entries if e.remove], root)
    finally:
        release(root / REFS / ".lock", fd)
    return text
