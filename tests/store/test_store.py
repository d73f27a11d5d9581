"""lmbuild.store.registry, with real `snakemake` processes: two checkouts sharing one store at the same
time, damage found before a stage reads it, gc, a file-size limit, and recovery after
SIGKILL of Snakemake itself."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lmbuild.store.artifact import MANIFEST, read_manifest, seal, verify
from lmbuild.store.registry import builds, checkout_id, planned, recover, register, registrations, verify_store
from conftest import ROOT, SNAKEMAKE, jobs_of_dry_run, smoke_config


def test_only_building_command_lines_claim_the_store():
    assert builds(["snakemake", "--cores", "2", "deduplicated"])
    assert not builds(["snakemake", "-n", "--cores", "2"])
    assert not builds(["snakemake", "-np"])
    assert not builds(["snakemake", "--unlock"])
    assert not builds(["snakemake", "gc"])


_CLAIM = """
import sys
from lmbuild.store.registry import claim
print(claim(sys.argv[1], [("cleaned", "a" * 16, sys.argv[2]), ("raw", "b" * 16, sys.argv[3])]), flush=True)
sys.stdin.read()
"""


def test_a_second_builder_of_an_unfinished_key_waits_for_the_first(tmp_path):
    import sys

    store = tmp_path / "store"
    done = store / "raw" / ("b" * 16)
    done.mkdir(parents=True)
    (done / MANIFEST).write_text("{}")  # complete: not claimed
    args = [sys.executable, "-c", _CLAIM, str(store), str(store / "cleaned" / ("a" * 16)), str(done)]
    first = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "['cleaned/" + "a" * 16 + "']"
    second = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    assert second.poll() is None  # waiting
    first.communicate("")  # the first build ends
    out, err = second.communicate("", timeout=30)
    assert out.strip() == "['cleaned/" + "a" * 16 + "']"
    assert "another build holds cleaned " + "a" * 16 in err and "the other build finished" in err


def test_one_process_parsing_twice_does_not_wait_for_itself(tmp_path):
    from lmbuild.store.registry import claim

    art = [("cleaned", "c" * 16, str(tmp_path / "cleaned" / ("c" * 16)))]
    assert claim(tmp_path, art) == ["cleaned/" + "c" * 16]
    assert claim(tmp_path, art) == ["cleaned/" + "c" * 16]  # returns at once


def _marker(meta: Path, path: str) -> Path:
    """An incomplete marker as Snakemake's file persistence writes it (a short path)."""
    m = meta / "incomplete" / base64.urlsafe_b64encode(path.encode()).decode()
    m.parent.mkdir(parents=True, exist_ok=True)
    m.write_text("")
    return m


def test_recover_settles_stale_locks_and_markers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    meta = tmp_path / ".snakemake"
    (meta / "locks").mkdir(parents=True)
    (meta / "locks" / "0.input.lock").write_text("x")
    done = tmp_path / "artifacts" / "cleaned" / ("a" * 16)
    done.mkdir(parents=True)
    (done / MANIFEST).write_text(json.dumps({"files": {}}))
    half = tmp_path / "artifacts" / "raw" / ("b" * 16)
    half.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    markers = [_marker(meta, f"artifacts/cleaned/{'a' * 16}"), _marker(meta, f"artifacts/raw/{'b' * 16}"), _marker(meta, "elsewhere")]
    lines = recover("artifacts", meta)
    assert lines[0].startswith("removed 1 stale Snakemake lock(s)")
    assert not list((meta / "locks").iterdir())
    assert done.is_dir() and not half.exists() and outside.is_dir()
    assert [m.exists() for m in markers] == [False, False, True]  # not ours: Snakemake decides


def test_a_registration_keeps_each_keys_last_planning_time(tmp_path, monkeypatch):
    root, work = tmp_path / "store", tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)  # Snakemake's config file names are relative to the working directory
    (work / "config.yaml").write_text("{}")
    register(root, work, [str(work / "config.yaml")], ["cleaned/" + "a" * 16, "raw/" + "b" * 16], now=1000.0)
    reg = register(root, work, [str(work / "config.yaml"), "config.yaml"], ["cleaned/" + "c" * 16, "raw/" + "b" * 16], now=2000.0)
    (again,) = registrations(root)
    assert again == reg and again.path == root / "_refs" / f"{reg.id}.json"
    assert again.keys == {"cleaned/" + "a" * 16: 1000.0, "cleaned/" + "c" * 16: 2000.0, "raw/" + "b" * 16: 2000.0}
    assert again.updated == 2000.0 and again.workdir == str(work.resolve())
    # One id per working directory and set of config files, whatever their order or spelling.
    assert reg.id == checkout_id(work, ["config.yaml"]) == checkout_id(str(work) + "/", [str(work / "config.yaml")] * 2)
    assert reg.id != checkout_id(work, ["config.yaml", "other.yaml"]) != checkout_id(tmp_path, ["config.yaml"])
    assert not list((root / "_refs").glob(".*"))  # no lock or half-written file left


