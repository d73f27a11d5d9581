"""Run one stage from a Snakemake ``script:``: logging, atomic output, manifest, errors.

Every script in ``scripts/`` is two lines: import the stage's ``build`` and hand it to
:func:`run_stage`. What a stage function gets is a :class:`StageContext`; what it returns
(counts, figures) goes into the artifact's ``manifest.json`` together with the lineage
that the plan passed in ``params``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import platform
import resource
import shutil
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable

from lmbuild.build.keys import apply_patches
from lmbuild.build.stages import STAGES
from lmbuild.errors import UserError
from lmbuild.store.artifact import MANIFEST, atomic_dir, file_entries, is_complete, locked, read_manifest, verify, verify_hashes, write_json

# Hub look-ups fail at once instead of retrying for ~46 s when offline; progress bars
# would flood the logs. Users with the hub unset HF_HUB_OFFLINE themselves.
for _var, _val in {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_var, _val)


@dataclasses.dataclass
class StageContext:
    """What a stage's ``build`` sees.

    settings: the stage's own settings, defaults filled in (the part of the config its key covers).
    inputs:   stage name -> path of the complete input artifact (a list for a fan-in).
    out:      an empty directory; everything written here becomes the artifact.
    work:     a scratch directory outside the artifact that survives a crash (resumable state);
              removed after success.
    threads:  CPU threads the job was given.
    gpus:     GPUs the job was given per node (resources gpu; 0 for CPU-only stages).
    nodes:    nodes the job was given (resources nodes; more than 1 only for training under SLURM).
    key:      this artifact's address.
    lineage:  the plan's lineage of this artifact (code_hash, inputs), as the manifest records it.
    store:    the artifact store's root (None where the job has none): caches beside artifacts.
    """

    stage: str
    key: str
    settings: dict
    inputs: dict[str, Path]
    out: Path
    work: Path
    threads: int = 1
    gpus: int = 0
    nodes: int = 1
    lineage: dict = dataclasses.field(default_factory=dict)
    store: Path | None = None

    def input_manifest(self, stage: str) -> dict:
        return read_manifest(self.inputs[stage])


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "tokenizers", "duckdb", "pyarrow", "lm_eval", "datasets"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


# Where a job ran: on SLURM, its job id, how often it was requeued and the GPUs it was given.
JOB_ENV = ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_JOB_PARTITION", "CUDA_VISIBLE_DEVICES")


def job_environment() -> dict:
    """The host and the scheduler's variables of this job (None where unset); not part of any key."""
    return {"host": platform.node(), **{v.lower(): os.environ.get(v) for v in JOB_ENV}}


# Never read by a stage, whatever the patterns say: hashing them would cost and check nothing.
NOT_READ = ("tensorboard/*",)


def read_whole(reader: str, manifest: dict) -> list[str]:
    """The files of an input artifact (its manifest) that the stage ``reader`` reads whole: the
    input stage's ``Stage.read_whole``, or the reader's own ``Stage.reads_whole`` for it
    (lmbuild.build.stages; fnmatch patterns over paths in the artifact, ``*`` crosses folders).
    Their SHA-256 is checked against the input's manifest before the job starts: a flipped byte
    in weights, token ids or a tokenizer's files is read without any error. Cost: docs/design.md
    ("Integrity")."""
    reader = reader.split(".")[0].removesuffix("_part")  # a fan-out job reads as its stage does
    stage = manifest.get("stage")
    own = STAGES[reader].reads_whole if reader in STAGES else {}
    patterns = own[stage] if stage in own else (STAGES[stage].read_whole if stage in STAGES else ())
    return [
        rel for rel in sorted(manifest.get("files") or {})
        if any(fnmatchcase(rel, p) for p in patterns) and not any(fnmatchcase(rel, p) for p in NOT_READ)
    ]


def check_inputs(stage: str, inputs: dict) -> dict:
    """Every input artifact against its manifest: each file's size, and the SHA-256 of the files
    ``stage`` reads whole (:func:`read_whole`). UserError naming the artifact and the file;
    returns what was hashed (files, bytes, seconds; the manifest keeps files and seconds)."""
    started, files, read = time.perf_counter(), 0, 0
    for value in inputs.values():
        for path in value if isinstance(value, list) else [value]:
            manifest = verify(path)
            names = read_whole(stage, manifest)
            read += verify_hashes(path, manifest, names)
            files += len(names)
    return {"files": files, "bytes": read, "seconds": round(time.perf_counter() - started, 3)}


def _paths(value):
    """A named input: one path, or a list of paths (a fan-in, e.g. the parts of a stage)."""
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    return [Path(v) for v in value]


