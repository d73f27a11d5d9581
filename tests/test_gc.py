"""lmbuild.gc: what the store no longer needs, its size, and removal only on request."""

import os
import subprocess
import sys

from lmbuild.artifact import seal
from lmbuild.gc import gc, scan

STAGES = ["raw", "cleaned", "deduplicated", "trained_checkpoint"]
K = ["a" * 16, "b" * 16, "c" * 16, "d" * 16]


def _artifact(root, stage, key, size=10):
    p = root / stage / key
    p.mkdir(parents=True)
    (p / "data.bin").write_bytes(b"x" * size)
    seal(p, {"stage": stage, "key": key})
    return p


def _store(tmp_path):
    root = tmp_path / "artifacts"
    _artifact(root, "raw", K[0], 100)
    cleaned = _artifact(root, "cleaned", K[0], 1)  # reachable
    old = _artifact(root, "cleaned", K[1], 1000)  # unreachable
    # Parts of the complete cleaned artifact, one file hard-linked into it (removing frees nothing).
    part = root / "cleaned_parts" / K[0] / "00000"
    part.mkdir(parents=True)
    os.link(cleaned / "data.bin", part / "data.bin")
    (root / "cleaned_parts" / K[2]).mkdir()  # empty part folder
    # Scratch: of a reachable unfinished training (kept: it resumes) and of an unreachable one.
    (root / "_work" / "trained_checkpoint" / K[3] / "checkpoint-10").mkdir(parents=True)
    (root / "_work" / "trained_checkpoint" / K[1] / "checkpoint-10").mkdir(parents=True)
    (root / "_work" / "trained_checkpoint" / K[1] / "checkpoint-10" / "w").write_bytes(b"w" * 50)
    (root / "_work" / "trained_checkpoint" / f"{K[1]}.lock").touch()
    (root / "cleaned" / f".tmp-{K[2]}-host-1-2").mkdir()  # a dead writer's temp folder
    reachable = {("raw", K[0]), ("cleaned", K[0]), ("trained_checkpoint", K[3])}
    return root, reachable, old


def test_lists_by_default_and_removes_only_on_request(tmp_path):
    root, reachable, old = _store(tmp_path)
    kinds = {(e.kind, e.path.relative_to(root).as_posix()) for e in scan(root, reachable, STAGES)}
    assert kinds == {
        ("artifact", f"cleaned/{K[1]}"),
        ("temp", f"cleaned/.tmp-{K[2]}-host-1-2"),
        ("parts", f"cleaned_parts/{K[0]}"),
        ("empty", f"cleaned_parts/{K[2]}"),
        ("work", f"_work/trained_checkpoint/{K[1]}"),
        ("lock", f"_work/trained_checkpoint/{K[1]}.lock"),
    }
    text = gc(root, reachable, STAGES)
    # 1,000 bytes of data + the old manifest + 50 of scratch; the hard-linked part frees nothing.
    freed = 1000 + (old / "manifest.json").stat().st_size + 50
    assert text.splitlines()[-1].startswith(f"gc: 6 entries, {freed / 1024:.1f} KiB ({freed} bytes) would be freed; nothing removed (dry run)")
    assert old.is_dir()  # dry run
    gc(root, reachable, STAGES, do_remove=True)
    assert not old.exists() and not any((root / "cleaned_parts").iterdir())
    assert (root / "cleaned" / K[0] / "data.bin").read_bytes() == b"x"  # reachable, and its linked file, stay
    assert (root / "_work" / "trained_checkpoint" / K[3] / "checkpoint-10").is_dir()  # resumable scratch stays
    assert sorted(p.name for p in (root / "cleaned").iterdir()) == [K[0]]
    assert gc(root, reachable, STAGES) == f"gc: nothing to remove in {root}"


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
        paths = {e.path for e in scan(root, reachable, STAGES)}
        assert old not in paths and tmp not in paths and lock not in paths
    finally:
        holder.kill()
        holder.wait()
    paths = {e.path for e in scan(root, reachable, STAGES)}
    assert {old, tmp, lock} <= paths


def test_stable_caches_that_no_wsd_run_reaches_are_listed(tmp_path):
    root = tmp_path / "artifacts"
    kept, old = root / "_stable" / K[0] / "step-10", root / "_stable" / K[1] / "step-10"
    for p in (kept, old):
        p.mkdir(parents=True)
        (p / "optimizer.pt").write_bytes(b"o" * 70)
    (root / "_stable" / K[0] / ".tmp-step-20-123").mkdir()  # a dead writer's
    entries = scan(root, {("_stable", K[0])}, STAGES)
    assert {(e.kind, e.path.relative_to(root).as_posix()) for e in entries} == {("stable", f"_stable/{K[1]}"), ("temp", f"_stable/{K[0]}/.tmp-step-20-123")}
    gc(root, {("_stable", K[0])}, STAGES, do_remove=True)
    assert kept.is_dir() and not old.parent.exists()


def test_the_plan_and_the_job_agree_on_the_stable_key(tmp_path):
    """lmbuild.plan.stable_cache_keys (what gc keeps) is the key the training job writes under."""
    from lmbuild import train
    from lmbuild.config import validate
    from lmbuild.plan import Plan, stable_cache_keys

    plan = Plan(validate({"train": {"lr_scheduler": "wsd"}, "artifacts": str(tmp_path / "a")}))
    a = plan.artifacts["trained_checkpoint"]
    inputs = {}
    for name, artifact in a.inputs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(f'{{"key": "{artifact.key}"}}')
        inputs[name] = tmp_path / name
    job = train.stable_key(a.spec()["settings"], inputs, a.lineage())
    assert stable_cache_keys(plan) == [job]
    assert stable_cache_keys(Plan(validate({"artifacts": str(tmp_path / "a")}))) == []  # cosine: no cache


def test_shards_parts_are_collected_like_cleaned_parts(tmp_path):
    root = tmp_path / "artifacts"
    part = root / "shards_parts" / K[1] / "00000" / "tokens"
    part.mkdir(parents=True)
    (part / "shard-00000.train.0.bin").write_bytes(b"t" * 64)
    kinds = {(e.kind, e.path.relative_to(root).as_posix()) for e in scan(root, set(), STAGES)}
    assert kinds == {("parts", f"shards_parts/{K[1]}")}
