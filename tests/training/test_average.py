"""Averaged checkpoints: the mean of the last N kept steps, and one line when too few were kept."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmbuild.errors import UserError
from lmbuild.training import average


def kept_run(tmp_path, steps, dtype=torch.float32):
    """A trained checkpoint's folder with steps/<n>/ whose weights are all n, and its manifest."""
    for n in steps:
        d = tmp_path / "steps" / str(n)
        d.mkdir(parents=True)
        save_file({"w": torch.full((2, 3), float(n), dtype=dtype), "b": torch.full((3,), -float(n), dtype=dtype)}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"step": n}))
        (d / "checkpoint.json").write_text(json.dumps({"step": n, "tokens_seen": 100 * n}))
    return {"key": "k", "counts": {"kept": [{"step": n, "tokens_seen": 100 * n, "path": f"steps/{n}"} for n in steps]}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_mean_of_the_last_kept_steps(tmp_path, dtype):
    manifest = kept_run(tmp_path, [30, 10, 20], dtype)  # listed out of order: the last by step
    info = average.average_kept(tmp_path, manifest, 2, tmp_path / "avg", "export.average_last")
    assert info == {"steps": [20, 30], "tokens_seen": 3000}
    w = load_file(str(tmp_path / "avg" / "model.safetensors"))
    assert w["w"].dtype == dtype and torch.equal(w["w"], torch.full((2, 3), 25.0, dtype=dtype))
    assert torch.equal(w["b"], torch.full((3,), -25.0, dtype=dtype))
    # The newest step's config comes along; its own step mark does not.
    assert json.loads((tmp_path / "avg" / "config.json").read_text()) == {"step": 30}
    assert not (tmp_path / "avg" / "checkpoint.json").exists()
    assert json.loads((tmp_path / "avg" / average.MARK).read_text()) == info


def test_too_few_kept_steps_is_one_line(tmp_path):
    manifest = kept_run(tmp_path, [10])
    with pytest.raises(UserError, match=r"^eval.average_last: 3 asks for the mean of the last 3 kept checkpoints, but the run kept 1 \(steps: 10; set train.keep_steps\)$"):
        average.average_kept(tmp_path, manifest, 3, tmp_path / "avg", "eval.average_last")
    assert not (tmp_path / "avg").exists()


def test_checkpoints_of_different_shapes_are_refused(tmp_path):
    manifest = kept_run(tmp_path, [10, 20])
    save_file({"w": torch.zeros(4, 3), "b": torch.zeros(3)}, str(tmp_path / "steps" / "20" / "model.safetensors"))
    with pytest.raises(UserError, match=r"w has shape \(4, 3\), not \(2, 3\): cannot average"):
        average.average_kept(tmp_path, manifest, 2, tmp_path / "avg", "export.average_last")
