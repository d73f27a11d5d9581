"""The checkpoints an evaluation scores: kept steps before their run's final model, and with
eval.average_last the mean of the last kept steps among them, on the same run."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from lmbuild.evaluation.checkpoints import find_checkpoints, with_average
from lmbuild.evaluation.lineage import training_run
from lmbuild.store import runner


def trained(tmp_path):
    def build(ctx):
        (ctx.out / "config.json").write_text(json.dumps({"model_type": "llama"}))
        for n in (10, 20, 30):
            d = ctx.out / "steps" / str(n)
            d.mkdir(parents=True)
            save_file({"w": torch.full((2,), float(n))}, str(d / "model.safetensors"))
            (d / "config.json").write_text("{}")
        return {"tokens_seen": 4000, "kept": [{"step": n, "tokens_seen": 100 * n, "path": f"steps/{n}"} for n in (10, 20, 30)]}

    out = tmp_path / "trained_checkpoint" / "t1"
    lineage = {"inputs": {"init_checkpoint": {"stage": "init_checkpoint", "key": "i1", "path": "x"}}}
    runner.run(build, stage="trained_checkpoint", key="t1", settings={}, lineage=lineage, inputs={}, output=out)
    return out


def test_the_average_sits_before_the_final_model_on_its_run(tmp_path):
    cks = with_average(find_checkpoints({"trained_checkpoint": trained(tmp_path)}), 2, tmp_path / "work")
    assert [c["label"] for c in cks] == ["trained_checkpoint@step-10", "trained_checkpoint@step-20", "trained_checkpoint@step-30",
                                         "trained_checkpoint@average-2", "trained_checkpoint"]
    avg = cks[3]
    assert avg["manifest"]["stage"] == "averaged_checkpoint" and avg["manifest"]["key"] == "t1@average-2"
    assert avg["manifest"]["counts"] == {"tokens_seen": 3000, "averaged_steps": [20, 30]}
    assert training_run(avg["manifest"]) == training_run(cks[-1]["manifest"]) == "i1"  # drawn on the run's line
    assert torch.equal(load_file(str(avg["path"] / "model.safetensors"))["w"], torch.full((2,), 25.0))
