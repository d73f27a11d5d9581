"""lmbuild.runner: what a stage learns about its job (GPUs, SLURM) and what the manifest records."""

from __future__ import annotations

from lmbuild.artifact import read_manifest
from lmbuild.runner import run


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
