"""lmbuild.store.gc: what the store no longer needs, its size, and removal only on request; what
other checkouts' registered configs and running builds keep."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lmbuild.store.artifact import release, seal
from lmbuild.store.gc import DAY, Policy, gc, scan
from lmbuild.store.registry import REFS, checkout_id, refs_lock, register

STAGES = ["raw", "cleaned", "deduplicated", "shards", "trained_checkpoint"]
K = ["a" * 16, "b" * 16, "c" * 16, "d" * 16]


def _artifact(root, stage, key, size=10):
    p = root / stage / key
    p.mkdir(parents=True)
    (p / "data.bin").write_bytes(b"x" * size)
    seal(p, {"stage": stage, "key": key})
    return p


def _written_long_ago(root):
    """Every file and folder below ``root`` last written in 2001 (a build that registered
    nothing is kept for the retention window after it wrote)."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in [*files, *dirs, "."]:
            os.utime(os.path.join(folder, name), (1e9, 1e9), follow_symlinks=False)


def _store(tmp_path):
    root = tmp_path / "artifacts"
    _artifact(root, "raw", K[0], 100)
    cleaned = _artifact(root, "cleaned", K[0], 1)  # reachable
    old = _artifact(root, "cleaned", K[1], 1000)  # unreachable
    # Parts of the complete cleaned artifact, one file hard-linked into it (removing frees nothing).
    part = root / "_parts" / "cleaned" / K[0] / "00000"
    part.mkdir(parents=True)
    os.link(cleaned / "data.bin", part / "data.bin")
    (root / "_parts" / "cleaned" / K[2]).mkdir()  # empty part folder
    # Scratch: of a reachable unfinished training (kept: it resumes) and of an unreachable one.
    (root / "_work" / "trained_checkpoint" / K[3] / "checkpoint-10").mkdir(parents=True)
    (root / "_work" / "trained_checkpoint" / K[1] / "checkpoint-10").mkdir(parents=True)
    (root / "_work" / "trained_checkpoint" / K[1] / "checkpoint-10" / "w").write_bytes(b"w" * 50)
    (root / "_work" / "trained_checkpoint" / f"{K[1]}.lock").touch()
    (root / "cleaned" / f".tmp-{K[2]}-host-1-2").mkdir()  # a dead writer's temp folder
    reachable = {("raw", K[0]), ("cleaned", K[0]), ("trained_checkpoint", K[3])}
    _written_long_ago(root)
    return root, reachable, old


def _goes(root, reachable, **kw):
    """{(kind, path below root)} of what gc removes."""
    return {(e.kind, e.path.relative_to(root).as_posix()) for e in scan(root, reachable, STAGES, **kw) if e.remove}


def _why(root, reachable, path, **kw):
    """(removed?, why) of the entry at ``path``."""
    (e,) = [e for e in scan(root, reachable, STAGES, **kw) if e.path == path]
    return e.remove, e.why


def test_lists_by_default_and_removes_only_on_request(tmp_path):
    root, reachable, old = _store(tmp_path)
    kinds = _goes(root, reachable)
    assert kinds == {
        ("artifact", f"cleaned/{K[1]}"),
        ("temp", f"cleaned/.tmp-{K[2]}-host-1-2"),
        ("parts", f"_parts/cleaned/{K[0]}"),
        ("empty", f"_parts/cleaned/{K[2]}"),
        ("work", f"_work/trained_checkpoint/{K[1]}"),
        ("lock", f"_work/trained_checkpoint/{K[1]}.lock"),
    }
    text = gc(root, reachable, STAGES)
    # 1,000 bytes of data + the old manifest + 50 of scratch; the hard-linked part frees nothing.
    freed = 1000 + (old / "manifest.json").stat().st_size + 50
    assert text.splitlines()[-2].startswith(f"gc: 6 entries, {freed / 1024:.1f} KiB ({freed} bytes) would be freed; 3 kept; nothing removed (dry run)")
    assert f"remove artifact     {old}  (reached by no registered config)" in text
    assert f"keep   work         {root / '_work' / 'trained_checkpoint' / K[3]}  (resumable scratch of an unfinished trained_checkpoint artifact, reached by this checkout's config)" in text
    assert text.splitlines()[-1].startswith("gc: gc.scope unregistered, gc.retention_days 30, gc.forget none")
    assert old.is_dir()  # dry run
    gc(root, reachable, STAGES, do_remove=True)
    assert not old.exists() and not (root / "_parts" / "cleaned").exists()  # its parts, and the folders they emptied
    assert (root / "cleaned" / K[0] / "data.bin").read_bytes() == b"x"  # reachable, and its linked file, stay
    assert (root / "_work" / "trained_checkpoint" / K[3] / "checkpoint-10").is_dir()  # resumable scratch stays
    assert sorted(p.name for p in (root / "cleaned").iterdir()) == [K[0]]
    assert f"gc: nothing to remove in {root} (3 entries kept)" in gc(root, reachable, STAGES)


