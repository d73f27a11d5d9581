"""lmbuild.store.runner: what a stage learns about its job (GPUs, SLURM) and what the manifest records."""

from __future__ import annotations

from lmbuild.store.artifact import read_manifest
from lmbuild.store.runner import run


def _build_seen(ctx):
    (ctx.out / "seen.txt").write_text(f"{ctx.threads} {ctx.gpus}")
    return {}


def test_manifest_records_the_slurm_job_and_its_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    run(_build_seen, stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={}, output=out, threads=16, gpus=2)
    assert (out / "seen.txt").read_text() == "16 2"
    m = read_manifest(out)
    assert (m["threads"], m["gpus"]) == (16, 2)
    job = m["job"]
    assert (job["slurm_job_id"], job["slurm_job_partition"], job["cuda_visible_devices"]) == ("4242", "gpu", "0,1")
    assert job["slurm_restart_count"] is None and job["host"]


def test_outside_slurm_the_job_fields_are_empty(tmp_path, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION", "SLURM_RESTART_COUNT", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    run(_build_seen, stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={}, output=out)
    m = read_manifest(out)
    assert m["gpus"] == 0 and (out / "seen.txt").read_text() == "1 0"
    assert {k: v for k, v in m["job"].items() if k != "host"} == dict.fromkeys(
        ["slurm_job_id", "slurm_restart_count", "slurm_job_partition", "cuda_visible_devices"]
    )


# --- a full disk or a file-size limit: one line naming the cause and the path, no artifact ---

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from lmbuild.store.runner import disk_error  # noqa: E402

_STAGE = """
import resource, sys, types
from pathlib import Path
from lmbuild.store.runner import run_stage
limit, target = int(sys.argv[1]), sys.argv[2]
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
def build(ctx):
    data = b"x" * 1_000_000
    if target == "full":
        with open("/dev/full", "wb") as f:  # the kernel answers ENOSPC
            f.write(data)
    else:
        (ctx.out / "big.bin").write_bytes(data)
out = Path(sys.argv[3])
spec = out.parent.parent / "spec.json"  # the job spec the parse would have written (lmbuild.build.graph)
spec.parent.mkdir(parents=True, exist_ok=True)
spec.write_text('{"settings": {}, "located": [], "lineage": {}}')
sm = types.SimpleNamespace(log=[str(out.parent.parent / "toy.log")], output=[str(out)], input={}, threads=1, resources={},
                           params=types.SimpleNamespace(stage="toy", key=out.name, spec=str(spec)))
run_stage(sm, build)
"""


@pytest.mark.parametrize("limit,target,cause", [(200_000, "big", "file size limit"), (0, "full", "disk full")])
def test_disk_full_and_file_size_limit_end_in_one_line(tmp_path, limit, target, cause):
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    proc = subprocess.run([sys.executable, "-c", _STAGE, str(limit), target, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: toy: {cause}"), proc.stderr
    assert lines[0].endswith(f"while writing {out}; no artifact was left")
    assert not out.exists() and not list(out.parent.glob(".tmp-*"))


_READER = """
import sys, types
from pathlib import Path
from lmbuild.store.runner import run_stage
out, model = Path(sys.argv[1]), Path(sys.argv[2])
def build(ctx):
    (ctx.out / "read.txt").write_bytes((ctx.inputs["trained_checkpoint"] / "model.safetensors").read_bytes())
spec = out.parent.parent / "spec.json"
spec.write_text('{"settings": {}, "located": [], "lineage": {}}')
sm = types.SimpleNamespace(log=[str(out.parent.parent / "eval.log")], output=[str(out)], input={"trained_checkpoint": str(model)},
                           threads=1, resources={}, params=types.SimpleNamespace(stage="eval_report", key=out.name, spec=str(spec)))
run_stage(sm, build)
"""


def test_a_flipped_byte_in_an_input_model_is_one_line_and_no_artifact(tmp_path):
    """The job as Snakemake runs it (run_stage): a model.safetensors with one bit changed (same
    size) stops the reading stage with one line naming the artifact and the file."""
    from lmbuild.store.artifact import seal

    model = tmp_path / "artifacts" / "trained_checkpoint" / "0123456789abcdef"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 16)
    seal(model, {"stage": "trained_checkpoint", "key": model.name})
    data = bytearray((model / "model.safetensors").read_bytes())
    data[1000] ^= 0x80
    (model / "model.safetensors").write_bytes(bytes(data))
    out = tmp_path / "artifacts" / "eval_report" / "fedcba9876543210"
    proc = subprocess.run([sys.executable, "-c", _READER, str(out), str(model)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: eval_report: {model}: damaged: model.safetensors does not match its SHA-256 in the manifest (delete the artifact folder and rebuild)"
    ], proc.stderr
    assert not out.exists() and not list(out.parent.glob(".tmp-*"))


def test_disk_error_reads_duckdb_and_chained_errors():
    import duckdb

    assert disk_error(duckdb.IOException('Could not write file "/x/y.tmp": No space left on device')).startswith("disk full: Could not write")
    try:
        try:
            raise OSError(27, "File too large", "/data/shard-00001.parquet")
        except OSError as inner:
            raise RuntimeError("writer failed") from inner
    except RuntimeError as exc:
        assert disk_error(exc) == "file size limit: /data/shard-00001.parquet"
    assert disk_error(ValueError("bad")) is None


_SLOW = """
import sys, time
from pathlib import Path
from lmbuild.store.runner import run
def build(ctx):
    print("building", flush=True)
    (ctx.work / "state").write_text("resumable")  # one writer at a time in the scratch folder
    time.sleep(2)
    (ctx.out / "data").write_text("x")
    return {"pid": __import__("os").getpid()}
m = run(build, stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={}, output=Path(sys.argv[1]))
print("pid", m["counts"]["pid"], flush=True)
"""


def test_a_second_builder_of_the_same_key_waits_and_reuses(tmp_path):
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    first = subprocess.Popen([sys.executable, "-c", _SLOW, str(out)], stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "building"
    second = subprocess.Popen([sys.executable, "-c", _SLOW, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out1, out2 = first.communicate(timeout=60)[0], second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, out2
    assert "building" not in out2[0]  # it never built
    assert out1.strip() == out2[0].strip() == f"pid {first.pid}"  # both see the first one's artifact
    assert "lmbuild: waiting for another builder of toy 0123456789abcdef" in out2[1]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert not [p for p in (tmp_path / "artifacts" / "_work").rglob("*") if p.is_file()]  # scratch and lock gone


PEAK_JOB = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from lmbuild.store.runner import run

def build(ctx):
    block = bytearray(150 << 20)
    for i in range(0, len(block), 4096):  # touched, so resident
        block[i] = 1
    return {}

run(build, stage="toy", key="0123456789abcdef", settings={}, lineage={}, inputs={}, output=Path(sys.argv[1]))
"""


def test_the_manifest_records_the_jobs_own_peak_not_its_parents(tmp_path):
    """A job started by a big process (Snakemake, here this test holding 400 MB): the manifest's
    peak is the job's own ~150 MB. getrusage's ru_maxrss would say >= 400 (Linux carries the
    parent's over fork and exec)."""
    import subprocess
    import sys

    from conftest import ROOT

    held = bytearray(400 << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1
    out = tmp_path / "artifacts" / "toy" / "0123456789abcdef"
    subprocess.run([sys.executable, "-c", PEAK_JOB, str(out), str(ROOT)], check=True)
    peak = read_manifest(out)["peak_rss_mb"]
    assert 150 < peak["self"] < 400, peak
    assert peak["children"] == 0
    assert read_manifest(out)["cpu_seconds"]["self"] > 0  # touching 150 MB takes CPU time
    del held


def test_a_gather_records_its_parts_peak(tmp_path):
    key = "0123456789abcdef"
    parts = []
    for i in range(2):
        p = tmp_path / "artifacts" / "toy_parts" / key / f"{i:05d}"
        run(_build_seen, stage="toy_part", key=f"{key}/{i:05d}", settings={}, lineage={}, inputs={}, output=p)
        parts.append(p)
    out = tmp_path / "artifacts" / "toy" / key
    run(_build_seen, stage="toy", key=key, settings={}, lineage={}, inputs={"parts": parts}, output=out)
    m = read_manifest(out)
    assert m["parts_peak_rss_mb"] == max((read_manifest(p)["peak_rss_mb"] for p in parts), key=lambda r: r["self"] + r["children"])
    assert "parts_peak_rss_mb" not in read_manifest(parts[0])
