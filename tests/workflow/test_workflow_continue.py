"""Experiments as builds (issue 14): a longer wsd run continues from the stable phase, kept
checkpoints, and `snakemake -n` agreeing with the keys for both."""

from __future__ import annotations

import json

import pytest

from conftest import DATA_STAGES, artifact_dirs, copy_built, jobs_of_dry_run, smoke_config, snakemake

pytestmark = pytest.mark.e2e

TRAINING = {"build_trained_checkpoint": 1, "trained_checkpoint": 1}


def wsd(**overrides) -> dict:
    # 20 steps, decay 10%: the stable phase ends at step 18.
    return smoke_config(**{"train.lr_scheduler": "wsd", "train.max_steps": 20, **overrides})


def manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="module")
def built(smoke_built, tmp_path_factory):
    # The data and the model's init from the session's smoke build: this trains with wsd.
    work = copy_built(smoke_built, tmp_path_factory.mktemp("continue"), stages=[*DATA_STAGES, "init_checkpoint"])
    proc = snakemake(work, wsd(), "trained_checkpoint")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return work


def test_raising_max_steps_plans_training_and_trains_only_the_new_steps(built):
    assert jobs_of_dry_run(snakemake(built, wsd(), "trained_checkpoint", "-n")) == {}
    longer = wsd(**{"train.max_steps": 30})
    # A new key (the length is a setting), so training and everything after it is planned...
    assert jobs_of_dry_run(snakemake(built, longer, "trained_checkpoint", "-n")) == TRAINING
    assert jobs_of_dry_run(snakemake(built, longer, "-n")) == {"build_trained_checkpoint": 1, "build_eval_report": 1, "build_report": 1, "all": 1}
    proc = snakemake(built, longer, "trained_checkpoint")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    # ...but the job starts at the cached end of the 20-step run's stable phase.
    new = [p for p in artifact_dirs(built, "trained_checkpoint") if manifest(p)["settings"]["max_steps"] == 30]
    counts = manifest(new[0])["counts"]
    assert counts["steps"] == 30 and counts["stable"]["continued_from_step"] == 18 and counts["steps_trained"] == 12
    assert sorted(p.name for p in (built / "artifacts" / "_stable" / counts["stable"]["key"]).iterdir()) == ["step-18", "step-27"]
    # Both lengths are built: neither plans anything now.
    assert jobs_of_dry_run(snakemake(built, wsd(), "trained_checkpoint", "-n")) == {}
    assert jobs_of_dry_run(snakemake(built, longer, "trained_checkpoint", "-n")) == {}
    # gc keeps the cache this config's wsd run reaches; a cosine config in this checkout lets
    # it go only with gc.scope checkout (this checkout's earlier config registered it).
    def cache_line(*args) -> str:
        proc = snakemake(built, *args)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        (line,) = [x for x in (built / "logs" / "gc.log").read_text().splitlines() if f"artifacts/_stable/{counts['stable']['key']} " in x]
        return line

    assert cache_line(wsd(), "gc").endswith("(stable-phase cache, reached by this checkout's config)")
    assert cache_line(smoke_config(), "gc").startswith("keep   stable")
    assert cache_line(smoke_config(), "gc", "--config", "gc={scope: checkout}").startswith("remove stable")


def test_keep_steps_plans_training(built):
    assert jobs_of_dry_run(snakemake(built, wsd(**{"train.keep_steps": [10]}), "trained_checkpoint", "-n")) == TRAINING