def run(
    build: Callable[[StageContext], dict | None],
    *,
    stage: str,
    key: str,
    settings: dict,
    lineage: dict,
    inputs: dict[str, Path],
    output: Path,
    threads: int = 1,
    gpus: int = 0,
    log_path: Path | None = None,
    on_built: Callable[[Path, dict], None] | None = None,
    nodes: int = 1,
) -> dict:
    """Build one artifact atomically and write its manifest; return the manifest.

    ``on_built(output, manifest)`` runs after this builder built it (not when it was reused):
    experiment tracking (lmbuild.store.tracking), which must never fail the build.

    Every input artifact is checked against its manifest first (files present, sizes equal; the
    SHA-256 of the files this stage reads whole: :func:`check_inputs`).
    One builder per key at a time: a second one waits on ``<work>.lock`` and then reuses the
    artifact the first one made; ``work`` (resumable scratch) therefore has one writer.
    """
    output = Path(output)
    work = output.parent.parent / "_work" / stage / key
    log = logging.getLogger("lmbuild")
    ins = {k: _paths(v) for k, v in inputs.items()}
    checked = check_inputs(stage, ins)
    with locked(work.parent / f"{work.name}.lock", what=f"{stage} {key}"):
        if is_complete(output):
            log.info("%s %s: built meanwhile by another builder; reused", stage, key)
            return read_manifest(output)
        manifest = _build(build, stage, key, settings, lineage, ins, output, work, threads, gpus, log_path, nodes, checked)
    if on_built is not None:
        on_built(output, manifest)
    return manifest


def peak_rss_mb() -> dict:
    """Peak resident memory (MiB) of this process (``self``) and of its largest finished child
    (``children``: a pool worker, a torchrun rank), measured when the build is done.

    ``self`` is the kernel's high-water mark of this process's own memory (``VmHWM`` in
    /proc/self/status). Not getrusage's ru_maxrss: Linux carries that over an exec from the
    process that forked this one, so a script that Snakemake starts would show Snakemake's
    RSS (~176 MB) whatever it used. ``children`` is getrusage's (the largest child, not their
    sum, and counting pages a forked child shares with this process): an upper bound per child.
    What a job's ``mem_mb`` must cover is ``self`` plus ``children`` times the children that
    ran at once.
    """
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):  # not Linux: ru_maxrss (bytes on macOS)
        kib = kib / 1024 if sys.platform == "darwin" else kib
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    children = children / 1024 if sys.platform == "darwin" else children
    return {"self": round(kib / 1024, 1), "children": round(children / 1024, 1)}


def cpu_seconds() -> dict:
    """User + system CPU seconds of this process and of its finished children."""
    out = {}
    for who, w in (("self", resource.RUSAGE_SELF), ("children", resource.RUSAGE_CHILDREN)):
        r = resource.getrusage(w)
        out[who] = round(r.ru_utime + r.ru_stime, 3)
    return out


def parts_peak_rss_mb(key: str, ins: dict) -> dict | None:
    """The largest peak among this artifact's fan-out parts (inputs whose manifest key is this
    key, or ``<key>/<part>``, and the keyed parts listed as ``parts``): the parts are other jobs."""
    peaks = []
    for name, value in ins.items():
        for path in value if isinstance(value, list) else [value]:
            m = read_manifest(path)
            if (name == "parts" or m.get("key") == key or str(m.get("key", "")).startswith(f"{key}/")) and m.get("peak_rss_mb"):
                peaks.append(m["peak_rss_mb"])
    return max(peaks, key=lambda p: p["self"] + p["children"]) if peaks else None


