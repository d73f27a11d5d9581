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
    assert changed(base, lr) == {"trained_checkpoint", "eval_report", "report"}
    assert keys({}) == base  # changing it back: the same addresses


def test_cleaning_setting_changes_cleaned_and_everything_after():
    base = keys({})
    other = keys({"data": {"clean": {"min_chars": 50}}})
    assert changed(base, other) == set(STAGES) - {"raw", "quality_model"}


def test_model_size_leaves_data_stages_alone():
    base = keys({})
    other = keys({"model": {"num_hidden_layers": 2}})
    assert changed(base, other) == {"init_checkpoint", "trained_checkpoint", "eval_report", "report"}


def test_seq_len_changes_shards_not_tokenizer():
    base = keys({})
    other = keys({"pack": {"seq_len": 128}})
    assert changed(base, other) == {"shards", "trained_checkpoint", "eval_report", "report"}


def test_mixture_changes_training_and_eval_only():
    """data.mixture is applied when training samples blocks: no data stage is rebuilt for it."""
    base = keys({})
    mixed = keys({"data": {"mixture": {"shakespeare": {"weight": 2}, "python_stdlib": {"weight": 1}}}})
    assert changed(base, mixed) == {"trained_checkpoint", "eval_report", "report"}
    other = keys({"data": {"mixture": {"shakespeare": {"weight": 3}, "python_stdlib": {"weight": 1}}}})
    assert changed(mixed, other) == {"trained_checkpoint", "eval_report", "report"}
    assert keys({"data": {"mixture": {}}}) == base  # no mixture: the keys of a build without one


def test_wsd_only_settings_key_only_a_wsd_run():
    """train.decay_steps and decay_fraction shape only the wsd schedule: on a cosine run (the
    default) they change no key, and its settings hold the schema's defaults as they always did."""
    from lmbuild.stages import WSD_ONLY

    base = keys({})
    assert keys({"train": {"decay_steps": 7, "decay_fraction": 0.3}}) == base
    assert keys({"train": {"lr_scheduler": "cosine", "decay_steps": 7}}) == base
    assert {k: validate({})["train"][k] for k in WSD_ONLY} == WSD_ONLY  # the schema's defaults
    cosine = Plan(validate({"train": {"decay_steps": 7}})).artifacts["trained_checkpoint"].settings
    assert {k: cosine[k] for k in WSD_ONLY} == WSD_ONLY and cosine["lr_scheduler"] == "cosine"
    wsd = keys({"train": {"lr_scheduler": "wsd"}})
    assert changed(base, wsd) == {"trained_checkpoint", "eval_report", "report"}
    assert changed(wsd, keys({"train": {"lr_scheduler": "wsd", "decay_steps": 7}})) == {"trained_checkpoint", "eval_report", "report"}
    assert changed(wsd, keys({"train": {"lr_scheduler": "wsd", "decay_fraction": 0.3}})) == {"trained_checkpoint", "eval_report", "report"}
    enc = {"model": {"objective": "masked", "num_key_value_heads": 4}}
    assert keys({**enc, "train": {"decay_steps": 7}}) == keys(enc)  # an encoder's cosine run too


def test_resources_are_not_part_of_any_key():
    assert keys({}) == keys({"resources": {"trained_checkpoint": {"threads": 1, "mem_mb": 1}}})
    # Nor the number of nodes training runs on (batch_size is global: the same data each step).
    assert keys({}) == keys({"resources": {"trained_checkpoint": {"nodes": 4, "gpu": 8}}})


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
    assert changed(base, keys({})) == {"shards", "trained_checkpoint", "eval_report", "report"}


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