def _sealed(root: Path, stage: str, key: str) -> str:
    p = root / stage / key
    p.mkdir(parents=True)
    (p / "data.bin").write_bytes(b"x" * 10)
    seal(p, {"stage": stage, "key": key})
    return str(p)


def test_verify_reports_every_missing_planned_artifact(tmp_path):
    intact = _sealed(tmp_path, "raw", "a" * 16)
    damaged = _sealed(tmp_path, "cleaned", "a" * 16)
    (Path(damaged) / "data.bin").write_bytes(b"y" * 10)  # same size, other bytes
    gone = str(tmp_path / "trained_checkpoint" / ("a" * 16))
    lines, errors = verify_store([(intact, "raw"), (damaged, "cleaned"), (gone, "trained_checkpoint")], [str(tmp_path / "plan" / ("a" * 16))])
    assert errors == 2
    assert lines[0] == f"ok: {intact} (1 files)"
    assert lines[1].startswith(f"error: verify: {damaged}: damaged: data.bin")
    assert lines[2] == f"error: verify: {gone}: missing (`snakemake trained_checkpoint` builds it)"
    assert lines[3] == "verify: 1 artifacts intact, 1 damaged, 1 missing (of 3 planned)"  # the unbuilt cost plan is no error
    assert verify_store([(intact, "raw")]) == ([f"ok: {intact} (1 files)", "verify: 1 artifacts intact, 0 damaged, 0 missing (of 1 planned)"], 0)


def test_what_verify_expects_is_what_the_targets_build(tmp_path):
    from lmbuild.build.config import validate
    from lmbuild.build.graph import Plan
    from lmbuild.build.stages import FINAL

    plan = Plan(validate({"artifacts": str(tmp_path), "variants": {"small": {"model.num_hidden_layers": 1}}}))
    expected = {(a.stage, a.key): target for a, target in planned([(None, plan), *plan.variants.items()], FINAL)}
    small = plan.variants["small"].artifacts
    assert expected[("report", plan.artifacts["report"].key)] == "report"
    assert expected[("trained_checkpoint", small["trained_checkpoint"].key)] == "small__trained_checkpoint"
    assert expected[("report", small["report"].key)] == "small__report"
    assert expected[("raw", small["raw"].key)] == "raw"  # shared with the base: the base's target
    assert not any(stage in ("quality_model", "plan") for stage, _ in expected)  # disabled, or only `snakemake plan` builds it
    assert len(expected) == 9 + 4  # the base's nine, the variant's own init, training, evaluation, page
    sweep = Plan(validate({"artifacts": str(tmp_path), "sweep": {"grid": {"train.learning_rate": [0.001, 0.002]}}}))
    report = sweep.artifacts["sweep_report"]
    targets = {t for _, t in planned([(None, sweep), *sweep.variants.items()], FINAL, [(report, "sweep")])}
    assert "sweep" in targets and {t.split("__")[1] for t in targets if "__" in t} == {"trained_checkpoint", "eval_report", "report"}


# --- real snakemake processes ----------------------------------------------------------------


def _cmd(workdir: Path, cfg: dict, *args: str) -> list[str]:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args, "--configfile", str(path)]


def _run(workdir: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(workdir, cfg, *args), capture_output=True, text=True, timeout=600)


def _stage_dirs(store: Path, stage: str) -> list[Path]:
    return sorted(p for p in (store / stage).glob("*") if not p.name.startswith("."))