def _build(build, stage, key, settings, lineage, ins, output, work, threads, gpus, log_path, nodes=1, checked=None) -> dict:
    started = time.time()
    job = job_environment()
    logging.getLogger("lmbuild").info("%s %s: job %s", stage, key, " ".join(f"{k}={v}" for k, v in job.items()))
    with atomic_dir(output) as tmp:
        work.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(stage, key, settings, ins, tmp, work, threads, gpus, nodes, lineage, output.parent.parent)
        counts = build(ctx) or {}
        hashed = time.time()
        files = file_entries(tmp)
        manifest = {
            "stage": stage,
            "key": key,
            "settings": settings,
            **lineage,
            "counts": counts,
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
            "seconds": round(time.time() - started, 3),
            "threads": threads,
            "gpus": gpus,
            "job": job,
            "versions": _versions(),
            "log": str(log_path) if log_path else None,
            "hash_seconds": round(time.time() - hashed, 3),
            # The inputs' files read whole, hashed before the job (read_whole). Not their bytes:
            # a loss curve's or a report's size varies with the timings it records.
            "inputs_hashed": {k: checked[k] for k in ("files", "seconds")} if checked else None,
            # Measured after the build and the hashing: what this job's mem_mb had to cover.
            "peak_rss_mb": peak_rss_mb(),
            # CPU time of the job (user + system, itself and its finished children): on a shared
            # or oversubscribed machine, throughput per CPU-second is what wall seconds are not.
            "cpu_seconds": cpu_seconds(),
            **({"parts_peak_rss_mb": parts} if (parts := parts_peak_rss_mb(key, ins)) else {}),
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return read_manifest(output)  # another builder's, if its rename won


# Write errors that are the machine's, not the code's: one line naming the cause and the path.
DISK_ERRNOS = {errno.ENOSPC: "disk full", errno.EFBIG: "file size limit", errno.EDQUOT: "disk quota exceeded"}
DISK_MESSAGES = {os.strerror(e): why for e, why in DISK_ERRNOS.items()}


def disk_error(exc: BaseException) -> str | None:
    """'<cause>: <path or message>' if ``exc`` (or one it was raised from) is a full disk, a
    file-size limit or a quota; None otherwise. pyarrow raises OSError; DuckDB its own
    IOException whose message carries the strerror."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return f"{DISK_ERRNOS[exc.errno]}: {exc.filename}" if exc.filename else DISK_ERRNOS[exc.errno]
        text = str(exc)
        for message, why in DISK_MESSAGES.items():
            if message in text:
                return f"{why}: {text.splitlines()[0] if text else message}"
        exc = exc.__cause__ or exc.__context__
    return None


def read_spec(path: str | os.PathLike) -> tuple[dict, dict]:
    """A job spec (``lmbuild.build.graph.Plan.write_specs``) -> (settings to run with, lineage).

    The lineage records the key's settings (local paths replaced by their content) and where
    each path pointed for this run (``located``)."""
    spec = json.loads(Path(path).read_text())
    lineage = {**spec["lineage"], "located": spec["located"]}
    return apply_patches(spec["settings"], spec["located"]), {"key_settings": spec["settings"], **lineage}


def _tracker(spec_path, err) -> Callable[[Path, dict], None]:
    """Log the finished artifact to the spec's tracker (lmbuild.store.tracking); a failure is one
    warning line in the job's log and on the terminal, never an error."""
    tracking = json.loads(Path(spec_path).read_text()).get("tracking")

    def on_built(output: Path, manifest: dict) -> None:
        if not tracking:
            return
        from lmbuild.store import tracking as tracker

        warning = tracker.track(tracking, output, manifest)
        if warning:
            print(f"warning: {manifest['stage']}: {warning}", file=err, flush=True)

    return on_built


def run_stage(snakemake: Any, build: Callable[[StageContext], dict | None]) -> None:
    """Entry point for ``scripts/<stage>.py``: read the ``snakemake`` object and its job spec, and run.

    Snakemake passes only the spec's path (``params.spec``), which changes exactly when the
    artifact's key does; everything else the job needs is in the spec."""
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stage = snakemake.params.stage
    # The stage a user knows, in error lines: a fan-out job ("raw_part", "deduplicated.map-001")
    # fails as its stage does.
    shown = stage.split(".")[0].removesuffix("_part")
    # Everything the libraries print goes to the job's log; the terminal gets one line on error.
    err = os.fdopen(os.dup(2), "w")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    inputs = {name: _paths(p) for name, p in snakemake.input.items()}
    # A file-size limit (ulimit -f) kills with SIGXFSZ by default; ignored, the write raises
    # EFBIG and the job ends with one line like a full disk does.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        settings, lineage = read_spec(snakemake.params.spec)
        manifest = run(
            build,
            stage=stage,
            key=snakemake.params.key,
            settings=settings,
            lineage=lineage,
            inputs=inputs,
            output=Path(snakemake.output[0]),
            threads=snakemake.threads,
            # Per node: a multi-node job asks for its GPUs per node (gres) and says how many.
            gpus=int(snakemake.resources.get("gpus_per_node", snakemake.resources.get("gpu", 0)) or 0),
            log_path=log_path,
            on_built=_tracker(snakemake.params.spec, err),
            nodes=int(snakemake.resources.get("nodes", 1) or 1),
        )
        logging.getLogger("lmbuild").info("%s %s done in %.1fs: %s", stage, snakemake.params.key, manifest["seconds"], manifest["counts"])
    except UserError as exc:
        logging.getLogger("lmbuild").error("%s", exc)
        print(f"error: {shown}: {exc}", file=err, flush=True)
        sys.exit(1)
    except BaseException as exc:
        traceback.print_exc()
        cause = disk_error(exc)
        if cause:
            print(f"error: {shown}: {cause} while writing {snakemake.output[0]}; no artifact was left", file=err, flush=True)
            sys.exit(1)
        print(f"error: {shown} failed with an internal error; traceback in {log_path}", file=err, flush=True)
        sys.exit(1)
