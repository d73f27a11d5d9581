"""Content addressing: which keys change when the config or the code changes."""

import json
import subprocess
import sys

import pytest

from lmbuild import plan as plan_mod
from lmbuild.config import validate
from lmbuild.plan import STAGES, Plan, code_files

from conftest import ROOT


def keys(cfg: dict) -> dict:
    return {s: a.key for s, a in Plan(validate(cfg)).artifacts.items()}


def changed(a: dict, b: dict) -> set:
    return {s for s in a if a[s] != b[s]}


def test_learning_rate_changes_training_and_eval_only():
    base = keys({})
    lr = keys({"train": {"learning_rate": 1e-4}})
    assert changed(base, lr) == {"trained_checkpoint", "eval_report"}
    assert keys({}) == base  # changing it back: the same addresses


def test_cleaning_setting_changes_cleaned_and_everything_after():
    base = keys({})
    other = keys({"data": {"clean": {"min_chars": 50}}})
    assert changed(base, other) == set(STAGES) - {"raw", "quality_model"}


def test_model_size_leaves_data_stages_alone():
    base = keys({})
    other = keys({"model": {"num_hidden_layers": 2}})
    assert changed(base, other) == {"init_checkpoint", "trained_checkpoint", "eval_report"}


def test_seq_len_changes_shards_not_tokenizer():
    base = keys({})
    other = keys({"pack": {"seq_len": 128}})
    assert changed(base, other) == {"shards", "trained_checkpoint", "eval_report"}


def test_resources_are_not_part_of_any_key():
    assert keys({}) == keys({"resources": {"trained_checkpoint": {"threads": 1, "mem_mb": 1}}})


def test_keys_are_stable_across_processes():
    code = "import json; from lmbuild.plan import Plan; from lmbuild.config import validate; print(json.dumps({s: a.key for s, a in Plan(validate({})).artifacts.items()}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert json.loads(out) == keys({})


def test_code_files_follow_imports():
    clean = code_files("cleaned")
    assert "scripts/cleaned.py" in clean and "lmbuild/data/clean.py" in clean
    assert "lmbuild/data/filters.py" in clean  # imported by clean.py
    assert not any(f.startswith("lmbuild/data/") for f in code_files("trained_checkpoint"))


def test_code_change_rekeys_that_stage_and_downstream(monkeypatch):
    base = keys({})
    real = plan_mod.code_hash

    def patched(stage):
        return "edited" if stage == "shards" else real(stage)

    monkeypatch.setattr(plan_mod, "code_hash", patched)
    assert changed(base, keys({})) == {"shards", "trained_checkpoint", "eval_report"}


def test_local_source_files_enter_the_raw_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "hello"}\n')
    cfg = {"data": {"sources": [{"type": "jsonl", "path": "*.jsonl"}]}}
    before = keys(cfg)
    f.write_text('{"text": "hello, world"}\n')
    after = keys(cfg)
    assert changed(before, after) == set(STAGES) - {"quality_model"}  # not an input of cleaning here


def test_missing_source_files_are_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lmbuild.errors import UserError

    with pytest.raises(UserError, match=r"data.sources\[0\].path: no file matches 'nothing/\*.jsonl'"):
        keys({"data": {"sources": [{"type": "jsonl", "path": "nothing/*.jsonl"}]}})
