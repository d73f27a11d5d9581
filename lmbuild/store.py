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

What this does not do: lock jobs that run without this workflow's parse (the runner's
per-key job lock covers those, see ``lmbuild.runner.run``), or work where ``flock`` does not
(some network file systems without lock support).
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import os
import re
import shutil
import sys
from pathlib import Path

from lmbuild.artifact import is_complete, release, try_lock, verify
from lmbuild.errors import UserError

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
        path = lock_path(root, stage, key)
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
