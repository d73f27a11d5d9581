"""Atomic artifacts: a failed or killed stage leaves nothing that looks complete."""

import json
import signal
import subprocess
import sys

import pytest

from lmbuild.store.artifact import MANIFEST, atomic_dir, read_manifest
from lmbuild.errors import UserError
from lmbuild.store.runner import run


def test_exception_leaves_no_artifact_and_no_temp(tmp_path):
    final = tmp_path / "stage" / "abc"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_sigkill_mid_write_leaves_no_artifact(tmp_path):
    final = tmp_path / "stage" / "abc"
    code = f"""
import time
from pathlib import Path
from lmbuild.store.artifact import atomic_dir
with atomic_dir(Path({str(final)!r})) as tmp:
    (tmp / "part").write_text("half")
    print("writing", flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    leftovers = list(final.parent.glob(".tmp-abc-*"))
    assert leftovers, "the killed attempt's temporary directory should still be there"
    # The next attempt clears the leftover and completes.
    with atomic_dir(final) as tmp:
        (tmp / "done").write_text("ok")
    assert (final / "done").read_text() == "ok"
    assert not list(final.parent.glob(".tmp-*"))


def _build_ok(ctx):
    (ctx.out / "data.txt").write_text(ctx.settings["word"])
    return {"words": 1}


def _build_bad(ctx):
    (ctx.out / "data.txt").write_text("half")
    raise UserError("input.jsonl:3: invalid JSON")


def test_run_writes_manifest_last_with_lineage(tmp_path):
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    lineage = {"code_hash": "c0de", "code_files": ["x.py"], "inputs": {}}
    m = run(_build_ok, stage="toy", key="0123456789abcdef", settings={"word": "hi"}, lineage=lineage, inputs={}, output=out)
    assert (out / "data.txt").read_text() == "hi"
    on_disk = read_manifest(out)
    assert on_disk == json.loads(json.dumps(m, default=str))
    assert on_disk["key"] == "0123456789abcdef" and on_disk["settings"] == {"word": "hi"}
    assert on_disk["counts"] == {"words": 1} and on_disk["code_hash"] == "c0de"
    assert not (tmp_path / "artifacts" / "_work" / "toy" / "0123456789abcdef").exists()


def test_run_with_user_error_leaves_nothing(tmp_path):
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    with pytest.raises(UserError):
        run(_build_bad, stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={}, output=out)
    assert not out.exists()
    assert not list(out.parent.glob(".tmp-*"))
    assert not (out / MANIFEST).exists()


# --- manifests list every file; damage is found before a stage reads ------------------------

from lmbuild.store.artifact import artifact_files, parquet_shards, remove_stale_temps, seal, try_lock, verify  # noqa: E402


def _sealed(tmp_path):
    art = tmp_path / "cleaned" / "abc"
    (art / "dropped").mkdir(parents=True)
    for i in range(3):
        (art / f"shard-{i:05d}.parquet").write_bytes(b"p" * (100 + i))
    (art / "dropped" / "shard-00000.parquet").write_bytes(b"d")
    seal(art, {"stage": "cleaned"})
    return art


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    run(_build_ok, stage="toy", key="0123456789abcdef", settings={"word": "hi"}, lineage={}, inputs={}, output=out)
    files = read_manifest(out)["files"]
    assert files == {"data.txt": {"size": 2, "sha256": "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"}}
    assert verify(out, hashes=True)["key"] == "0123456789abcdef"


def test_shards_come_from_the_manifest_not_a_glob(tmp_path):
    art = _sealed(tmp_path)
    (art / "shard-00099.parquet").write_bytes(b"stray")  # not part of the artifact
    assert [p.name for p in parquet_shards(art, "cleaned")] == [f"shard-{i:05d}.parquet" for i in range(3)]
    assert [p.relative_to(art).as_posix() for p in artifact_files(art, "dropped/*")] == ["dropped/shard-00000.parquet"]
    with pytest.raises(UserError, match="shard-00099.parquet is not in the manifest"):
        verify(art, hashes=True)


def test_a_deleted_or_truncated_file_is_named(tmp_path):
    art = _sealed(tmp_path)
    (art / "shard-00001.parquet").unlink()
    with pytest.raises(UserError, match=r"cleaned/abc: damaged: shard-00001.parquet is missing"):
        parquet_shards(art, "cleaned")
    art = _sealed(tmp_path / "2")
    (art / "shard-00002.parquet").write_bytes(b"p" * 50)
    with pytest.raises(UserError, match=r"damaged: shard-00002.parquet has 50 bytes, the manifest says 102"):
        verify(art)
    art = _sealed(tmp_path / "3")
    (art / "shard-00000.parquet").write_bytes(b"q" * 100)  # same size, other bytes
    verify(art)  # sizes only: passes
    with pytest.raises(UserError, match="shard-00000.parquet does not match its SHA-256"):
        verify(art, hashes=True)


def test_runner_checks_inputs_before_the_stage_reads(tmp_path):
    art = _sealed(tmp_path)
    (art / "shard-00000.parquet").unlink()
    seen = []
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    with pytest.raises(UserError, match="shard-00000.parquet is missing"):
        run(lambda ctx: seen.append(1), stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={"cleaned": art}, output=out)
    assert not seen and not out.exists()
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="plain: not a complete artifact"):
        run(lambda ctx: seen.append(1), stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={"x": [tmp_path / "plain"]}, output=out)


def _checkpoint(root, stage="trained_checkpoint"):
    """A sealed checkpoint-like artifact: weights, config, a kept step, TensorBoard events."""
    art = root / stage / "0123456789abcdef"
    (art / "steps" / "5").mkdir(parents=True)
    (art / "tensorboard").mkdir()
    (art / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (art / "config.json").write_text("{}")
    (art / "steps" / "5" / "model.safetensors").write_bytes(b"w" * 64)
    (art / "tensorboard" / "events.out").write_bytes(b"e" * 32)
    (art / "loss_curve.csv").write_text("step\n")
    seal(art, {"stage": stage, "key": art.name})
    return art


def flip(path, at=100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_hashes_checks_the_named_files_only(tmp_path):
    from lmbuild.store.artifact import verify_hashes

    art = _checkpoint(tmp_path)
    m = verify(art)
    assert verify_hashes(art, m, ["model.safetensors", "config.json", "not-listed"]) == 1024 + 2
    flip(art / "steps" / "5" / "model.safetensors", 3)
    assert verify_hashes(art, verify(art), ["model.safetensors"]) == 1024  # the damage is elsewhere
    with pytest.raises(UserError, match=r"trained_checkpoint/0123456789abcdef: damaged: steps/5/model.safetensors does not match its SHA-256"):
        verify_hashes(art, verify(art), ["model.safetensors", "steps/5/model.safetensors"])


def test_a_stage_hashes_the_input_files_it_reads_whole():
    from lmbuild.store.runner import read_whole

    files = {f: {} for f in ("model.safetensors", "config.json", "steps/5/model.safetensors", "tensorboard/events.out", "loss_curve.csv")}
    trained = {"stage": "trained_checkpoint", "files": files}
    assert read_whole("eval_report", trained) == ["config.json", "loss_curve.csv", "model.safetensors", "steps/5/model.safetensors"]
    assert read_whole("sweep_report", trained) == ["loss_curve.csv"]
    shards = {"stage": "shards", "files": {f: {} for f in (
        "index.json", "meta.json", "val_docs.jsonl", "tokens/shard-00000.train.0.bin", "tokens/shard-00000.val.0.bin")}}
    assert read_whole("trained_checkpoint", shards) == ["index.json", "meta.json", "tokens/shard-00000.train.0.bin"]
    assert read_whole("eval_report", shards) == ["index.json", "meta.json"]  # val_docs.jsonl: its first documents
    tok = {"stage": "tokenizer", "files": {"tokenizer.json": {}, "tokenizer_config.json": {}}}
    assert read_whole("shards_part", tok) == read_whole("init_checkpoint", tok) == ["tokenizer.json", "tokenizer_config.json"]
    parquet = {"stage": "cleaned", "files": {"shard-00000.parquet": {}}}
    assert read_whole("deduplicated.map-000", parquet) == []  # Parquet: read by row group, sizes only
    assert read_whole("eval_report", {"stage": "trained_checkpoint"}) == []  # a manifest without files


def test_a_flipped_byte_in_input_weights_stops_the_job_before_it_reads(tmp_path):
    """Same size, one bit changed: the size check passed it into evaluation; the reader now
    hashes what it reads whole and stops with one line naming the artifact and the file."""
    art = _checkpoint(tmp_path / "artifacts")
    flip(art / "model.safetensors")
    seen = []
    out = tmp_path / "artifacts" / "eval_report" / "fedcba9876543210"
    with pytest.raises(UserError) as err:
        run(lambda ctx: seen.append(1), stage="eval_report", key=out.name, settings={}, lineage={}, inputs={"trained_checkpoint": art}, output=out)
    assert str(err.value) == f"{art}: damaged: model.safetensors does not match its SHA-256 in the manifest (delete the artifact folder and rebuild)"
    assert not seen and not out.exists() and not list(out.parent.glob(".tmp-*"))
    flip(art / "model.safetensors")  # repaired; the TensorBoard events nobody reads are only sized
    flip(art / "tensorboard" / "events.out", 3)
    m = run(lambda ctx: seen.append(1), stage="eval_report", key=out.name, settings={}, lineage={}, inputs={"trained_checkpoint": art}, output=out)
    assert seen == [1] and m["inputs_hashed"]["files"] == 4 and m["inputs_hashed"]["seconds"] >= 0
    from lmbuild.store.runner import check_inputs

    assert check_inputs("eval_report", {"trained_checkpoint": art})["bytes"] == 1024 + 2 + 64 + 5


def test_verify_command(tmp_path, capsys):
    from lmbuild.store.artifact import main

    good, bad = _sealed(tmp_path / "g"), _sealed(tmp_path / "b")
    (bad / "dropped" / "shard-00000.parquet").write_bytes(b"e")
    assert main(["verify", str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert f"ok: {good} (4 files)" in out
    assert err.strip() == f"error: {bad}: damaged: dropped/shard-00000.parquet does not match its SHA-256 in the manifest (delete the artifact folder and rebuild)"


# --- two builders of one key ------------------------------------------------------------


def test_a_live_writers_temp_folder_is_kept_a_dead_ones_removed(tmp_path):
    final = tmp_path / "stage" / "abc"
    final.parent.mkdir(parents=True)
    live, dead = final.parent / ".tmp-abc-live", final.parent / ".tmp-abc-dead"
    live.mkdir()
    dead.mkdir()
    code = f"import fcntl, os, sys, time\nfd = os.open({str(live)!r}, os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert remove_stale_temps(final) == [dead]
        assert live.is_dir() and try_lock(live) is None
    finally:
        holder.kill()
        holder.wait()
    assert remove_stale_temps(final) == [live]


def test_the_first_complete_artifact_wins_and_is_never_replaced(tmp_path):
    final = tmp_path / "stage" / "abc"
    with atomic_dir(final) as first:
        (first / "data").write_text("first")
        with atomic_dir(final) as second:  # another builder, finishing first
            (second / "data").write_text("second")
            (second / MANIFEST).write_text("{}")
        (first / MANIFEST).write_text("{}")
    assert (final / "data").read_text() == "second"
    assert sorted(p.name for p in final.parent.iterdir()) == ["abc"]


def test_an_incomplete_leftover_at_the_address_is_replaced(tmp_path):
    final = tmp_path / "stage" / "abc"
    final.mkdir(parents=True)
    (final / "half").write_text("x")  # no manifest
    with atomic_dir(final) as tmp:
        (tmp / MANIFEST).write_text("{}")
    assert sorted(p.name for p in final.iterdir()) == [MANIFEST]
    assert sorted(p.name for p in final.parent.iterdir()) == ["abc"]
