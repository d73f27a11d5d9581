"""`snakemake export` and `snakemake push` on the smoke build: only the export is built; the GGUF
read back by transformers agrees with the trained model; the card parses; the keys agree with
`snakemake -n`; offline, push says so in one line and uploads nothing."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from conftest import artifact_dirs, copy_built, jobs_of_dry_run, smoke_config, snakemake

pytestmark = pytest.mark.e2e


def test_export_push_and_the_keys(smoke_built, tmp_path, monkeypatch):
    copy_built(smoke_built, tmp_path)
    cfg = smoke_config()
    # Outside the chain: the build as it is plans nothing, the export target its one job.
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n")) == {}
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "export")) == {"build_export": 1, "export": 1}
    proc = snakemake(tmp_path, cfg, "export")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    [out] = artifact_dirs(tmp_path, "export")
    m = json.loads((out / "manifest.json").read_text())
    [trained] = artifact_dirs(tmp_path, "trained_checkpoint")
    assert m["inputs"]["trained_checkpoint"]["key"] == trained.name
    g = m["counts"]["gguf"]
    print(f"smoke model, f16 GGUF read back by transformers: next-token agreement {g['agreement']} over {g['positions']} positions")
    assert g["agreement"] >= 0.99 and g["tokenizer_agrees"] and (out / g["file"]).is_file()
    card = ModelCard((out / "README.md").read_text()).data.to_dict()
    bpb = json.loads((artifact_dirs(tmp_path, "eval_report")[0] / "report.json").read_text())["checkpoints"]
    bpb = next(c for c in bpb if c["label"] == "trained_checkpoint")["headline"]["heldout_bits_per_byte"]
    assert card["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(bpb, abs=1e-6)
    assert card["lmbuild"]["keys"]["trained_checkpoint"] == trained.name

    # Built: nothing planned; another GGUF type plans the export alone; back: nothing.
    assert jobs_of_dry_run(snakemake(tmp_path, cfg, "-n", "export")) == {}
    q8 = smoke_config(**{"export.gguf_type": "q8_0"})
    assert jobs_of_dry_run(snakemake(tmp_path, q8, "-n", "export")) == {"build_export": 1, "export": 1}

    # A variant's export: its own target, from its own trained model (planned only: -n).
    variant = smoke_config(variants={"small": {"model.num_hidden_layers": 1}})
    jobs = jobs_of_dry_run(snakemake(tmp_path, variant, "-n", "small__export"))
    assert jobs["build_export"] == jobs["build_trained_checkpoint"] == jobs["small__export"] == 1 and "build_raw" not in jobs

    # push, offline (lmbuild's default): one line, a non-zero exit, nothing uploaded.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    proc = snakemake(tmp_path, smoke_config(**{"export.push.repo_id": "me/tiny"}), "push")
    assert proc.returncode != 0
    assert "error: push: the hub is offline (HF_HUB_OFFLINE=1; HF_HUB_OFFLINE=0 to push); nothing uploaded to me/tiny" in proc.stderr
    assert "uploaded to" not in proc.stdout

    # Averaging more kept steps than the run keeps: one line at parse time, nothing runs.
    proc = snakemake(tmp_path, smoke_config(**{"export.checkpoint": "average"}), "export")
    assert proc.returncode != 0
    assert "error: config: export.average_last: 2 asks for the mean of the last 2 kept checkpoints, but train.keep_steps keeps 0" in proc.stderr
