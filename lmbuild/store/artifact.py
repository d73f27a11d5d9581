"""Atomic artifact directories, their manifests, and the locks of a shared store.

An artifact is a directory ``artifacts/<stage>/<key>/``. It is written in a temporary
sibling and renamed into place only when complete, with ``manifest.json`` written last:
an address that exists and holds a manifest is complete. The manifest's ``files`` lists every
other file of the artifact with its size and SHA-256, so that a file deleted or truncated
later is found before the next stage reads it (:func:`verify`), and a changed byte in a file
it reads whole (:func:`verify_hashes`; which files: ``lmbuild.store.runner.read_whole``).

Several builders may share one store (two checkouts whose ``artifacts:`` is one folder).
Each writes its own ``.tmp-<key>-<host>-<pid>-<ns>`` folder and holds an ``flock`` on it
while writing; a temporary folder is removed as stale only when that lock is free (its
writer is dead). If two builders finish the same key, the first rename wins and the other's
copy is dropped: a complete artifact is never replaced.

This module does not decide keys (see ``lmbuild.build.graph``) and never deletes a complete
artifact. ``flock`` is advisory and works across machines only on file systems that
support it (local disks, NFSv4, Lustre and GPFS with locking enabled).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from lmbuild.errors import UserError

MANIFEST = "manifest.json"
# Not part of an artifact's content: the manifest itself, and the marker Snakemake drops into a
# directory() output after the job.
UNLISTED = {MANIFEST, ".snakemake_timestamp"}


def read_manifest(artifact: Path) -> dict:
    """The manifest of a complete artifact."""
    return json.loads((Path(artifact) / MANIFEST).read_text())


def is_complete(artifact: Path) -> bool:
    """An artifact address that holds a readable manifest."""
    try:
        read_manifest(artifact)
        return True
    except (OSError, ValueError):
        return False


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard link ``src`` at ``dst`` (a gather job's way of taking a part's file: no copy, and
    the part may be deleted afterwards), else copy it (another file system)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_json(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_entries(folder: Path) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file under ``folder`` but the manifest, sorted."""
    folder = Path(folder)
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        if rel not in UNLISTED:
            out[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return out


def seal(folder: Path, manifest: dict) -> dict:
    """Write ``manifest`` plus the ``files`` map of ``folder`` as its manifest.json; return it."""
    manifest = {**manifest, "files": file_entries(folder)}
    write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def verify(artifact: Path, *, hashes: bool = False) -> dict:
    """Check ``artifact`` against its manifest and return the manifest; UserError naming the
    artifact and the first bad file otherwise.

    Always: the manifest is there and every file it lists exists with its size (a stat per
    file: cheap, done before every read). With ``hashes``: every file's SHA-256 too, and no
    file the manifest does not list (reads everything; ``python -m lmbuild.store.artifact verify``).
    A manifest without ``files`` (written before manifests listed them) is taken as it is.
    """
    artifact = Path(artifact)
    try:
        manifest = read_manifest(artifact)
    except FileNotFoundError:
        raise UserError(f"{artifact}: not a complete artifact (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{artifact}: unreadable {MANIFEST} ({exc})") from None
    files = manifest.get("files")
    if files is None:
        return manifest
    fix = "delete the artifact folder and rebuild"
    for rel, entry in files.items():
        path = artifact / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise UserError(f"{artifact}: damaged: {rel} is missing ({fix})") from None
        if size != entry["size"]:
            raise UserError(f"{artifact}: damaged: {rel} has {size} bytes, the manifest says {entry['size']} ({fix})")
        if hashes and _sha256(path) != entry["sha256"]:
            raise UserError(f"{artifact}: damaged: {rel} does not match its SHA-256 in the manifest ({fix})")
    if hashes:
        extra = sorted(set(file_entries_names(artifact)) - set(files))
        if extra:
            raise UserError(f"{artifact}: {extra[0]} is not in the manifest ({len(extra)} unlisted files)")
    return manifest


def verify_hashes(artifact: Path, manifest: dict, names) -> int:
    """Check the SHA-256 of the files ``names`` of ``artifact`` against its ``manifest`` (as
    :func:`verify` returned it); return the bytes read. UserError naming the artifact and the
    first file whose content differs. Names the manifest does not list are skipped (a manifest
    without ``files`` checks nothing)."""
    artifact, files, read = Path(artifact), manifest.get("files") or {}, 0
    for rel in names:
        entry = files.get(rel)
        if entry is None:
            continue
        if _sha256(artifact / rel) != entry["sha256"]:
            raise UserError(f"{artifact}: damaged: {rel} does not match its SHA-256 in the manifest (delete the artifact folder and rebuild)")
        read += entry["size"]
    return read


def file_entries_names(folder: Path) -> list[str]:
    folder = Path(folder)
    return [r for r in (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if r not in UNLISTED]


def artifact_files(folder: Path, pattern: str) -> list[Path]:
    """The files of a complete artifact whose relative paths match ``pattern``, from its manifest
    (sorted; a stray file in the folder is not read), each checked for presence and size.

    A folder without a manifest, or a manifest without ``files``, is globbed: stage functions
    called directly (tests, notebooks) get plain folders; in a build the runner has already
    refused an input without a manifest.
    """
    folder = Path(folder)
    files = verify(folder).get("files") if (folder / MANIFEST).exists() else None
    if files is None:
        return sorted(folder.glob(pattern))
    return [folder / rel for rel in sorted(files) if fnmatch.fnmatchcase(rel, pattern)]


def parquet_shards(folder: Path, stage: str) -> list[Path]:
    """The ``shard-*.parquet`` files of a data artifact as its manifest lists them, in order;
    UserError if the artifact is damaged or has none."""
    paths = artifact_files(folder, "shard-*.parquet")
    if not paths:
        raise UserError(f"{folder}: no shard-*.parquet files (not a {stage} artifact?)")
    return paths


def listed_parts(artifacts: list[Path]) -> dict[str, str]:
    """``stage/part key`` -> the kept complete artifact whose manifest lists it (``counts.part_keys``:
    the index of keyed parts a gather made it of, lmbuild.build.graph.Part)."""
    out = {}
    for a in artifacts:
        if not is_complete(a):
            continue
        try:
            parts = read_manifest(a).get("counts", {}).get("part_keys")
        except (OSError, ValueError):
            continue
        if isinstance(parts, list):
            out.update({f"{a.parent.name}/{k}": f"{a.parent.name}/{a.name}" for k in parts if isinstance(k, str)})
    return out


# --- locks --------------------------------------------------------------------------------


def try_lock(path: Path, *, shared: bool = False, blocking: bool = False) -> int | None:
    """An fd holding an flock on ``path`` (a lock file, created if needed, or a folder); None if
    another process holds it and not ``blocking``. Closing the fd (or the process ending)
    releases it.

    A lock file may be removed by its holder just before it releases it (:func:`release`), so
    that lock files do not pile up: after locking, the file must still be the one at ``path``,
    else the new file is locked instead.
    """
    path = Path(path)
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, mode)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed (and maybe recreated) by the holder as it released: try again


def release(path: Path, fd: int) -> None:
    """Remove the lock file ``path`` while still holding it, then release it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


def lock(path: Path, *, what: str = "") -> int:
    """An fd holding an exclusive flock on the lock file ``path``; waits (saying so on stderr)
    while another process holds it."""
    fd = try_lock(path)
    if fd is not None:
        return fd
    print(f"lmbuild: waiting for another builder of {what or path} (lock {path})", file=sys.stderr, flush=True)
    return try_lock(path, blocking=True)


@contextlib.contextmanager
def locked(path: Path, *, what: str = "") -> Iterator[None]:
    """Hold the lock file ``path`` for the block; the file is removed when the block ends."""
    fd = lock(path, what=what)
    try:
        yield
    finally:
        release(path, fd)


def remove_stale_temps(final: Path) -> list[Path]:
    """Remove the ``.tmp-<name>-*`` siblings of ``final`` whose writer is dead (flock free)."""
    removed = []
    for stale in Path(final).parent.glob(f".tmp-{Path(final).name}-*"):
        try:
            fd = try_lock(stale)
        except OSError:
            continue
        if fd is None:
            continue  # a live builder is writing it
        try:
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``final`` when the block succeeds.

    On an exception the temporary directory is removed and ``final`` is untouched. If another
    builder completed ``final`` meanwhile, its artifact stays and this one is dropped.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = final.parent / f".tmp-{final.name}-{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    fd = try_lock(tmp)  # held while writing: the folder is not stale while this process lives
    try:
        yield tmp
        if final.exists() and not is_complete(final):
            # A leftover without a manifest (Snakemake removes an output before rerunning its
            # job, so this is rare): moved aside first, so the rename below stays atomic.
            aside = final.parent / f".tmp-{final.name}-incomplete-{os.getpid()}-{time.monotonic_ns()}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, aside)
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not is_complete(final):
                raise
            # Another builder won the race with the same key: keep its artifact.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """``python -m lmbuild.store.artifact verify ARTIFACT...``: check every file's size and SHA-256."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m lmbuild.store.artifact")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="check artifacts against their manifests (sizes and SHA-256)")
    v.add_argument("artifacts", nargs="+", type=Path)
    args = ap.parse_args(argv)
    bad = 0
    for a in args.artifacts:
        try:
            m = verify(a, hashes=True)
            n = len(m.get("files") or {})
            print(f"ok: {a} ({n} files)" if "files" in m else f"unchecked: {a} (its manifest lists no files)")
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