@pytest.mark.e2e
def test_two_checkouts_share_one_store(tmp_path):
    store = tmp_path / "shared"
    cfg = smoke_config(artifacts=str(store))
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    # Two real builders of the same keys at the same time, each in its own working directory.
    procs = [subprocess.Popen(_cmd(w, cfg, "deduplicated"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for w in (a, b)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    # One built, the other waited and reused (or found it done): cleaning ran in one of them.
    assert sum("rule build_cleaned:" in out or "localrule build_cleaned:" in out for out in outs) == 1, outs
    for stage in ("raw", "cleaned", "deduplicated"):
        (art,) = _stage_dirs(store, stage)
        assert verify(art, hashes=True)["files"], art  # complete: every listed file, its size and hash
    assert not list(store.rglob(".tmp-*"))
    assert not list(store.rglob("*.lock"))  # build and job locks are removed as they are released

    # gc from a checkout whose config no longer reaches this dedup artifact: the registration
    # of the config that built it keeps it; the widest scope lists it (dry run) and removes it
    # on request; the other checkout then plans exactly the dedup jobs again.
    other = smoke_config(artifacts=str(store), **{"data.dedup.exact_normalise": False})
    (old,) = _stage_dirs(store, "deduplicated")
    proc = _run(b, other, "gc_remove")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Both checkouts planned it (b waited for a and reused it): the newer registration is named.
    by = "(" + "|".join(re.escape(os.path.realpath(w)) for w in (a, b)) + r") \(config\.yaml\) "
    assert re.search(f"keep   artifact     {re.escape(str(old))}  \\(reached by {by}", proc.stdout) and old.is_dir(), proc.stdout
    proc = _run(b, other, "gc", "--config", "gc={scope: store}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(f"remove artifact     {re.escape(str(old))}  \\(last reached by {by}", proc.stdout), proc.stdout
    assert "would be freed; " in proc.stdout and "nothing removed (dry run)" in proc.stdout and old.is_dir()
    proc = _run(b, other, "gc_remove", "--config", "gc={scope: store}")
    assert proc.returncode == 0 and not old.exists(), proc.stderr[-3000:]
    assert _stage_dirs(store, "cleaned") and _stage_dirs(store, "raw")
    assert jobs_of_dry_run(_run(a, cfg, "-n", "deduplicated")) == {"dedup_map": 2, "dedup_bucket": 2, "build_deduplicated": 1, "deduplicated": 1}

    # A damaged input is named instead of read: one cleaned shard gone, dedup by another method.
    (cleaned,) = _stage_dirs(store, "cleaned")
    shard = sorted(f for f in read_manifest(cleaned)["files"] if f.startswith("shard-"))[-1]
    (cleaned / shard).unlink()
    proc = _run(b, other, "deduplicated")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(f"{cleaned}: damaged: {shard} is missing" in e for e in errors), proc.stderr[-3000:]
    assert not _stage_dirs(store, "deduplicated")
    proc = _run(a, cfg, "verify")  # every planned artifact's hashes: the damage is named, and what is missing
    assert proc.returncode != 0 and f"error: verify: {cleaned}: damaged: {shard} is missing" in proc.stderr, proc.stderr[-3000:]
    assert f"error: verify: {store}/report/" in proc.stderr
    assert "verify: 1 artifacts intact, 1 damaged, 7 missing (of 9 planned)" in proc.stdout  # raw intact, cleaned damaged


def _checkpoint(store: Path) -> Path | None:
    """A complete training checkpoint in the store's scratch (lmbuild.training.checkpoints.last_checkpoint's test)."""
    for state in store.glob("_work/trained_checkpoint/*/trainer/checkpoint-*/trainer_state.json"):
        if (state.parent / "data_order.json").is_file():
            return state.parent
    return None


@pytest.mark.e2e
def test_gc_in_one_checkout_loses_nothing_another_builds_or_resumes(tmp_path):
    """Two checkouts of different configs on one store: B's gc, with the widest scope while A
    builds, and with the default one after A's training was SIGKILLed and after A completed,
    removes nothing A needs; A's rerun resumes its training, and then plans nothing."""
    store = tmp_path / "shared"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    cfg_a = smoke_config(artifacts=str(store), **{"train.max_steps": 20, "train.save_steps": 5})
    cfg_b = smoke_config(artifacts=str(store), **{"data.clean.normalization": "NFKC"})  # shares only raw with A
    proc = _run(b, cfg_b, "cleaned")
    assert proc.returncode == 0, proc.stderr[-3000:]
    junk = Path(_sealed(store, "cleaned", "0" * 16))  # built by no registered config: gc takes it
    label_a = f"{os.path.realpath(a)} (config.yaml)"

    # A builds everything; once its training wrote a checkpoint, the whole build is stopped
    # (SIGSTOP: its processes and their flocks stay): a live build.
    with open(tmp_path / "a.log", "w") as log:
        build = subprocess.Popen(_cmd(a, cfg_a), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 400
        while time.time() < deadline and build.poll() is None and _checkpoint(store) is None:
            time.sleep(0.05)
        os.killpg(build.pid, signal.SIGSTOP)
        ckpt = _checkpoint(store)
        assert ckpt is not None and build.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
        work = ckpt.parent.parent
        mine = {p for stage in ("cleaned", "deduplicated", "tokenizer", "shards", "init_checkpoint") for p in _stage_dirs(store, stage)} - {junk}
        assert len(mine) == 6  # A's five and B's cleaned
        # B's widest gc while A builds: what A planned is held by a running build.
        proc = _run(b, cfg_b, "gc_remove", "--config", "gc={scope: store, retention_days: 0}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (init,) = _stage_dirs(store, "init_checkpoint")
        assert f"keep   artifact     {init}  (held by a running build ({os.path.realpath(a)}, pid " in proc.stdout
        assert all(p.is_dir() for p in mine) and not junk.exists()
        assert ckpt.is_dir() and (work / "trainer").is_dir()
    finally:
        os.killpg(build.pid, signal.SIGKILL)  # the training (and Snakemake) hard-killed
        build.wait()
    assert not _stage_dirs(store, "trained_checkpoint")

    # B's default gc after the kill: A's registration keeps its artifacts and its training's
    # scratch; only the widest scope would take them (listed, dry run).
    proc = _run(b, cfg_b, "gc_remove")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"keep   work         {work}  (resumable scratch of an unfinished trained_checkpoint artifact, reached by {label_a} " in proc.stdout
    assert ckpt.is_dir() and all(p.is_dir() for p in mine)
    assert "remove live " in proc.stdout  # the killed build's live file
    proc = _run(b, cfg_b, "gc", "--config", "gc={scope: store}")
    assert f"remove work         {work}  (scratch of a trained_checkpoint artifact that goes: last reached by {label_a} " in proc.stdout
    assert ckpt.is_dir()

    # A's rerun resumes from the kept checkpoint, and completes.
    proc = _run(a, cfg_a)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (trained,) = _stage_dirs(store, "trained_checkpoint")
    counts = read_manifest(trained)["counts"]
    assert counts["resumed_from_step"] >= 5 and counts["steps"] == 20, counts

    # B's gc after A completed loses none of A's work: A plans nothing, also with gc settings
    # given (they are in no key); verify finds A's nine artifacts intact.
    proc = _run(b, cfg_b, "gc_remove")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"keep   artifact     {trained}  (reached by {label_a} " in proc.stdout
    assert jobs_of_dry_run(_run(a, cfg_a, "-n")) == {}
    assert jobs_of_dry_run(_run(a, cfg_a, "-n", "--config", "gc={scope: store, retention_days: 0, forget: stale}")) == {}
    proc = _run(a, cfg_a, "verify")
    assert proc.returncode == 0 and "verify: 9 artifacts intact, 0 damaged, 0 missing (of 9 planned)" in proc.stdout, proc.stdout[-3000:]

    # Missing is not intact: the trained model deleted, verify names it and fails.
    shutil.rmtree(trained)
    proc = _run(a, cfg_a, "verify")
    assert proc.returncode != 0
    assert f"error: verify: {trained}: missing (`snakemake trained_checkpoint` builds it)" in proc.stderr, proc.stderr[-3000:]
    assert "verify: 8 artifacts intact, 0 damaged, 1 missing (of 9 planned)" in proc.stdout


@pytest.mark.e2e
def test_a_file_size_limit_ends_in_one_line(tmp_path):
    cfg = smoke_config()
    cmd = " ".join(f"'{c}'" for c in _cmd(tmp_path, cfg, "raw"))
    proc = subprocess.run(["bash", "-c", f"ulimit -f 64; exec {cmd}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: raw: file size limit"), proc.stderr[-3000:]
    assert not list((tmp_path / "artifacts" / "raw").glob("*"))  # no artifact, no temp folder


@pytest.mark.e2e
def test_the_same_command_recovers_after_snakemake_is_killed(tmp_path):
    cfg = smoke_config()
    # raw first: cleaning parts read raw's parts, so its gather could otherwise still be pending at the kill.
    assert _run(tmp_path, cfg, "raw").returncode == 0
    proc = subprocess.Popen(_cmd(tmp_path, cfg, "cleaned"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    incomplete = tmp_path / ".snakemake" / "incomplete"
    logs = tmp_path / "logs" / "cleaned_parts"
    deadline = time.time() + 300
    # Both part jobs' scripts are running once each has opened its log.
    while time.time() < deadline and proc.poll() is None and len(list(logs.glob("*.log"))) < 2:
        time.sleep(0.05)
    assert proc.poll() is None, "snakemake finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # Snakemake itself (Ctrl-\, the OOM killer); its running jobs go on
    proc.wait()
    assert list((tmp_path / ".snakemake" / "locks").iterdir()), "Snakemake's lock should be left behind"
    # Let the orphaned part jobs finish after Snakemake died.
    parts = tmp_path / "artifacts" / "_parts" / "cleaned"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.rglob(MANIFEST))) < 2:
        time.sleep(0.2)
    assert len(list(parts.rglob(MANIFEST))) == 2
    assert [m for m in incomplete.rglob("*") if m.is_file()], "the finished jobs' incomplete markers should be left behind"
    again = _run(tmp_path, cfg, "cleaned")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "lmbuild: recovered: removed" in again.stderr and "complete (its manifest checks out); not rebuilt" in again.stderr
    assert jobs_of_dry_run(again) == {"build_cleaned": 1, "cleaned": 1}  # the parts the orphans finished are kept
    (cleaned,) = _stage_dirs(tmp_path / "artifacts", "cleaned")
    verify(cleaned, hashes=True)
    assert jobs_of_dry_run(_run(tmp_path, cfg, "-n", "cleaned")) == {}