def test_what_another_process_holds_is_left_alone(tmp_path):
    root, reachable, old = _store(tmp_path)
    lock = root / "_locks" / f"cleaned-{K[1]}.lock"  # another checkout is building cleaned K[1]
    lock.parent.mkdir()
    tmp = root / "cleaned" / f".tmp-{K[2]}-host-1-2"
    code = (
        "import fcntl, os, sys, time\n"
        f"a = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT); fcntl.flock(a, fcntl.LOCK_EX)\n"
        f"b = os.open({str(tmp)!r}, os.O_RDONLY); fcntl.flock(b, fcntl.LOCK_EX)\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        paths = {e.path for e in scan(root, reachable, STAGES) if e.remove}
        assert old not in paths and tmp not in paths and lock not in paths
        assert _why(root, reachable, old) == (False, "another build holds its build lock")
    finally:
        holder.kill()
        holder.wait()
    paths = {e.path for e in scan(root, reachable, STAGES) if e.remove}
    assert {old, tmp, lock} <= paths


def test_stable_caches_that_no_wsd_run_reaches_are_listed(tmp_path):
    root = tmp_path / "artifacts"
    kept, old = root / "_stable" / K[0] / "step-10", root / "_stable" / K[1] / "step-10"
    for p in (kept, old):
        p.mkdir(parents=True)
        (p / "optimizer.pt").write_bytes(b"o" * 70)
    (root / "_stable" / K[0] / ".tmp-step-20-123").mkdir()  # a dead writer's
    _written_long_ago(root)
    assert _goes(root, {("_stable", K[0])}) == {("stable", f"_stable/{K[1]}"), ("temp", f"_stable/{K[0]}/.tmp-step-20-123")}
    gc(root, {("_stable", K[0])}, STAGES, do_remove=True)
    assert kept.is_dir() and not old.parent.exists()


def test_the_plan_and_the_job_agree_on_the_stable_key(tmp_path):
    """lmbuild.build.graph.store_keeps (what gc keeps besides artifacts: Stage.keeps, the keyed parts)
    holds the stable-phase cache key the training job writes under."""
    from lmbuild.training.stable_cache import stable_key
    from lmbuild.build.config import validate
    from lmbuild.build.graph import Plan, store_keeps

    plan = Plan(validate({"train": {"lr_scheduler": "wsd"}, "artifacts": str(tmp_path / "a")}))
    a = plan.artifacts["trained_checkpoint"]
    inputs = {}
    for name, artifact in a.inputs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(f'{{"key": "{artifact.key}"}}')
        inputs[name] = tmp_path / name
    job = stable_key(a.spec()["settings"], inputs, a.lineage())
    parts = [f"_parts/{p.stage}/{p.key}" for x in plan.all_artifacts() for p in x.parts]
    assert parts and store_keeps(plan) == sorted([*parts, f"_stable/{job}"])  # and the keyed parts
    assert not [k for k in store_keeps(Plan(validate({"artifacts": str(tmp_path / "a")}))) if not k.startswith("_parts/")]  # cosine: no cache


def test_shards_parts_are_collected_like_cleaned_parts(tmp_path):
    root = tmp_path / "artifacts"
    part = root / "_parts" / "shards" / K[1] / "00000" / "tokens"
    part.mkdir(parents=True)
    (part / "shard-00000.train.0.bin").write_bytes(b"t" * 64)
    _written_long_ago(root)
    assert _goes(root, set()) == {("parts", f"_parts/shards/{K[1]}")}


# --- other checkouts: registrations, running builds, scopes ------------------------------------

NOW = 1_800_000_000.0


def _other_checkout(tmp_path, root, keys, days_ago, name="other"):
    """A registration by another working directory that planned ``keys`` ``days_ago``."""
    (tmp_path / name).mkdir(exist_ok=True)
    return register(root, tmp_path / name, [str(tmp_path / name / "config.yaml")], keys, now=NOW - days_ago * DAY)


def test_a_registered_config_keeps_its_artifacts_and_scratch_within_the_window(tmp_path):
    root, reachable, old = _store(tmp_path)
    other = _other_checkout(tmp_path, root, [f"cleaned/{K[1]}", f"trained_checkpoint/{K[1]}"], days_ago=10)
    work = root / "_work" / "trained_checkpoint" / K[1]
    assert _why(root, reachable, old, now=NOW) == (False, f"reached by {other.label()} 10 days ago")
    # Its unfinished training keeps its scratch (the rerun resumes from it); the free lock goes.
    assert _why(root, reachable, work, now=NOW) == (False, f"resumable scratch of an unfinished trained_checkpoint artifact, reached by {other.label()} 10 days ago")
    gc(root, reachable, STAGES, do_remove=True, now=NOW)
    assert old.is_dir() and (work / "checkpoint-10" / "w").read_bytes() == b"w" * 50
    # Beyond the window (a shorter one here) they go, and the dry run says since when.
    nine = Policy(retention_days=9)
    assert _why(root, reachable, old, now=NOW, policy=nine) == (True, f"last reached by {other.label()} 10 days ago, beyond gc.retention_days (9)")
    gc(root, reachable, STAGES, do_remove=True, now=NOW, policy=nine)
    assert not old.exists() and not work.exists()


def test_scopes_widen_what_goes_one_step_each(tmp_path):
    root = tmp_path / "artifacts"
    for key in K[:3]:
        _artifact(root, "cleaned", key)
    here = tmp_path / "here"
    here.mkdir()
    mine = register(root, here, [], [f"cleaned/{K[1]}"], now=NOW - 3 * DAY)  # this checkout's earlier config
    other = _other_checkout(tmp_path, root, [f"cleaned/{K[2]}"], days_ago=3)
    current = {("cleaned", K[0])}
    kw = {"checkout": mine.id, "now": NOW}
    assert _goes(root, current, **kw) == set()
    assert _goes(root, current, policy=Policy(scope="checkout"), **kw) == {("artifact", f"cleaned/{K[1]}")}
    assert _goes(root, current, policy=Policy(scope="store"), **kw) == {("artifact", f"cleaned/{K[1]}"), ("artifact", f"cleaned/{K[2]}")}
    assert _why(root, current, root / "cleaned" / K[2], policy=Policy(scope="store"), **kw) == (
        True, f"last reached by {other.label()} 3 days ago; gc.scope: store counts only this checkout's config")
    assert _why(root, current, root / "cleaned" / K[1], policy=Policy(scope="checkout"), **kw) == (
        True, f"last reached by {mine.label()} 3 days ago, this checkout's earlier config (gc.scope: checkout)")
    with pytest.raises(ValueError, match="gc.scope: 'everything' is not one of unregistered, checkout, store"):
        Policy(scope="everything")


_BUILD = """
import sys
from lmbuild.store.registry import register
register(sys.argv[1], sys.argv[2], [], sys.argv[3:], live=True)
print("registered", flush=True)
sys.stdin.read()
"""


def test_a_running_build_keeps_what_it_planned_at_every_scope(tmp_path):
    root = tmp_path / "artifacts"
    old = _artifact(root, "cleaned", K[1])
    work = root / "_work" / "trained_checkpoint" / K[1] / "trainer" / "checkpoint-10"
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    build = subprocess.Popen([sys.executable, "-c", _BUILD, str(root), str(tmp_path), f"cleaned/{K[1]}", f"trained_checkpoint/{K[1]}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert build.stdout.readline().strip() == "registered"
        widest = Policy(scope="store", retention_days=0, forget="stale")
        held = f"held by a running build ({os.path.realpath(tmp_path)}, pid {build.pid} on "
        removed, why = _why(root, set(), old, policy=widest)
        assert not removed and why.startswith(held)
        gc(root, set(), STAGES, do_remove=True, policy=widest)
        assert old.is_dir() and work.is_dir()
    finally:
        build.send_signal(signal.SIGKILL)  # a hard kill: its live file stays behind, its flock goes
        build.wait()
    (live,) = (root / REFS / "live").iterdir()
    assert _why(root, set(), live) == (True, "record of a build that is no longer running")
    assert _why(root, set(), old)[0] is False  # its registration still keeps it (default scope)
    gc(root, set(), STAGES, do_remove=True, policy=Policy(scope="store"))
    assert not old.exists() and not live.exists() and not (root / "_work" / "trained_checkpoint" / K[1]).exists()


def test_a_build_registering_waits_for_a_running_gc(tmp_path):
    """gc decides and removes under the store's registration lock: a build parsed meanwhile
    registers (and then plans) only after it, against what gc left."""
    root = tmp_path / "artifacts"
    (root / REFS).mkdir(parents=True)
    fd = refs_lock(root, "gc")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    build = subprocess.Popen([sys.executable, "-c", _BUILD, str(root), str(tmp_path), f"cleaned/{K[1]}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(2)
        assert build.poll() is None and not list((root / REFS).glob("*.json"))  # waiting
        release(root / REFS / ".lock", fd)
        assert build.stdout.readline().strip() == "registered"
    finally:
        build.kill()
        _, err = build.communicate()
    assert "lmbuild: registering this build: waiting for gc or another build's registration" in err


def test_stale_registrations_are_forgotten_only_on_request(tmp_path):
    root = tmp_path / "artifacts"
    old = _artifact(root, "cleaned", K[1])
    stale = _other_checkout(tmp_path, root, [f"cleaned/{K[1]}"], days_ago=40)
    fresh = _other_checkout(tmp_path, root, [f"cleaned/{K[2]}"], days_ago=2, name="fresh")
    removed, why = _why(root, set(), stale.path, now=NOW)
    assert not removed and why == f"registration of {stale.label()}: last parse 40 days ago, 0 of 1 keys planned within 30 days: counts for nothing now; gc.forget: stale forgets it"
    assert _why(root, set(), old, now=NOW) == (True, f"last reached by {stale.label()} 40 days ago, beyond gc.retention_days (30)")
    gc(root, set(), STAGES, do_remove=True, now=NOW, policy=Policy(forget="stale"))
    assert not stale.path.exists() and fresh.path.exists() and not old.exists()


def test_an_unreadable_registration_counts_for_nothing_and_stays(tmp_path):
    root = tmp_path / "artifacts"
    old = _artifact(root, "cleaned", K[1])
    bad = root / REFS / f"{K[0]}.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    _written_long_ago(root / "cleaned")
    assert _goes(root, set()) == {("artifact", f"cleaned/{K[1]}")}
    gc(root, set(), STAGES, do_remove=True)
    assert bad.exists() and not old.exists()
    assert json.loads(_other_checkout(tmp_path, root, [], 0).path.read_text())["keys"] == {}
    assert checkout_id(tmp_path, []) != checkout_id(tmp_path / "other", [])


def test_what_a_build_that_registers_nothing_wrote_lately_stays_by_default(tmp_path):
    """A checkout on an lmbuild from before registrations (or the Python API) registers nothing:
    its artifacts and unfinished scratch stay for the window after they were written."""
    root = tmp_path / "artifacts"
    fresh = _artifact(root, "cleaned", K[1])
    work = root / "_work" / "trained_checkpoint" / K[1] / "trainer" / "checkpoint-10"
    work.mkdir(parents=True)
    removed, why = _why(root, set(), fresh)
    assert not removed and why.startswith("written 0 seconds ago by a build that no registration names; kept for gc.retention_days (30)")
    assert _why(root, set(), work.parent.parent)[1].startswith("resumable scratch of an unfinished trained_checkpoint artifact, written 0 seconds ago")
    assert _goes(root, set(), policy=Policy(scope="store")) == {("artifact", f"cleaned/{K[1]}"), ("work", f"_work/trained_checkpoint/{K[1]}")}
    assert _goes(root, set(), now=time.time() + 31 * DAY) == {("artifact", f"cleaned/{K[1]}"), ("work", f"_work/trained_checkpoint/{K[1]}")}


def test_a_running_builds_unreadable_record_keeps_everything(tmp_path):
    root = tmp_path / "artifacts"
    old = _artifact(root, "cleaned", K[1])
    _written_long_ago(root)
    live = root / REFS / "live" / "x-host-1.json"
    live.parent.mkdir(parents=True)
    live.write_text("{damaged")
    code = f"import fcntl, os, time; fd = os.open({str(live)!r}, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _why(root, set(), old, policy=Policy(scope="store")) == (False, f"a running build's record cannot be read ({live}): everything stays")
    finally:
        holder.kill()
        holder.wait()
    assert _goes(root, set()) == {("artifact", f"cleaned/{K[1]}"), ("live", "_refs/live/x-host-1.json")}


def _keyed_part(root, stage, key):
    p = root / "_parts" / stage / key
    p.mkdir(parents=True)
    (p / "shard-00000.parquet").write_bytes(b"p")
    seal(p, {"stage": f"{stage}_part", "key": key})
    return p


def test_keyed_parts_stay_while_a_kept_artifact_lists_them_or_the_config_reaches_them(tmp_path):
    """A keyed part (_parts/<stage>/<part key>, with its manifest) is a store entry: kept while a
    kept complete artifact lists it in counts.part_keys or this config reaches it; an old one
    that nothing lists goes; a recent one that nothing lists stays (a build may not have gathered it)."""
    root = tmp_path / "artifacts"
    raw = root / "raw" / K[0]
    raw.mkdir(parents=True)
    seal(raw, {"stage": "raw", "key": K[0], "counts": {"part_keys": [K[1]]}})
    listed, reached, orphan = (_keyed_part(root, "raw", k) for k in K[1:])
    _written_long_ago(root)
    recent = _keyed_part(root, "raw", "e" * 16)
    reachable = {("raw", K[0]), ("_parts/raw", K[2])}
    assert _goes(root, reachable) == {("parts", f"_parts/raw/{K[3]}")}
    assert _goes(root, reachable, policy=Policy(scope="store")) == {("parts", f"_parts/raw/{p}") for p in (K[3], "e" * 16)}
    assert _why(root, reachable, listed) == (False, f"part of the kept artifact raw/{K[0]}")
    assert _why(root, reachable, reached)[1].startswith("part reached by this checkout's config")
    assert _why(root, reachable, recent)[1].startswith("part that no kept artifact lists, written")
    assert _why(root, reachable, orphan) == (True, "part that no kept artifact lists")
    # The raw artifact unreachable and old: it goes, and so does the part only it listed.
    assert _goes(root, {("_parts/raw", K[2])}) == {("artifact", f"raw/{K[0]}"), ("parts", f"_parts/raw/{K[1]}"), ("parts", f"_parts/raw/{K[3]}")}