# Each stage's code set, stated: the scripts its rules run and every module they import
# (lmbuild.runner/artifact/errors are plumbing; config, plan and variants are parse-time only).
CODE_SETS = {
    "raw": {
        "scripts/raw.py", "scripts/raw_part.py", "lmbuild/data/ingest.py", "lmbuild/data/groups.py",
        "lmbuild/data/sources.py", "lmbuild/data/files.py", "lmbuild/data/embedded.py",
    },
    "quality_model": {"scripts/quality_model.py", "lmbuild/data/quality_model.py", "lmbuild/data/quality.py", "lmbuild/data/sources.py", "lmbuild/data/files.py", "lmbuild/data/embedded.py"},
    "cleaned": {
        "scripts/cleaned.py", "scripts/cleaned_part.py", "lmbuild/data/clean.py", "lmbuild/data/filters.py",
        "lmbuild/data/lang.py", "lmbuild/data/overrides.py", "lmbuild/data/quality.py",
        # clean.py names its shards with ingest.shard_name, which brings the readers along.
        "lmbuild/data/ingest.py", "lmbuild/data/groups.py", "lmbuild/data/sources.py", "lmbuild/data/files.py", "lmbuild/data/embedded.py",
    },
    "deduplicated": {"scripts/deduplicated.py", "scripts/dedup_map.py", "scripts/dedup_bucket.py", "lmbuild/data/dedup.py", "lmbuild/data/minhash.py"},
    "tokenizer": {"scripts/tokenizer.py", "lmbuild/tokenizer.py"},
    "shards": {"scripts/shards.py", "scripts/shards_part.py", "lmbuild/pack.py"},
    "init_checkpoint": {"scripts/init_checkpoint.py", "lmbuild/model.py", "lmbuild/init.py", "lmbuild/layer_plan.py", "lmbuild/masked.py"},
    "trained_checkpoint": {
        "scripts/trained_checkpoint.py", "lmbuild/train.py", "lmbuild/schedule.py", "lmbuild/model.py", "lmbuild/init.py",
        # The datasets (lmbuild/blocks.py), not the packing code: editing pack.py rebuilds shards, and training through its key.
        "lmbuild/layer_plan.py", "lmbuild/blocks.py", "lmbuild/__init__.py", "lmbuild/accel.py",
        "lmbuild/masked.py",
    },
    # Evaluation does not render: the page's code, template and schema are the report stage's.
    # One entry for both objectives: an encoder's figures come from lmbuild.masked_eval.
    "eval_report": {
        "scripts/eval_report.py", "lmbuild/__init__.py", "lmbuild/evaluate.py", "lmbuild/evaltasks.py", "lmbuild/cost.py", "lmbuild/accel.py",
        "lmbuild/masked_eval.py",
    },
    # Stage.files: data files the import walk cannot see.
    "report": {"scripts/report.py", "lmbuild/report.py", "lmbuild/templates/report.html.j2", "schemas/report.schema.json"},
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_code_set_is_what_it_runs(stage):
    assert set(code_files(stage)) == CODE_SETS[stage]


def test_no_stage_imports_parse_time_modules():
    parse_only = {f"lmbuild/{m.split('.')[-1]}.py" for m in plan_mod.PARSE_ONLY}
    for stage in STAGES:
        assert not parse_only & set(code_files(stage)), stage


def test_the_schedule_retrains_and_eval_task_code_does_not(monkeypatch):
    """Editing wsd_decay_steps (lmbuild/schedule.py) changes the training key; editing the
    eval-task helpers (lmbuild/evaltasks.py) changes the evaluation and its page; editing the page
    (template, renderer, report.json schema) re-renders it and evaluates nothing; config
    validation changes no key."""
    base = keys({})
    real = plan_mod.code_hash

    def edited(rel):
        def patched(stage):
            return real(stage) + ("edited" if rel in code_files(stage) else "")

        return patched

    for rel, expected in [
        ("lmbuild/schedule.py", {"trained_checkpoint", "eval_report", "report"}),
        ("lmbuild/evaltasks.py", {"eval_report", "report"}),
        ("lmbuild/templates/report.html.j2", {"report"}),
        ("lmbuild/report.py", {"report"}),
        ("schemas/report.schema.json", {"report"}),
        ("lmbuild/config.py", set()),
        ("lmbuild/runner.py", set()),
    ]:
        monkeypatch.setattr(plan_mod, "code_hash", edited(rel))
        assert changed(base, keys({})) == expected, rel
    monkeypatch.undo()


def test_key_order_and_number_notation_do_not_change_keys():
    a = keys({"train": {"learning_rate": 0.001, "max_steps": 300}, "pack": {"val_fraction": 0.02}})
    b = keys({"pack": {"val_fraction": "2e-2"}, "train": {"max_steps": 3.0e2, "learning_rate": "1e-3"}})
    c = keys({"train": {"learning_rate": 1.0e-03, "max_steps": "300"}, "pack": {"val_fraction": 2.0e-2}})
    assert a == b == c


def test_moved_source_files_keep_their_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jsonl").write_text('{"text": "hello"}\n')
    before = keys({"data": {"sources": [{"type": "jsonl", "path": "a/*.jsonl"}]}})
    (tmp_path / "a").rename(tmp_path / "b")
    assert keys({"data": {"sources": [{"type": "jsonl", "path": str(tmp_path / "b" / "*.jsonl")}]}}) == before
    # A renamed file is another document id, so another key.
    (tmp_path / "b" / "x.jsonl").rename(tmp_path / "b" / "y.jsonl")
    assert keys({"data": {"sources": [{"type": "jsonl", "path": "b/*.jsonl"}]}})["raw"] != before["raw"]


def test_hf_sources_pin_the_resolved_commit(monkeypatch):
    cfg = {"data": {"sources": [{"type": "hf", "path": "org/data", "revision": "main"}]}}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = Plan(validate(cfg)).artifacts["raw"]
    assert offline.settings["sources"][0]["resolved_revision"] is None  # unpinned, and the manifest says so

    class Info:
        sha = "a" * 40

    class Api:
        def dataset_info(self, name, revision=None):
            assert (name, revision) == ("org/data", "main")
            return Info()

    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    first = Plan(validate(cfg)).artifacts["raw"]
    assert first.settings["sources"][0]["resolved_revision"] == "a" * 40
    Info.sha = "b" * 40  # new data on the hub: a new raw key
    assert Plan(validate(cfg)).artifacts["raw"].key != first.key
    # A commit given as the revision is used as it is, without asking the hub.
    monkeypatch.setattr(huggingface_hub, "HfApi", None)
    pinned = {"data": {"sources": [{"type": "hf", "path": "org/data", "revision": "c" * 40}]}}
    assert Plan(validate(pinned)).artifacts["raw"].settings["sources"][0]["resolved_revision"] == "c" * 40


def test_job_specs_hold_what_the_job_needs(tmp_path):
    p = Plan(validate({}))
    p.write_specs(tmp_path)
    a = p.artifacts["trained_checkpoint"]
    spec = json.loads((tmp_path / "trained_checkpoint" / f"{a.key}.json").read_text())
    assert spec["settings"] == a.settings and spec["lineage"]["code_hash"] == a.code_hash
    before = (tmp_path / "trained_checkpoint" / f"{a.key}.json").stat().st_mtime_ns
    p.write_specs(tmp_path)  # unchanged content is not rewritten
    assert (tmp_path / "trained_checkpoint" / f"{a.key}.json").stat().st_mtime_ns == before


# --------------------------------------------------------------------------- model.objective

ENCODER = {"model": {"objective": "masked", "num_key_value_heads": 4}}
MODEL_HALF = {"init_checkpoint", "trained_checkpoint", "eval_report"}
PAGE = {"report"}  # the page over eval_report: re-keyed with it


def test_the_objective_and_its_settings_key_only_an_encoder():
    """causal (the default) keeps every key it had before model.objective existed; masked re-keys the model half."""
    base = keys({})
    assert keys({"model": {"objective": "causal"}}) == base
    assert keys({"train": {"mlm_probability": 0.3}, "eval": {"pseudo_perplexity_tokens": 5}}) == base
    enc = keys(ENCODER)
    assert changed(keys({"model": {"num_key_value_heads": 4}}), enc) == MODEL_HALF | PAGE
    assert changed(enc, keys({**ENCODER, "train": {"mlm_probability": 0.3}})) == {"trained_checkpoint", "eval_report", *PAGE}
    assert changed(enc, keys({**ENCODER, "eval": {"pseudo_perplexity_tokens": 5}})) == {"eval_report", *PAGE}


def test_causal_key_material_has_no_encoder_settings_or_training_code():
    causal, enc = Plan(validate({})), Plan(validate(ENCODER))
    for stage in MODEL_HALF:
        a = causal.artifacts[stage]
        assert not {"objective", *plan_mod.ENCODER_ONLY["train"], *plan_mod.ENCODER_ONLY["eval"]} & set(a.settings), stage
        assert a.script == stage and "lmbuild/masked_train.py" not in a.code_files, stage
    # Only training has an encoder's own entry script; init and evaluation dispatch inside theirs.
    assert {s: enc.artifacts[s].script for s in MODEL_HALF} == {
        "init_checkpoint": "init_checkpoint", "trained_checkpoint": "trained_checkpoint_masked", "eval_report": "eval_report",
    }
    assert "scripts/trained_checkpoint_masked.py" in enc.artifacts["trained_checkpoint"].code_files
    assert "lmbuild/masked_train.py" in enc.artifacts["trained_checkpoint"].code_files
    assert "lmbuild/train.py" in enc.artifacts["trained_checkpoint"].code_files  # it trains with train.py's pieces
    assert enc.artifacts["eval_report"].code_files == causal.artifacts["eval_report"].code_files
    assert enc.artifacts["init_checkpoint"].code_files == causal.artifacts["init_checkpoint"].code_files
    assert enc.artifacts["trained_checkpoint"].settings["objective"] == "masked"
    # The encoder's training code is not the causal model's: editing it re-keys encoders only.
    real = plan_mod.code_hash
    try:
        plan_mod.code_hash = lambda stage, entry=None: real(stage, entry) + ("edited" if "lmbuild/masked_train.py" in code_files(stage, entry) else "")
        assert keys({}) == {s: a.key for s, a in causal.artifacts.items()}
        assert changed({s: a.key for s, a in enc.artifacts.items()}, keys(ENCODER)) == {"trained_checkpoint", "eval_report", *PAGE}
    finally:
        plan_mod.code_hash = real


def test_a_report_with_an_encoder_variant_has_the_encoder_eval_settings():
    p = Plan(validate({"variants": {"mlm": {"model.objective": "masked", "model.num_key_value_heads": 4}}}))
    report = p.artifacts["eval_report"]
    assert report.script == "eval_report" and "pseudo_perplexity_tokens" in report.settings
    assert "mlm__trained_checkpoint" in report.inputs
    base = keys({})
    assert {s: a.key for s, a in p.artifacts.items() if s not in {"eval_report", *PAGE}} == {s: k for s, k in base.items() if s not in {"eval_report", *PAGE}}


def test_hf_folder_fans_raw_out_by_its_data_files(tmp_path):
    """A dataset folder (Parquet shards as the hub serves them): the plan counts its data files
    through datasets, and raw runs one job per files_per_job of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmbuild.data.groups import layout

    (tmp_path / "ds" / "data").mkdir(parents=True)
    for f in range(5):
        pq.write_table(pa.table({"text": [f"row {f}"]}), tmp_path / "ds" / "data" / f"train-{f:05d}-of-00005.parquet")
    cfg = {"data": {"sources": [{"type": "hf", "path": str(tmp_path / "ds")}], "files_per_job": 2}}
    raw = Plan(validate(cfg)).artifacts["raw"]
    assert raw.settings["sources"][0]["data_files"] == 5
    assert [g.items for g in layout(raw.settings)] == [((0, 0, 2),), ((0, 2, 4),), ((0, 4, 5),)]
    # A hub name with the hub off: unknown, one job reads it all (and the job says why it cannot).
    hub = Plan(validate({"data": {"sources": [{"type": "hf", "path": "org/data"}]}})).artifacts["raw"]
    assert hub.settings["sources"][0]["data_files"] is None and len(layout(hub.settings)) == 1
