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
    unused = Plan(validate({"artifacts": str(tmp_path), "data": {"quality_model": sources(tmp_path / "q")}}))
    assert "quality_model" not in base.artifacts["cleaned"].inputs
    # Settings of a classifier that cleaning does not use key nothing, not even its own artifact.
    assert {s: a.key for s, a in unused.artifacts.items()} == {s: a.key for s, a in base.artifacts.items()}
    on = lambda: {"artifacts": str(tmp_path), "data": {"quality_model": sources(tmp_path / "q"), "clean": {"quality": {"enabled": True}}}}  # noqa: E731
    used = Plan(validate(on()))
    assert used.artifacts["cleaned"].inputs["quality_model"].key == used.artifacts["quality_model"].key != base.artifacts["quality_model"].key
    assert used.artifacts["raw"].key == base.artifacts["raw"].key and used.artifacts["cleaned"].key != base.artifacts["cleaned"].key
    with pytest.raises(UserError, match="data.clean.quality.enabled needs data.quality_model.positives"):
        Plan(validate({"data": {"clean": {"quality": {"enabled": True}}}}))
    # Its training files enter its key by content, as raw's do: a touch keeps it, an edit does not.
    os.utime(tmp_path / "q" / "neg.jsonl", ns=(1, 1))
    retouched = Plan(validate(on()))
    assert retouched.artifacts["quality_model"].key == used.artifacts["quality_model"].key
    with open(tmp_path / "q" / "neg.jsonl", "a") as f:
        f.write(json.dumps({"text": NOISE}) + "\n")
    edited = Plan(validate(on()))
    assert edited.artifacts["quality_model"].key != used.artifacts["quality_model"].key


def chain_keys(cfg: dict) -> dict:
    return {s: a.key for s, a in Plan(validate(cfg)).artifacts.items()}


def test_retraining_the_classifier_recleans_and_nothing_before(tmp_path):
    """With data.clean.quality's classifier and a named one (data.classifiers.noise, whose
    positives are the noise, kept under max_score): a training setting of either plans the
    classifiers and cleaning onward, a keep rule cleaning onward only, and raw never; `snakemake -n`
    plans the stages whose keys (Plan, in process) change."""
    q = sources(tmp_path / "q")
    noise = {**q, "positives": q["negatives"], "negatives": q["positives"], "keep": {"max_score": 0.9}}
    cfg = smoke_config(**{"data.quality_model": q, "data.clean.quality": {"enabled": True, "threshold": 0.2}, "data.classifiers": {"noise": noise}})
    proc = snakemake(tmp_path, cfg, "cleaned")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    cleaned = json.loads(next((tmp_path / "artifacts" / "cleaned").glob("*/manifest.json")).read_text())["counts"]
    assert cleaned["classifiers"]["noise"] == {"column": "noise_score", "keep": {"score": "<= 0.9"}}
    downstream = {"build_deduplicated": 1, "dedup_map": 2, "dedup_bucket": 2, "deduplicated": 1}
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "deduplicated")) == downstream
    base = chain_keys(cfg)
    recleaned = {**downstream, "build_cleaned_part": 2, "build_cleaned": 1}
    edits = [
        (("quality_model", "epoch", 7), {**recleaned, "build_quality_model": 1}),
        (("classifiers", "noise", "epoch", 7), {**recleaned, "build_quality_model": 1}),
        (("classifiers", "noise", "keep", {"max_score": 0.8}), recleaned),
    ]
    for path, expected in edits:
        edited = json.loads(json.dumps(cfg))
        node = edited["data"]
        for k in path[:-2]:
            node = node[k]
        node[path[-2]] = path[-1]
        jobs = jobs_of_dry_run(snakemake(tmp_path, edited, "-n", "deduplicated"))
        assert jobs == expected, path
        keys = chain_keys(edited)
        assert {s for s in ("raw", "quality_model", "cleaned") if keys[s] != base[s]} == ({"quality_model", "cleaned"} if "build_quality_model" in expected else {"cleaned"})
    # Off again: cleaning no longer reads the classifiers, so they are not planned.
    cfg["data"]["clean"]["quality"]["enabled"] = False
    cfg["data"]["classifiers"] = {}
    jobs = jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "deduplicated"))
    assert jobs == recleaned
