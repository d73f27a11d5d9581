"""model.objective masked through the workflow: the smoke build with an encoder variant beside its causal model
(one `snakemake` call), the reports, and what a change of objective plans."""

from __future__ import annotations

import json
import math

import pytest

from lmbuild.evaluation import report
from conftest import SMOKE_STAGES, artifact_dirs, copy_built, jobs_of_dry_run, smoke_config, snakemake

pytestmark = pytest.mark.e2e

ENCODER = {"model.objective": "masked", "model.num_key_value_heads": 4}


def manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def by_settings(workdir, stage, masked: bool):
    found = [p for p in artifact_dirs(workdir, stage) if (manifest(p)["settings"].get("objective") == "masked") == masked]
    assert len(found) == 1, found
    return found[0]


def test_an_encoder_variant_beside_the_causal_model(smoke_built, tmp_path):
    # The causal model built (the session's smoke build up to training): this adds the encoder.
    copy_built(smoke_built, tmp_path, stages=SMOKE_STAGES[:-2])
    cfg = smoke_config(variants={"mlm": ENCODER})
    proc = snakemake(tmp_path, cfg, "all", "variants")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for stage in ("raw", "tokenizer", "shards"):
        assert len(artifact_dirs(tmp_path, stage)) == 1, stage  # one corpus and tokenizer for both objectives

    # The encoder's init and training have their own entries, which the causal model never sees.
    enc_init, enc_trained = by_settings(tmp_path, "init_checkpoint", True), by_settings(tmp_path, "trained_checkpoint", True)
    causal_init, causal_trained = by_settings(tmp_path, "init_checkpoint", False), by_settings(tmp_path, "trained_checkpoint", False)
    assert {"lmbuild/models/modernbert.py", "scripts/init_checkpoint_masked.py"} <= set(manifest(enc_init)["code_files"])
    assert not {"lmbuild/models/modernbert.py", "scripts/init_checkpoint_masked.py"} & set(manifest(causal_init)["code_files"])
    assert {"lmbuild/training/trained_checkpoint_masked.py", "scripts/trained_checkpoint_masked.py"} <= set(manifest(enc_trained)["code_files"])
    assert not {"lmbuild/training/trained_checkpoint_masked.py", "scripts/trained_checkpoint_masked.py"} & set(manifest(causal_trained)["code_files"])
    assert manifest(enc_init)["counts"]["model_type"] == "modernbert" and manifest(enc_init)["counts"]["vocab_size"] == 1025  # + <|mask|>
    counts = manifest(enc_trained)["counts"]
    assert counts["objective"] == "masked" and counts["final_val_loss"] < counts["initial_val_loss"] - 0.5

    reports = {len(r["checkpoints"]): r for r in (json.loads((p / "report.json").read_text()) for p in artifact_dirs(tmp_path, "eval_report"))}
    assert sorted(reports) == [2, 3]  # the variant's own report, and the base's with the variant beside it
    base = {c["label"]: c for c in reports[3]["checkpoints"]}
    assert list(base) == ["init_checkpoint", "trained_checkpoint", "mlm__trained_checkpoint"]
    assert math.isfinite(base["trained_checkpoint"]["headline"]["heldout_bits_per_byte"])
    assert len(base["trained_checkpoint"]["generations"]) == 3
    enc = base["mlm__trained_checkpoint"]
    assert enc["objective"] == "masked" and "causal" in enc["skipped"]["lm_eval"] and enc["generations"] == []
    # A tiny encoder after 40 steps may get no masked token right; that it learned is checked by
    # its pseudo-perplexity against its init's below.
    assert 0 <= enc["headline"]["masked_token_accuracy"] <= 1
    assert 1 < enc["headline"]["pseudo_perplexity"] < 1025  # better than uniform over the vocabulary (~530 after 40 steps)
    assert enc["headline"]["pseudo_perplexity_tokens"] == 512 < enc["headline"]["pseudo_perplexity_candidates"]  # a sample
    assert reports[3]["lm_eval"]["evaluated"] == ["init_checkpoint", "trained_checkpoint"]
    own = {c["label"]: c["headline"] for c in reports[2]["checkpoints"]}
    assert own["trained_checkpoint"]["pseudo_perplexity"] < own["init_checkpoint"]["pseudo_perplexity"]
    assert own["trained_checkpoint"]["masked_token_loss"] < own["init_checkpoint"]["masked_token_loss"]
    # Both reports have an encoder among their checkpoints: the encoder's evaluation entry for both;
    # each report.json passes the report stage's schema check, and its page shows the encoder's metrics.
    (evaluation,) = {tuple(manifest(p)["code_files"]) for p in artifact_dirs(tmp_path, "eval_report")}
    assert {"scripts/eval_report_masked.py", "lmbuild/evaluation/masked.py"} <= set(evaluation)
    for p in artifact_dirs(tmp_path, "eval_report"):
        report.load(p / "report.json")
    pages = artifact_dirs(tmp_path, "report")
    assert len(pages) == 2
    for page in pages:
        html = (page / "report.html").read_text()
        assert "masked_token_accuracy" in html and "pseudo_perplexity" in html

    # A rerun does nothing; the encoder as the base config is the variant's build, all present.
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "all", "variants")) == {}
    assert jobs_of_dry_run(snakemake(tmp_path, smoke_config(**ENCODER), "-n")) == {}
    # Without the variant only the base's report changes (causal checkpoints only), and its page.
    assert jobs_of_dry_run(snakemake(tmp_path, smoke_config(), "-n")) == {"build_eval_report": 1, "build_report": 1, "all": 1}
    # The objective of the smoke model switched: its init, training and report, nothing upstream.
    assert jobs_of_dry_run(snakemake(tmp_path, smoke_config(**{**ENCODER, "train.seed": 7}), "-n")) == {
        "build_init_checkpoint": 1, "build_trained_checkpoint": 1, "build_eval_report": 1, "build_report": 1, "all": 1,
    }
