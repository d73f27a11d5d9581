"""A store shared by several builders, and recovery after a hard kill: what the workflow does
when it is parsed, before Snakemake plans anything.

Snakemake locks only its own working directory, and before running a job it deletes the
job's outputs; a second checkout building the same keys into one ``artifacts:`` folder would
delete artifacts the first one is writing or has just made (and the parts the first one's
gather is about to read). So a building ``snakemake`` holds, from the parse until it exits, an
``flock`` on ``<artifacts>/_locks/<stage>-<key>.lock`` for every planned artifact that is not
complete yet, taken in sorted order (no deadlock); a second builder of any of those keys
waits, then plans against the finished store and reuses what the first one built. Builds
that share only complete artifacts run side by side.

Recovery: Snakemake's own lock (``.snakemake/locks``) and incomplete markers
(``.snakemake/incomplete``) survive a SIGKILL of Snakemake itself, and the next run stops at
``LockException`` or ``IncompleteFilesException``. Every ``snakemake`` of this workflow holds
a shared ``flock`` on ``.snakemake/lmbuild-live.lock``; a run that can take it exclusively
knows no other is alive in this working directory, removes the stale locks, and settles each
incomplete marker by the artifact's own completeness mark, its manifest: an output with a
manifest whose files are all there is complete (the marker goes), an output without one is
removed so that its job reruns.

Registrations (what ``snakemake gc`` keeps for other checkouts, lmbuild.store.gc): every parse of
the workflow records the keys its config (and variants) plan in
``<artifacts>/_refs/<checkout>.json``, one file per working directory and config files, each key
with the time it was last planned; a building ``snakemake`` also holds, until it exits, an
``flock`` on its own ``<artifacts>/_refs/live/<checkout>-<host>-<pid>.json`` listing them
(liveness, as the build locks). Both are written under ``<artifacts>/_refs/.lock``, which
``gc`` holds while it decides and removes, so a build that starts meanwhile waits for it and
then plans against the store as gc left it. No key covers any of this.

What this does not do: lock jobs that run without this workflow's parse (the runner's
per-key job lock covers those, see ``lmbuild.store.runner.run``), or work where ``flock`` does not
(some network file systems without lock support).
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lmbuild.errors import UserError
from lmbuild.store.artifact import is_complete, release, try_lock, verify

# Held for the life of the process (closing an fd releases its flock), by path: a process that
# parses the workflow twice (the Python API) must not wait for its own lock.
_HELD: dict[str, int] = {}
# The build locks, removed at a normal exit (after a kill, `snakemake gc` lists them).
_BUILD_LOCKS: list[tuple[Path, int]] = []


@atexit.register
def _release_build_locks() -> None:
    while _BUILD_LOCKS:
        release(*_BUILD_LOCKS.pop())

# Command lines that build nothing: they never wait for another builder.
_NO_BUILD = {
    "--dry-run", "--dryrun", "--dry_run", "--unlock", "--lint", "--summary", "--detailed-summary",
    "-S", "-D", "--dag", "--rulegraph", "--filegraph", "--d3dag", "--list", "-l", "--list-rules",
    "--list-target-rules", "--lt", "--list-changes", "--lc", "--list-code-changes", "--list-params-changes",
    "--list-input-changes", "--list-version-changes", "--cleanup-metadata", "--cm", "--delete-all-output",
    "--delete-temp-output", "--touch", "-t", "--report", "--containerize", "--archive", "--export-cwl",
    "--print-compilation", "--conda-create-envs-only", "--conda-cleanup-envs", "--version", "-v", "--help", "-h",
}


def builds(argv: list[str]) -> bool:
    """Whether a ``snakemake`` command line would build artifacts (not -n, --unlock, --dag, gc, ...)."""
    for a in argv[1:]:
        if a in _NO_BUILD or a in ("gc", "gc_remove", "verify") or re.fullmatch(r"-[A-Za-z]*n[A-Za-z]*", a):
            return False
    return True


def lock_path(root: str | Path, stage: str, key: str) -> Path:
    return Path(root) / "_locks" / f"{stage}-{key}.lock"


def claim(root: str | Path, artifacts: list[tuple[str, str, str]]) -> list[str]:
    """Hold the build lock of every (stage, key, path) not complete yet, waiting for other
    builders; return the ``stage/key``s claimed. Locks are held until the process exits."""
    todo = sorted({(s, k) for s, k, p in artifacts if not is_complete(p)})
    said = False
    for stage, key in todo:
        path = lock_path(root, stage, key).absolute()  # released at exit, when Snakemake has left --directory
        if str(path.resolve()) in _HELD:
            continue
        fd = try_lock(path)
        if fd is None:
            if not said:
                print(f"lmbuild: another build holds {stage} {key} in {root} ({path}); waiting for it to finish", file=sys.stderr, flush=True)
                said = True
            fd = try_lock(path, blocking=True)
        _HELD[str(path.resolve())] = fd
        _BUILD_LOCKS.append((path, fd))
    if said:
        print("lmbuild: the other build finished; planning against the store as it is now", file=sys.stderr, flush=True)
    return [f"{s}/{k}" for s, k in todo]


def _marked_path(marker: Path, incomplete: Path) -> str | None:
    """The output path an incomplete marker stands for (Snakemake's file persistence:
    url-safe base64 of the path, split into '@'-prefixed chunks by name length)."""
    parts = marker.relative_to(incomplete).parts
    try:
        return base64.urlsafe_b64decode("".join(p.lstrip("@") for p in parts)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def recover(root: str | Path, metadata: str | Path = ".snakemake") -> list[str]:
    """If no other ``snakemake`` of this workflow is alive in this working directory: remove
    Snakemake's stale locks and settle its incomplete markers for outputs under ``root``.
    Return what was done, one line each. Then hold the shared liveness lock for this process."""
    metadata = Path(metadata)
    metadata.mkdir(exist_ok=True)
    live = metadata / "lmbuild-live.lock"
    if str(live.resolve()) in _HELD:
        return []
    fd = try_lock(live)
    done: list[str] = []
    if fd is not None:
        try:
            done = _recover(Path(root), metadata)
        finally:
            fcntl.flock(fd, fcntl.LOCK_SH)  # downgrade: from now on this process counts as alive
    else:
        fd = os.open(live, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
    _HELD[str(live.resolve())] = fd
    return done


def _recover(root: Path, metadata: Path) -> list[str]:
    done = []
    locks = sorted((metadata / "locks").glob("*.lock"))
    for f in locks:
        f.unlink(missing_ok=True)
    if locks:
        done.append(f"removed {len(locks)} stale Snakemake lock(s) in {metadata / 'locks'} (no snakemake alive here)")
    incomplete = metadata / "incomplete"
    if not incomplete.is_dir():
        return done
    store = os.path.realpath(root)
    for marker in sorted(p for p in incomplete.rglob("*") if p.is_file() and p.name != "migration_underway"):
        path = _marked_path(marker, incomplete)
        if path is None:
            continue
        real = os.path.realpath(path)
        if os.path.commonpath([real, store]) != store or real == store:
            continue  # not an artifact of this store: Snakemake's own rules apply
        if not os.path.exists(real):
            marker.unlink(missing_ok=True)  # nothing there; the job simply reruns
            continue
        try:
            verify(real)
            done.append(f"{path}: complete (its manifest checks out); not rebuilt")
        except UserError:
            shutil.rmtree(real, ignore_errors=True)
            done.append(f"{path}: incomplete (no manifest, or a file missing); removed, its job reruns")
        marker.unlink(missing_ok=True)
    return done


# --- registrations: which checkout's config planned which keys, and which builds are alive ------

REFS = "_refs"


@dataclasses.dataclass
class Registration:
    """``<store>/_refs/<id>.json``: one checkout (working directory + config files) and the
    ``stage/key``s its parses planned, each with when it was last planned (epoch seconds)."""

    id: str
    path: Path
    workdir: str
    configfiles: list[str]
    host: str
    updated: float
    keys: dict[str, float]

    def label(self) -> str:
        files = ", ".join(Path(f).name for f in self.configfiles) or "no config file"
        return f"{self.workdir} ({files})"


@dataclasses.dataclass
class LiveBuild:
    """``<store>/_refs/live/<id>-<host>-<pid>.json``: a running build and the keys it planned."""

    path: Path
    id: str
    workdir: str
    host: str
    pid: int
    keys: set[str]

    def label(self) -> str:
        return f"{self.workdir}, pid {self.pid} on {self.host}"


def checkout_id(workdir: str | Path, configfiles: list[str]) -> str:
    """The registration id of a working directory and its config files (real paths; order and
    repeats do not matter)."""
    ident = [os.path.realpath(workdir), sorted({os.path.realpath(f) for f in configfiles})]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def refs_lock(root: str | Path, what: str) -> int:
    """Hold ``<store>/_refs/.lock`` (exclusive), saying on stderr when another process has it
    (a gc removing, or another parse registering); release with :func:`lmbuild.store.artifact.release`."""
    path = Path(root) / REFS / ".lock"
    fd = try_lock(path)
    if fd is None:
        print(f"lmbuild: {what}: waiting for gc or another build's registration in {root} ({path})", file=sys.stderr, flush=True)
        fd = try_lock(path, blocking=True)
    return fd


def read_registration(path: Path) -> Registration | None:
    """A registration file, or None if it cannot be read as one (it then counts for nothing)."""
    try:
        d = json.loads(Path(path).read_text())
        return Registration(d["id"], Path(path), d["workdir"], list(d["configfiles"]), d.get("host", ""),
                            _epoch(d["updated"]), {k: _epoch(t) for k, t in d["keys"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_registration(reg: Registration) -> None:
    """Write ``reg`` through a rename (readers see the old file or the new one)."""
    text = json.dumps({"id": reg.id, "workdir": reg.workdir, "configfiles": reg.configfiles, "host": reg.host,
                       "updated": iso(reg.updated), "keys": {k: iso(t) for k, t in sorted(reg.keys.items())}}, indent=1) + "\n"
    tmp = reg.path.with_name(f".{reg.path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, reg.path)


def register(root: str | Path, workdir: str | Path, configfiles: list[str], keys: list[str], *,
             live: bool = False, now: float | None = None) -> Registration:
    """Record that the checkout at ``workdir`` with ``configfiles`` planned ``keys`` (``stage/key``)
    now; keys planned earlier keep their own time. With ``live`` (a building process) also hold,
    until this process exits, the flock on a live file listing ``keys``. Returns the registration."""
    root = Path(root).absolute()  # the live file is removed at exit, when Snakemake has left --directory
    now = time.time() if now is None else now
    rid = checkout_id(workdir, configfiles)
    refs = root / REFS
    refs.mkdir(parents=True, exist_ok=True)
    lock = refs_lock(root, "registering this build")
    try:
        old = read_registration(refs / f"{rid}.json")
        reg = Registration(rid, refs / f"{rid}.json", os.path.realpath(workdir), sorted({os.path.realpath(f) for f in configfiles}),
                           socket.gethostname(), now, {**(old.keys if old else {}), **{k: now for k in keys}})
        write_registration(reg)
        if live:
            _hold_live(refs, reg, keys)
    finally:
        release(refs / ".lock", lock)
    return reg


def _hold_live(refs: Path, reg: Registration, keys: list[str]) -> None:
    path = refs / "live" / f"{reg.id}-{socket.gethostname()}-{os.getpid()}.json"
    if str(path.resolve()) in _HELD:  # this process parsed again (the Python API): both plans' keys
        keys = sorted(set(keys) | set(json.loads(path.read_text())["keys"]))
    else:
        fd = try_lock(path, blocking=True)  # named by this pid: nobody else holds it
        _HELD[str(path.resolve())] = fd
        _BUILD_LOCKS.append((path, fd))  # removed at a normal exit; after a kill gc lists it
    path.write_text(json.dumps({"id": reg.id, "workdir": reg.workdir, "host": socket.gethostname(), "pid": os.getpid(),
                                "keys": sorted(keys)}) + "\n")


def registrations(root: str | Path) -> list[Registration]:
    """Every readable registration of the store, by id."""
    refs = Path(root) / REFS
    regs = (read_registration(p) for p in sorted(refs.glob("*.json"))) if refs.is_dir() else ()
    return [r for r in regs if r is not None]


def live_builds(root: str | Path) -> tuple[list[LiveBuild], list[Path]]:
    """(the builds alive now, the live files that dead builds left): a live file is alive while
    its process holds its flock."""
    folder = Path(root) / REFS / "live"
    alive, dead = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        if str(path.resolve()) not in _HELD:  # (this process's own is alive)
            try:
                fd = os.open(path, os.O_RDONLY)  # not try_lock: it would create a file a build just removed
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                dead.append(path)
                continue
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        try:
            d = json.loads(path.read_text())
            alive.append(LiveBuild(path, d["id"], d["workdir"], d["host"], int(d["pid"]), set(d["keys"])))
        except (OSError, ValueError, KeyError, TypeError):
            # Held but unreadable (written under the lock gc holds, so a damaged disk): its keys
            # are unknown, so gc keeps everything ("*") while it lives.
            alive.append(LiveBuild(path, "?", "?", "?", -1, {"*"}))
    return alive, dead


# --- verify: every planned artifact, intact or not, and what is missing -------------------------


def planned(plans: list[tuple[str | None, object]], final: str, extra: list[tuple[object, str]] = ()) -> list[tuple[object, str]]:
    """What the targets build, each with the target that names it: the closure of each plan's
    ``final`` artifact (``plans``: (None, the base), then (variant name, its plan)) and of each
    ``extra`` (artifact, target): the sweep report. Not the cost plan, which only ``snakemake
    plan`` builds, nor a stage no target needs (``quality_model`` while it is disabled)."""
    target: dict[tuple[str, str], str] = {(a.stage, a.key): name for a, name in extra}
    for name, plan in plans:
        for a in plan.artifacts.values():
            target.setdefault((a.stage, a.key), a.stage if name is None else f"{name}__{a.stage}")
    out: dict[tuple[str, str], tuple[object, str]] = {}

    def walk(a, fallback: str) -> None:
        if (a.stage, a.key) in out:
            return
        out[(a.stage, a.key)] = (a, target.get((a.stage, a.key), fallback))
        for i in a.inputs.values():
            walk(i, fallback)

    for _, plan in plans:
        walk(plan.artifacts[final], final)
    for a, name in extra:
        walk(a, name)
    return sorted(out.values(), key=lambda at: at[0].path)


def verify_store(expected: list[tuple[str, str]], optional: list[str] = ()) -> tuple[list[str], int]:
    """Check every artifact of ``expected`` ((path, the target that builds it)) against its
    manifest, every file's size and SHA-256, and those of ``optional`` that exist. A missing
    expected artifact counts as an error, as a damaged one does. Returns (lines, errors)."""
    lines, intact, damaged, missing = [], 0, 0, 0
    for path, target in [*expected, *((p, None) for p in optional)]:
        if not Path(path).exists():
            if target is not None:
                lines.append(f"error: verify: {path}: missing (`snakemake {target}` builds it)")
                missing += 1
            continue
        try:
            m = verify(path, hashes=True)
            lines.append(f"ok: {path} ({len(m.get('files') or {})} files)")
            intact += 1
        except UserError as exc:
            lines.append(f"error: verify: {exc}")
            damaged += 1
    lines.append(f"verify: {intact} artifacts intact, {damaged} damaged, {missing} missing (of {len(expected)} planned)")
    return lines, damaged + missing
