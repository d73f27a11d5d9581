"""Reruns after SIGKILL, attacked: kill every rule's job mid-work, rerun, compare every output file.

Two builds of tests/smoke.yaml (20 training steps, a checkpoint every 5), each with the real
`snakemake` command:

- reference: `--cores 2`, uninterrupted; a watcher records when each job started, when each
  line of its log appeared, when it ended, and when training's checkpoints appeared.
- faults: `--cores 1 --keep-going` in another folder. The watcher SIGKILLs the job process
  (the script Snakemake started, ``.snakemake/scripts/tmp*.<script>.py``) of every rule at
  seeded points of its progress (after its k-th log line, plus a seeded part of the time to
  the next one; see Kill): each job of every rule once (both cleaning parts, both dedup maps and
  buckets), training twice (the moment its second checkpoint's folder appears, i.e. mid-save:
  the rerun resumes from the first; and the moment the final checkpoint is complete, before the
  artifact's manifest: the rerun trains nothing). The same command is run again until it
  succeeds. One core where the reference had two: no artifact may depend on --cores either.

Then every file of every artifact is compared with the reference: byte for byte, except
what records time or place (timing(), MANIFEST_ONLY, PROVENANCE, NOT_COMPARED below).
tests/training/test_train.py kills training in process: before its first checkpoint, between two, and
after the final one.

Seeds: LMBUILD_FAULT_SEED (default 0) picks the kill points; the figures are printed.
What this does not test: a kill of Snakemake itself (it leaves a lock; see docs/design.md), a
kill of the shared store or of torchrun workers, a full disk.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SNAKEMAKE, smoke_config

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("LMBUILD_FAULT_SEED", "0"))
MAX_RUNS = 20

# Rule -> the script its job runs (the process the watcher kills).
RULES = {
    "build_raw_part": "raw_part",
    "build_raw": "raw",
    "build_cleaned_part": "cleaned_part",
    "build_cleaned": "cleaned",
    "dedup_map": "dedup_map",
    "dedup_bucket": "dedup_bucket",
    "build_deduplicated": "deduplicated",
    "build_tokenizer": "tokenizer",
    "build_shards_part": "shards_part",
    "build_shards": "shards",
    "build_init_checkpoint": "init_checkpoint",
    "build_trained_checkpoint": "trained_checkpoint",
    "build_eval_report": "eval_report",
    "build_report": "report",
}
# smoke.yaml: two raw parts (an embedded source each) of one shard, so 2 cleaning parts and
# 2 dedup maps (one per cleaning part), 2 dedup buckets, 2 shards parts
JOBS = {"raw_part": 2, "cleaned_part": 2, "dedup_map": 2, "dedup_bucket": 2, "shards_part": 2}

# Fields that measure time or memory, in manifests, report.json and loss_curve.csv at any depth:
# a key named `started`, `tokens_per_second` or ending in `seconds` (seconds, train_seconds,
# cpu_seconds, ...), and the peak RSS the runner records (`peak_rss_mb`, `parts_peak_rss_mb`).
def timing(key: str) -> bool:
    return key in ("started", "tokens_per_second") or key.endswith("seconds") or key.endswith("peak_rss_mb")


# Manifest fields that record where and how a job ran, not what it made: `job` (host and
# scheduler ids), `threads` (Snakemake gives a job min(threads, --cores)), training's
# `resumed_from_step` (None, or the checkpoint a rerun resumed from; also in report.json) and
# `steps_trained` (the steps the last attempt computed), and how many output shards (dedup) or
# parts (shards) a job found in the store from an attempt that was killed after writing them
# (`shards_reused`, `parts_reused`, a part's `reused`; the files are compared).
MANIFEST_ONLY = {"job", "threads"}
PROVENANCE = {"resumed_from_step", "steps_trained", "shards_reused", "parts_reused", "reused"}
# Files that hold wall-clock times by design: TensorBoard event files (named after the time,
# host and pid; one per attempt, crashed ones kept) and the report's renderings of its timings
# (throughput chart, timing table), whose data is report.json, compared.
NOT_COMPARED = [re.compile(r"^trained_checkpoint/[^/]+/tensorboard/"), re.compile(r"^report/[^/]+/report\.html$")]


def config() -> dict:
    return smoke_config(**{"train.max_steps": 20, "train.save_steps": 5})


FINAL = f"checkpoint-{config()['train']['max_steps']}"  # training's last checkpoint (20 steps, one every 5)
AFTER_FINAL = "after the final checkpoint, before the manifest"  # what a kill of training found


def command(work: Path, cores: int) -> list[str]:
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(config()))
    return [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--cores", str(cores), "--keep-going", "--configfile", str(cfg)]


# --- the watcher --------------------------------------------------------------------------


@dataclass
class Job:
    script: str
    pid: int
    attempt: int  # how many processes of this script came before it in this build
    seen: float
    end: float | None = None
    checkpoints: dict = field(default_factory=dict)  # folder name -> [appeared, complete]
    log: str | None = None  # its log file (the runner points fds 1 and 2 at it)
    log_base: int | None = None  # lines already in it when this attempt started (a rerun appends)
    lines: list = field(default_factory=list)  # when each line this attempt logged appeared
    killed: str | None = None  # the kill point, once the signal was delivered

    def progress(self, now: float) -> None:
        if self.log is None:
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/2")
            except OSError:
                return
            if not target.endswith(".log"):
                return
            self.log = target
            self.log_base = None  # set below from the first read
        try:
            n = Path(self.log).read_bytes().count(b"\n")
        except OSError:
            return
        if self.log_base is None:
            # The first line of an attempt is the runner's "job host=..." line: what came before is an earlier attempt's.
            text = Path(self.log).read_text(errors="replace").splitlines()
            starts = [i for i, line in enumerate(text) if ": job host=" in line]
            self.log_base = starts[-1] if starts else n
        while self.log_base + len(self.lines) < n:
            self.lines.append(now)


@dataclass
class Kill:
    """Where to kill attempt `attempt` of `script`: at a point of its progress, not a time.

    trigger "line": when its log holds `line` lines (the runner's first line comes when the work
    starts, its last after the artifact was renamed into place), then `delay` seconds of the
    reference build's time, scaled by how fast this attempt reached its first line compared
    with the reference (never slower: a fast machine must not outrun the kill).
    "checkpoint-dir": the moment the folder of the `nth` checkpoint this attempt writes appears
    (mid-save). "final-checkpoint": the moment the last checkpoint (step max_steps) is complete:
    the run has trained every step and has not yet written its artifact.
    """

    script: str
    attempt: int
    trigger: str
    delay: float
    line: int = 0
    reference_start: float = 1.0  # reference: seconds from the job's start to its first log line
    nth: int = 1  # "checkpoint-dir": which of the attempt's checkpoints

    def label(self) -> str:
        at = {"line": f"line {self.line}", "checkpoint-dir": f"checkpoint-dir {self.nth}"}.get(self.trigger, self.trigger)
        return f"{self.script}#{self.attempt} {at} +{self.delay:.2f}s"


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie's command line is empty)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


class Watcher:
    """Polls /proc and the artifacts folder of one build; kills jobs as planned."""

    def __init__(self, work: Path, plan: list[Kill] = ()):
        self.work = work
        self.plan = {(k.script, k.attempt): k for k in plan}
        self.pattern = re.compile(re.escape(str(work)) + r"/\.snakemake/scripts/tmp\w+\.(\w+)\.py$")
        self.jobs: dict[int, Job] = {}
        self.attempts: dict[str, int] = {}
        self.scripts: dict[int, tuple[str | None, float]] = {}  # pid -> (script or None, first seen)

    def live_scripts(self) -> dict[int, str]:
        """pid -> script of the live job processes of this build."""
        now = time.monotonic()
        found = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            known = self.scripts.get(pid)
            # A process seen just after fork still shows its parent's command line: look again.
            if known is None or (known[0] is None and now - known[1] < 1.0):
                try:
                    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                m = next((m for a in args[1:3] if (m := self.pattern.match(a.decode(errors="replace")))), None)
                known = self.scripts[pid] = (m.group(1) if m else None, known[1] if known else now)
            if known[0] is not None:
                found[pid] = known[0]
        return found

    def poll(self) -> None:
        now = time.monotonic()
        live = self.live_scripts()
        for pid, script in live.items():
            if pid not in self.jobs:
                n = self.attempts.get(script, 0)
                self.attempts[script] = n + 1
                self.jobs[pid] = Job(script, pid, n, now)
        art = self.work / "artifacts"
        ckpts = glob.glob(str(art / "_work" / "trained_checkpoint" / "*" / "trainer" / "checkpoint-*"))
        for pid, job in self.jobs.items():
            if job.end is not None:
                continue
            if pid not in live or not running(pid):
                job.end = now
                continue
            job.progress(now)
            if job.script == "trained_checkpoint":
                for c in ckpts:
                    state = job.checkpoints.setdefault(Path(c).name, [now, None])
                    if state[1] is None and os.path.exists(os.path.join(c, "trainer_state.json")):
                        state[1] = now
            self.maybe_kill(job, now)

    def kill_point(self, job: Job, k: Kill) -> float | None:
        if k.trigger == "line":
            if len(job.lines) < k.line:
                return None
            speed = min(1.0, max(0.1, (job.lines[0] - job.seen) / max(k.reference_start, 1e-3)))
            return job.lines[k.line - 1] + k.delay * speed
        if k.trigger == "final-checkpoint":
            final = job.checkpoints.get(FINAL)
            at = final[1] if final else None  # when its trainer_state.json appeared
            return None if at is None or at <= job.seen else at + k.delay
        # Checkpoints already on disk when this attempt started are not its own.
        appeared = sorted(s[0] for s in job.checkpoints.values() if s[0] > job.seen)
        return appeared[k.nth - 1] + k.delay if len(appeared) >= k.nth else None

    def maybe_kill(self, job: Job, now: float) -> None:
        k = self.plan.get((job.script, job.attempt))
        if k is None or job.killed:
            return
        at = self.kill_point(job, k)
        if at is not None and now >= at:
            try:
                os.kill(job.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                return
            job.killed = f"{k.label()}: killed {now - job.seen:.2f}s after start, after log line {len(job.lines)}"
            if job.script == "trained_checkpoint":
                art = self.work / "artifacts"
                if glob.glob(str(art / job.script / "*" / "manifest.json")):
                    job.killed += " (too late: its artifact was complete)"
                elif glob.glob(str(art / "_work" / job.script / "*" / "trainer" / FINAL / "trainer_state.json")):
                    job.killed += f" ({AFTER_FINAL})"

    def run(self, cmd: list[str], log: Path) -> int:
        with open(log, "a") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                self.poll()
                time.sleep(0.01)
        self.poll()
        return proc.returncode


def kill_plan(reference: Watcher, seed: int) -> list[Kill]:
    """Seeded kill points from the reference build's progress: every job of every rule once,
    training twice."""
    rng = random.Random(seed)
    first = {}
    for job in sorted(reference.jobs.values(), key=lambda j: j.seen):
        first.setdefault(job.script, job)
    plan = []
    for script in RULES.values():
        job = first[script]
        assert job.end is not None and job.lines, job
        times = job.lines + [job.end]
        start = job.lines[0] - job.seen
        if script == "trained_checkpoint":
            assert len([s for s in job.checkpoints.values() if s[1]]) >= 3, job.checkpoints
            plan += [
                Kill(script, 0, "checkpoint-dir", 0.0, nth=2),  # while the Trainer writes its second: resume from the first
                Kill(script, 1, "final-checkpoint", 0.0),  # every step trained, no artifact yet
            ]
            continue
        for attempt in range(JOBS.get(script, 1)):
            # Not after its last line: the runner logs that once the artifact is in place, and a
            # quick job (a gather) can exit before the watcher sees it.
            line = rng.randint(1, max(1, len(job.lines) - 1))
            plan.append(Kill(script, attempt, "line", rng.uniform(0.0, 0.5) * (times[line] - times[line - 1]), line, start))
    return plan


# --- comparing builds ---------------------------------------------------------------------


def without(obj, fields: set):
    """obj less timing fields and `fields`, at any depth."""
    if isinstance(obj, dict):
        return {k: without(v, fields) for k, v in obj.items() if k not in fields and not timing(k)}
    if isinstance(obj, list):
        return [without(v, fields) for v in obj]
    return obj


def byte_compared(name: str) -> bool:
    """Compared byte for byte (not the renderings, nor the files compared apart from timings)."""
    by_content = name.endswith("/loss_curve.csv") or (name.startswith("eval_report/") and name.endswith("/report.json"))
    return not any(p.match(name) for p in NOT_COMPARED) and not by_content


def manifest(path: Path) -> dict:
    """A manifest less what records time or place; its file list (if any) less the files that
    are not compared byte for byte (they are compared by content below)."""
    m = without(json.loads(path.read_text()), MANIFEST_ONLY | PROVENANCE)
    prefix = str(Path(path.parent.parent.name, path.parent.name))
    if isinstance(m.get("files"), dict):
        m["files"] = {f: e for f, e in m["files"].items() if byte_compared(f"{prefix}/{f}")}
    return m


def artifact_files(work: Path) -> dict[str, Path]:
    """stage/key/relative path -> file, for every complete artifact and keyed part of a build."""
    out = {}
    art = work / "artifacts"
    for manifest in sorted([*art.glob("*/*/manifest.json"), *art.glob("_parts/*/*/manifest.json")]):
        art = manifest.parent
        for f in sorted(art.rglob("*")):
            if f.is_file():
                out[str(f.relative_to(work / "artifacts"))] = f
    return out


def loss_curve(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if not timing(k)} for row in csv.DictReader(f)]


def differences(ref: Path, other: Path) -> tuple[int, list[str]]:
    """(files compared, what differs) between the artifacts of two builds."""
    a, b = artifact_files(ref), artifact_files(other)
    diffs = [f"only in one build: {name}" for name in sorted(set(a) ^ set(b)) if not any(p.match(name) for p in NOT_COMPARED)]
    compared = 0
    for name in sorted(set(a) & set(b)):
        if any(p.match(name) for p in NOT_COMPARED):
            continue
        compared += 1
        fa, fb = a[name], b[name]
        if name.endswith("/manifest.json"):
            same = manifest(fa) == manifest(fb)
        elif name.startswith("eval_report/") and name.endswith("/report.json"):
            same = without(json.loads(fa.read_text()), PROVENANCE) == without(json.loads(fb.read_text()), PROVENANCE)
        elif name.endswith("/loss_curve.csv"):
            same = loss_curve(fa) == loss_curve(fb)
        else:
            same = hashlib.sha256(fa.read_bytes()).digest() == hashlib.sha256(fb.read_bytes()).digest()
        if not same:
            diffs.append(f"differs: {name}")
    return compared, diffs


def debris(work: Path) -> list[str]:
    """What a finished build should not hold: temporary folders, scratch files, parts of an
    artifact (not keyed parts, _parts/<stage>/<part key>/ with their manifest: store entries)."""
    art = work / "artifacts"
    left = [str(p.relative_to(art)) for depth in range(1, 5) for p in art.glob("*/" * (depth - 1) + ".tmp-*")]
    left += [str(p.relative_to(art)) for p in art.rglob("*") if p.is_file() and "_work" in p.relative_to(art).parts]
    left += [str(p.relative_to(art)) for p in (art / "_parts").glob("*/[0-9a-f]*/*") if not (p.parent / "manifest.json").is_file()]
    return left


# --- the test -----------------------------------------------------------------------------


def test_sigkill_every_rule_then_rerun_gives_the_same_artifacts(tmp_path):
    ref_dir, fault_dir = tmp_path / "reference", tmp_path / "faults"
    for d in (ref_dir, fault_dir):
        d.mkdir()

    reference = Watcher(ref_dir)
    rc = reference.run(command(ref_dir, 2), ref_dir / "snakemake.out")
    assert rc == 0, (ref_dir / "snakemake.out").read_text()[-5000:]

    plan = kill_plan(reference, SEED)
    faults = Watcher(fault_dir, plan)
    runs = []
    for _ in range(MAX_RUNS):
        # One core where the reference had two: the artifacts must not depend on --cores either.
        runs.append(faults.run(command(fault_dir, 1), fault_dir / "snakemake.out"))
        if runs[-1] == 0:
            break

    kills = sorted(j.killed for j in faults.jobs.values() if j.killed)
    missed = sorted(k.label() for k in plan if not any(x.startswith(k.label() + ":") for x in kills))
    killed_rules = {label.split("#")[0] for label in kills}
    print(f"\nseed {SEED}: {len(kills)} of {len(plan)} planned kills delivered, {len(runs)} snakemake runs, exit codes {runs}")
    for label in kills:
        print(f"  killed {label}")
    for label in missed:
        print(f"  missed {label} (the job ended before its kill point)")

    out = (fault_dir / "snakemake.out").read_text()
    assert runs[-1] == 0, out[-5000:]
    assert killed_rules == set(RULES.values()), f"rules never killed: {set(RULES.values()) - killed_rules}"
    # Every failed run failed because of a kill: as many failed jobs as kills.
    assert out.count("Error in rule") == len(kills), out[-5000:]
    assert not debris(fault_dir), debris(fault_dir)

    compared, diffs = differences(ref_dir, fault_dir)
    print(f"  recovered (--cores 1, killed) vs reference (--cores 2): {compared} artifact files compared, {len(diffs)} differ")
    assert not diffs, diffs
    # Training's last kill found the final checkpoint complete and no artifact (the final-checkpoint
    # points aim there; the mid-save one lands there when the save outran the watcher): the last
    # attempt resumed at max_steps and trained nothing, where the Trainer used to take a step more.
    training = sorted((j for j in faults.jobs.values() if j.script == "trained_checkpoint" and j.killed), key=lambda j: j.attempt)
    if training and AFTER_FINAL in training[-1].killed:
        (trained,) = (fault_dir / "artifacts" / "trained_checkpoint").glob("*/manifest.json")
        counts = json.loads(trained.read_text())["counts"]
        steps = config()["train"]["max_steps"]
        assert (counts["steps"], counts["resumed_from_step"], counts["steps_trained"]) == (steps, steps, 0), counts
        print(f"  resumed at the final checkpoint: steps {steps}, steps_trained 0")


def test_the_comparison_sees_a_changed_byte_and_ignores_only_timings(tmp_path):
    """The checker above can fail: one flipped byte, a changed count, a missing file."""

    def build(root: Path, *, byte=b"\x00", steps=40, seconds=1.0, extra=False):
        art = root / "artifacts" / "trained_checkpoint" / "0123456789abcdef"
        (art / "tensorboard").mkdir(parents=True)
        (art / "model.safetensors").write_bytes(b"weights" + byte)
        (art / "tensorboard" / f"events.{seconds}").write_text("wall time")
        (art / "loss_curve.csv").write_text(f"step,train_loss,tokens_per_second\n{steps},6.0,{1000 * seconds}\n")
        counts = {"steps": steps, "train_seconds": seconds, "resumed_from_step": 10 if extra else None}
        job = {"host": f"h{seconds}"}
        (art / "manifest.json").write_text(json.dumps({"counts": counts, "started": str(seconds), "seconds": seconds, "threads": 2, "job": job}))
        if extra:
            (art / "extra.json").write_text("{}")
        return root

    ref = build(tmp_path / "a")
    assert differences(ref, build(tmp_path / "b", seconds=2.0)) == (3, [])
    assert differences(ref, build(tmp_path / "c", byte=b"\x01"))[1] == ["differs: trained_checkpoint/0123456789abcdef/model.safetensors"]
    assert differences(ref, build(tmp_path / "d", steps=41))[1] == [
        "differs: trained_checkpoint/0123456789abcdef/loss_curve.csv",
        "differs: trained_checkpoint/0123456789abcdef/manifest.json",
    ]
    assert differences(ref, build(tmp_path / "e", extra=True))[1] == ["only in one build: trained_checkpoint/0123456789abcdef/extra.json"]
