"""The quality_model stage in the workflow: its key follows its training data and settings,
and retraining the classifier re-cleans and nothing before (``snakemake -n``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmbuild.build.config import validate
from lmbuild.errors import UserError
from lmbuild.build.graph import Plan
from conftest import jobs_of_dry_run, smoke_config, snakemake

pytestmark = pytest.mark.e2e

PROSE = (
    "The harbour town woke slowly. Fishermen hauled their nets onto the quay while gulls argued over scraps, "
    "and the baker on the corner opened his shutters to let the smell of bread drift down to the water."
)
NOISE = "Home | About | Contact | Privacy Policy | Terms of Use | Sign in | Cart (0)\n" * 4


def sources(tmp: Path) -> dict:
    if not tmp.is_dir():  # once: the files enter the key by size and modification time
        tmp.mkdir(parents=True)
        (tmp / "pos.jsonl").write_text("".join(json.dumps({"text": f"{i}. {PROSE}"}) + "\n" for i in range(60)))
        (tmp / "neg.jsonl").write_text("".join(json.dumps({"text": f"{i} {NOISE}"}) + "\n" for i in range(60)))
    return {"positives": [{"type": "jsonl", "path": str(tmp / "pos.jsonl")}], "negatives": [{"type": "jsonl", "path": str(tmp / "neg.jsonl")}], "dim": 16, "bucket": 20000, "epoch": 5, "lr": 0.1}


def test_without_a_classifier_no_key_but_its_own_depends_on_its_settings(tmp_path):
    base = Plan(validate({"artifacts": str(tmp_path)}))
    trained = Plan(validate({"artifacts": str(tmp_path), "data": {"quality_model": sources(tmp_path / "q")}}))
    assert "quality_model" not in base.artifacts["cleaned"].inputs
    for stage, a in base.artifacts.items():
        assert (trained.artifacts[stage].key == a.key) == (stage != "quality_model"), stage
    used = Plan(validate({"artifacts": str(tmp_path), "data": {"quality_model": sources(tmp_path / "q"), "clean": {"quality": {"enabled": True}}}}))
    assert used.artifacts["cleaned"].inputs["quality_model"].key == trained.artifacts["quality_model"].key
    assert used.artifacts["raw"].key == base.artifacts["raw"].key and used.artifacts["cleaned"].key != base.artifacts["cleaned"].key
    with pytest.raises(UserError, match="data.clean.quality.enabled needs data.quality_model.positives"):
        Plan(validate({"data": {"clean": {"quality": {"enabled": True}}}}))
    # Its training files enter its key by content, as raw's do: a touch keeps it, an edit does not.
    os.utime(tmp_path / "q" / "neg.jsonl", ns=(1, 1))
    retouched = Plan(validate({"artifacts": str(tmp_path), "data": {"quality_model": sources(tmp_path / "q")}}))
    assert retouched.artifacts["quality_model"].key == trained.artifacts["quality_model"].key
    with open(tmp_path / "q" / "neg.jsonl", "a") as f:
        f.write(json.dumps({"text": NOISE}) + "\n")
    edited = Plan(validate({"artifacts": str(tmp_path), "data": {"quality_model": sources(tmp_path / "q")}}))
    assert edited.artifacts["quality_model"].key != trained.artifacts["quality_model"].key


def test_retraining_the_classifier_recleans_and_nothing_before(tmp_path):
    cfg = smoke_config(**{"data.quality_model": sources(tmp_path / "q"), "data.clean.quality": {"enabled": True, "threshold": 0.2}})
    proc = snakemake(tmp_path, cfg, "cleaned")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    downstream = {"build_deduplicated": 1, "dedup_map": 2, "dedup_bucket": 2, "deduplicated": 1}
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "deduplicated")) == downstream
    cfg["data"]["quality_model"]["epoch"] = 7
    jobs = jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "deduplicated"))
    assert jobs == {**downstream, "build_quality_model": 1, "build_cleaned_part": 2, "build_cleaned": 1}
    # Off again: cleaning no longer reads the classifier, so it is not planned.
    cfg["data"]["clean"]["quality"]["enabled"] = False
    jobs = jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "deduplicated"))
    assert jobs == {**downstream, "build_cleaned_part": 2, "build_cleaned": 1}
