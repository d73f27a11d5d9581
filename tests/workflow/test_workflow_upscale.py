"""SOLAR's recipe as one build: train a small variant, upscale it, continue training (one `snakemake` call)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA_STAGES, artifact_dirs, copy_built, jobs_of_dry_run, smoke_config, snakemake

pytestmark = pytest.mark.e2e


def solar_config() -> dict:
    cfg = smoke_config(**{"train.max_steps": 20})
    cfg["model"].update({"num_hidden_layers": 4, "init": "upscale", "upscale_drop": 1, "source": {"variant": "small"}})
    cfg["variants"] = {"small": {"model.num_hidden_layers": 3, "model.init": "random", "model.source": None}}
    return cfg


def manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_train_small_upscale_continue_in_one_build(smoke_built, tmp_path):
    copy_built(smoke_built, tmp_path, stages=DATA_STAGES)  # the session's smoke data: this builds the models
    cfg = solar_config()
    proc = snakemake(tmp_path, cfg, "trained_checkpoint")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for stage in ("raw", "tokenizer", "shards"):
        assert len(artifact_dirs(tmp_path, stage)) == 1, stage  # built once, shared by both models
    assert len(artifact_dirs(tmp_path, "init_checkpoint")) == len(artifact_dirs(tmp_path, "trained_checkpoint")) == 2

    inits = {manifest(p)["counts"]["init"]: p for p in artifact_dirs(tmp_path, "init_checkpoint")}
    up = manifest(inits["upscale"])
    small_trained = tmp_path / up["inputs"]["source"]["path"]
    assert manifest(small_trained)["stage"] == "trained_checkpoint"
    assert manifest(small_trained)["inputs"]["init_checkpoint"]["path"].endswith(inits["random"].name)
    assert up["counts"]["layer_plan"] == [0, 1, 1, 2] and up["counts"]["layers"] == 4

    # The upscaled model's layers are the trained small model's, as planned.
    src, new = load_file(small_trained / "model.safetensors"), load_file(inits["upscale"] / "model.safetensors")
    for j, i in enumerate(up["counts"]["layer_plan"]):
        for name in [k for k in src if k.startswith(f"model.layers.{i}.")]:
            assert torch.equal(new[name.replace(f"layers.{i}.", f"layers.{j}.", 1)], src[name])

    # Continued training starts from what the small model learned, not from scratch.
    trained = [p for p in artifact_dirs(tmp_path, "trained_checkpoint") if p != small_trained]
    small_counts, up_counts = manifest(small_trained)["counts"], manifest(trained[0])["counts"]
    assert small_counts["final_val_loss"] < small_counts["initial_val_loss"] - 0.3
    assert up_counts["initial_val_loss"] < (small_counts["initial_val_loss"] + small_counts["final_val_loss"]) / 2
    assert manifest(trained[0])["inputs"]["init_checkpoint"]["path"].endswith(inits["upscale"].name)

    # Everything is in place: the base target, the variant's target and a rerun do nothing.
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "trained_checkpoint", "small__trained_checkpoint")) == {}
    # Training the small model longer re-keys the upscaled chain, not the data.
    cfg["variants"]["small"]["train.max_steps"] = 24
    jobs = jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "trained_checkpoint"))
    assert jobs == {"build_trained_checkpoint": 2, "build_init_checkpoint": 1, "trained_checkpoint": 1}
