"""A model this build trains writes a source of the base build (lmbuild/data/synthetic.py): the
variant `teacher` is the smoke build itself, and the base reads its documents beside the smoke
sources."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from conftest import artifact_dirs, copy_built, jobs_of_dry_run, smoke_config, snakemake

pytestmark = pytest.mark.e2e

PROMPTS = ["ROMEO:", "The king", "def main():"]


def taught(seed: int = 0) -> dict:
    """tests/smoke.yaml plus a synthetic source whose teacher is the variant `teacher`, which
    keeps the smoke sources (so its artifacts are the smoke build's)."""
    cfg = smoke_config()
    smoke = cfg["data"]["sources"]
    synthetic = {"type": "synthetic", "name": "tutor", "model": {"variant": "teacher"}, "prompts": "prompts.txt", "per_prompt": 2, "max_new_tokens": 16, "seed": seed}
    cfg["data"]["sources"] = [*smoke, synthetic]
    cfg["variants"] = {"teacher": {"data.sources": smoke}}
    return cfg


def manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_a_trained_teacher_writes_raw_documents_and_its_settings_key_them(smoke_built, tmp_path):
    copy_built(smoke_built, tmp_path)  # the teacher's whole chain, built
    teacher = artifact_dirs(tmp_path, "trained_checkpoint")[0]
    cfg = taught()
    # An empty prompts file stops the parse with one line, before any job (a teacher could train for hours first).
    (tmp_path / "prompts.txt").write_text("\n")
    proc = snakemake(tmp_path, cfg, "raw")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == "error: data.sources[2].prompts: prompts.txt: no prompts (one prompt a line)"
    assert len(artifact_dirs(tmp_path, "raw")) == 1

    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    # The teacher is built (the smoke build): only the synthetic source's part (its own rule, which
    # may have a GPU on a cluster) and raw's gather are planned; the other sources' parts are built.
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "raw")) == {"build_synthetic_part": 1, "build_raw": 1, "raw": 1}
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "teacher__trained_checkpoint")) == {}
    proc = snakemake(tmp_path, cfg, "raw")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]

    [raw] = [p for p in artifact_dirs(tmp_path, "raw") if "teacher_2" in manifest(p)["inputs"]]
    assert manifest(raw)["inputs"]["teacher_2"]["key"] == teacher.name
    rows = [r for p in sorted(raw.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist() if r["source"] == "tutor"]
    counts = manifest(raw)["counts"]["sources"][2]
    assert counts["documents"] == len(rows) and len(rows) + counts["skipped"].get("empty_generation", 0) == 6 and rows
    for row in rows:
        meta = json.loads(row["metadata"])
        assert meta["teacher"] == f"trained_checkpoint/{teacher.name}"
        assert meta["prompt"] == PROMPTS[meta["prompt_line"] - 1] and row["id"] == f"tutor:prompts.txt:{meta['prompt_line']}:{meta['sample']}"
        assert meta["sampling"]["seed"] == 0 and 0 < meta["new_tokens"] <= 16 and row["text"].strip()

    # The same settings plan nothing; a new seed plans raw and everything after it, never the teacher.
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "raw")) == {}
    same = jobs_of_dry_run(snakemake(tmp_path, cfg, "-n"))
    reseeded = jobs_of_dry_run(snakemake(tmp_path, taught(seed=1), "-n"))
    assert "build_synthetic_part" not in same and same["build_trained_checkpoint"] == 1  # the base's model, not the teacher's
    assert reseeded == {**same, "build_synthetic_part": 1, "build_raw": 1}
