"""Content addressing: which keys change when the config or the code changes."""

import ast
import json
import re
import subprocess
import sys

import pytest

from lmbuild.build import codeset
from lmbuild.build import graph as plan_mod
from lmbuild.build.config import validate
from lmbuild.build.graph import STAGES, Plan, code_files
from lmbuild.build.data_stages import CLEANING_LISTS
from lmbuild.build.stages import CHAIN

from conftest import ROOT


def keys(cfg: dict) -> dict:
    """The keys of the chain that `all` builds (the cost plan's: test_the_cost_plan_*)."""
    return {s: a.key for s, a in Plan(validate(cfg)).artifacts.items() if s in CHAIN}


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
    assert changed(base, other) == set(CHAIN) - {"raw", "quality_model"}


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
    from lmbuild.build.stages import WSD_ONLY

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
    code = "import json; from lmbuild.build.graph import Plan; from lmbuild.build.config import validate; print(json.dumps({s: a.key for s, a in Plan(validate({})).artifacts.items()}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert {s: k for s, k in json.loads(out).items() if s in CHAIN} == keys({})


def test_code_files_follow_imports():
    clean = code_files("cleaned")
    assert "scripts/cleaned.py" in clean and "lmbuild/data/cleaned.py" in clean
    assert "lmbuild/data/filters/__init__.py" in clean  # imported by cleaned.py
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
    assert changed(before, after) == set(CHAIN) - {"quality_model"}  # not an input of cleaning here


def test_missing_source_files_are_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lmbuild.errors import UserError

    with pytest.raises(UserError, match=r"data.sources\[0\].path: no file matches 'nothing/\*.jsonl'"):
        keys({"data": {"sources": [{"type": "jsonl", "path": "nothing/*.jsonl"}]}})


# Each stage's code set, stated: the scripts its rules run, every module they import (the engine,
# lmbuild.build/store/errors/cli, is in no set) and the packages those live in (Python runs each
# package's __init__.py first).
TOP = {"lmbuild/__init__.py"}
DATA = TOP | {"lmbuild/data/__init__.py"}
TOKENS = TOP | {"lmbuild/tokens/__init__.py"}
MODELS = TOP | {"lmbuild/models/__init__.py", "lmbuild/models/common.py"}
EVALUATION = TOP | {"lmbuild/evaluation/__init__.py"}
# The filters package: one module per rule family (lmbuild/data/filters/__init__.py imports them all).
FILTERS = {f"lmbuild/data/filters/{m}.py" for m in (
    "__init__", "base", "unicode", "length", "langid", "gopher_repetition", "kernels", "gopher_quality", "c4", "fineweb",
    "starcoder", "pii", "url", "badwords",
)}
# The Trainer and its setup, which both objectives train with; its data order, checkpoints, spike
# rule, loss curve, schedule and accelerations.
TRAINER = {
    "lmbuild/training/__init__.py", "lmbuild/training/trainer.py", "lmbuild/training/run.py", "lmbuild/training/order.py",
    "lmbuild/training/checkpoints.py", "lmbuild/training/spikes.py", "lmbuild/training/curve.py", "lmbuild/training/schedule.py",
    "lmbuild/training/accel.py", "lmbuild/tokens/blocks.py",
}
READERS = {"lmbuild/data/sources.py", "lmbuild/data/files.py", "lmbuild/data/embedded.py", "lmbuild/data/hub.py"}
# The one reading of a figure as a number (a shared leaf): the evaluation and report stages'.
NUMBERS = {"lmbuild/numbers.py"}
CODE_SETS = {
    # A synthetic source's teacher writes through lmbuild/data/synthetic.py, which only raw reads.
    "raw": DATA | READERS | {"scripts/raw.py", "scripts/raw_part.py", "lmbuild/data/raw.py", "lmbuild/data/groups.py", "lmbuild/data/synthetic.py"},
    # Training the classifier reads the sources; its scoring (quality.py) is cleaning's too.
    "quality_model": DATA | READERS | {"scripts/quality_model.py", "lmbuild/data/quality_model.py", "lmbuild/data/quality.py"},
    # Not the readers: cleaning names its shards with groups.shard_name, and scores with quality.py and
    # the named classifiers' keep rules (classifiers.py) only.
    "cleaned": DATA | {
        "scripts/cleaned.py", "scripts/cleaned_part.py", "lmbuild/data/cleaned.py", "lmbuild/data/cleaner.py", "lmbuild/data/classifiers.py", *FILTERS,
        "lmbuild/data/lang.py", "lmbuild/data/overrides.py", "lmbuild/data/quality.py", "lmbuild/data/groups.py", "lmbuild/data/files.py",
        "lmbuild/data/statistics.py", *CLEANING_LISTS,
    },
    "deduplicated": DATA | {"scripts/deduplicated.py", "scripts/dedup_map.py", "scripts/dedup_bucket.py", "lmbuild/data/deduplicated.py", "lmbuild/data/minhash.py",
                     "lmbuild/data/clusters.py", "lmbuild/data/decontamination.py", "lmbuild/data/paragraphs.py", "lmbuild/data/survivors.py",
                     "lmbuild/data/substrings.py"},
    "tokenizer": TOKENS | {"scripts/tokenizer.py", "lmbuild/tokens/tokenizer.py"},
    "shards": TOKENS | {"scripts/shards.py", "scripts/shards_part.py", "lmbuild/tokens/shards.py",
                        "lmbuild/data/__init__.py", "lmbuild/data/statistics.py", "lmbuild/data/data_card.py"},
    # A causal model: no encoder code (an encoder's init runs scripts/init_checkpoint_masked.py).
    "init_checkpoint": MODELS | {"scripts/init_checkpoint.py", "lmbuild/models/init_checkpoint.py", "lmbuild/models/surgery.py", "lmbuild/models/layer_plan.py"},
    # The datasets (lmbuild/tokens/blocks.py), not the packing code: editing shards.py rebuilds shards,
    # and training through its key. The parameter count (models/common.py), not the model code.
    "trained_checkpoint": MODELS | TOKENS | TRAINER | {
        "scripts/trained_checkpoint.py", "lmbuild/training/trained_checkpoint.py", "lmbuild/training/kept.py",
        "lmbuild/training/stable_cache.py", "lmbuild/training/launch.py",
    },
    # Evaluation does not render: the page's code, template and schema are the report stage's. The
    # FLOPs formula is models/common.py's, not the cost plan's; an encoder's figures
    # (lmbuild/evaluation/masked.py) are the encoder entry's.
    "eval_report": EVALUATION | MODELS | NUMBERS | {
        "lmbuild/evaluation/checkpoints.py", "lmbuild/evaluation/lm_eval_tasks.py", "lmbuild/evaluation/causal.py",
        "lmbuild/evaluation/metrics.py", "lmbuild/evaluation/lineage.py",
        "scripts/eval_report.py", "lmbuild/evaluation/eval_report.py", "lmbuild/evaluation/tasks.py",
        "lmbuild/training/__init__.py", "lmbuild/training/accel.py", "lmbuild/training/curve.py", "lmbuild/training/average.py",
    },
    # Stage.files: data files the import walk cannot see.
    "report": EVALUATION | NUMBERS | {
        "scripts/report.py", "lmbuild/evaluation/report.py", "lmbuild/evaluation/report_rows.py", "lmbuild/evaluation/report_charts.py",
        "lmbuild/evaluation/report_lineage.py", "lmbuild/evaluation/templates/report.html.j2", "lmbuild/schemas/report.schema.json",
        "lmbuild/evaluation/report_data.py", "lmbuild/data/__init__.py", "lmbuild/data/statistics.py",
    },
    "plan": MODELS | {"scripts/plan.py", "lmbuild/models/plan.py"},
    # The card's data card is the shards artifact's file (read, not made here); the mean of kept steps is training's.
    "export": EVALUATION | {
        "scripts/export.py", "lmbuild/ship/__init__.py", "lmbuild/ship/export.py", "lmbuild/ship/gguf_file.py", "lmbuild/ship/model_card.py",
        "lmbuild/evaluation/lineage.py",
        "lmbuild/training/__init__.py", "lmbuild/training/average.py",
    },
    "sweep_report": EVALUATION | NUMBERS | {
        "scripts/sweep_report.py", "lmbuild/evaluation/sweep_report.py", "lmbuild/evaluation/templates/sweep_report.html.j2",
        "lmbuild/training/__init__.py", "lmbuild/training/curve.py",
    },
}
# An encoder's entries (Stage.encoder_script): the causal set's modules where they share them, and
# the encoder's own (ENCODER_CODE).
ENCODER_CODE = {"lmbuild/models/modernbert.py", "lmbuild/training/trained_checkpoint_masked.py", "lmbuild/evaluation/masked.py"}
ENCODER_SETS = {
    "init_checkpoint": MODELS | {"scripts/init_checkpoint_masked.py", "lmbuild/models/modernbert.py", "lmbuild/models/surgery.py", "lmbuild/models/layer_plan.py"},
    # The Trainer's setup, not the causal stage's own parts (kept steps, stable cache, torchrun).
    "trained_checkpoint": MODELS | TOKENS | TRAINER | {
        "scripts/trained_checkpoint_masked.py", "lmbuild/training/trained_checkpoint_masked.py",
        "lmbuild/models/modernbert.py", "lmbuild/models/surgery.py", "lmbuild/models/layer_plan.py",
    },
    "eval_report": (CODE_SETS["eval_report"] - {"scripts/eval_report.py"}) | {"scripts/eval_report_masked.py", "lmbuild/evaluation/masked.py"},
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_code_set_is_what_it_runs(stage):
    assert set(code_files(stage)) == CODE_SETS[stage]
    if STAGES[stage].encoder_script:
        assert set(code_files(stage, STAGES[stage].encoder_script)) == ENCODER_SETS[stage]


def _graph() -> dict[str, set[str]]:
    """Every module of lmbuild and the lmbuild modules it imports (anywhere in it)."""
    modules = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted((ROOT / "lmbuild").rglob("*.py"))
    ]
    return {m: codeset.module_imports(m) for m in modules}


def test_the_import_graph_of_lmbuild_has_no_circle():
    """A circle would make a module's code set depend on where the walk enters it, and turn an
    edit of one module into a rebuild of every stage on the circle (masked <-> model and
    sweep <-> variants were such circles)."""
    graph = _graph()
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = "open"
        path.append(m)
        for n in sorted(graph.get(m, ())):
            assert state.get(n) != "open", "import circle: " + " -> ".join([*path[path.index(n):], n])
            if n not in state:
                visit(n)
        path.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)


def test_engine_modules_import_no_stage_module():
    """Parse time and plumbing (lmbuild.build, lmbuild.store, lmbuild.errors, lmbuild.cli, and the
    rules) import only the engine and the shared leaves; each leaf imports only lmbuild.errors and
    other leaves. So the engine is in no code set, and a stage's code is in no engine."""
    graph = _graph()
    packages = {leaf.rsplit(".", 1)[0] for leaf in codeset.LEAVES}  # (empty) packages Python runs first
    allowed = lambda n: codeset.is_engine(n) or n in codeset.LEAVES or n in packages  # noqa: E731
    for m, imported in graph.items():
        if codeset.is_engine(m):
            assert all(allowed(n) for n in imported), f"{m} imports stage modules: {sorted(n for n in imported if not allowed(n))}"
    for leaf in codeset.LEAVES:
        assert graph[leaf] <= {"lmbuild.errors", *codeset.LEAVES}, f"{leaf} is not a leaf: it imports {sorted(graph[leaf])}"
    for smk in [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk")]:
        lines = [m.group(1) for m in re.finditer(r"^\s*(from lmbuild[\w.]* import \([^)]*\)|from lmbuild[\w.]* import [^\n]+|import lmbuild[^\n]*)", smk.read_text(), re.M)]
        used = {m for line in lines for m in _line_imports(line) if codeset.module_path(m) is not None}
        assert all(allowed(n) for n in used), f"{smk.name} imports stage modules: {sorted(n for n in used if not allowed(n))}"


def _line_imports(line: str) -> set[str]:
    """The lmbuild modules one import line of a rules file names (Snakemake's files are not Python)."""
    node = ast.parse(line).body[0]
    if isinstance(node, ast.ImportFrom):
        return {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {a.name for a in node.names}


def test_no_code_set_holds_the_engine():
    for stage in STAGES:
        for entry in (None, STAGES[stage].encoder_script):
            engine = [f for f in code_files(stage, entry) if f.startswith(("lmbuild/build/", "lmbuild/store/")) or f in ("lmbuild/errors.py", "lmbuild/cli.py")]
            assert not engine, (stage, entry, engine)


def test_the_encoder_modules_are_in_no_causal_code_set():
    """An edit to encoder code re-keys no causal build: not its initial model (the parameter count
    moved to models/common.py), not its training, not its evaluation."""
    for stage in STAGES:
        assert not ENCODER_CODE & set(code_files(stage)), stage
    causal = Plan(validate({"variants": {"small": {"model.num_hidden_layers": 2}}}))
    for a in causal.all_artifacts():
        assert not ENCODER_CODE & set(a.code_files), (a.stage, sorted(ENCODER_CODE & set(a.code_files)))


def test_an_edit_rekeys_exactly_its_stages_and_what_follows(monkeypatch):
    """For every module a stage's code set holds: editing it re-keys the stages whose set holds
    it and everything downstream of them, nothing else; editing an engine module re-keys nothing."""
    base_plan = Plan(validate({}))
    base = {s: a.key for s, a in base_plan.artifacts.items()}
    downstream = {s: {t for t, a in base_plan.artifacts.items() if _reaches(a, s)} for s in base}
    real = plan_mod.code_hash
    edited_files = sorted({f for s in STAGES for f in code_files(s)} | {"lmbuild/build/graph.py", "lmbuild/store/runner.py", "lmbuild/errors.py"})
    for rel in edited_files:
        monkeypatch.setattr(plan_mod, "code_hash", lambda stage, entry=None, rel=rel: real(stage, entry) + ("edited" if rel in code_files(stage, entry) else ""))
        now = {s: a.key for s, a in Plan(validate({})).artifacts.items()}
        holders = {s for s in base if rel in code_files(s)}
        assert {s for s in base if now[s] != base[s]} == set().union(*(downstream[h] for h in holders)), rel
    monkeypatch.undo()


def _reaches(a, stage: str) -> bool:
    """``a`` is the artifact of ``stage`` or reads it, directly or not."""
    return a.stage == stage or any(_reaches(i, stage) for i in a.inputs.values())


def test_the_schedule_retrains_and_eval_task_code_does_not(monkeypatch):
    """Editing wsd_decay_steps (lmbuild/training/schedule.py) changes the training key; editing the
    eval-task helpers (lmbuild/evaluation/tasks.py) changes the evaluation and its page; editing the page
    (template, renderer, report.json schema) re-renders it and evaluates nothing; config
    validation changes no key."""
    base = keys({})
    real = plan_mod.code_hash

    def edited(rel):
        def patched(stage):
            return real(stage) + ("edited" if rel in code_files(stage) else "")

        return patched

    for rel, expected in [
        ("lmbuild/training/schedule.py", {"trained_checkpoint", "eval_report", "report"}),
        ("lmbuild/evaluation/tasks.py", {"eval_report", "report"}),
        ("lmbuild/evaluation/templates/report.html.j2", {"report"}),
        ("lmbuild/evaluation/report.py", {"report"}),
        ("lmbuild/schemas/report.schema.json", {"report"}),
        ("lmbuild/build/config.py", set()),
        ("lmbuild/store/runner.py", set()),
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


def test_url_blocklists_enter_the_cleaned_key_by_content(tmp_path, monkeypatch):
    """data.clean.url.blocklist (and a source's own): the files' contents re-key cleaning onward,
    their place does not, and the same content again is the same key; the job gets the path back."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "block.txt").write_text("spam.example\n")
    base = keys({})
    cfg = {"data": {"clean": {"url": {"blocklist": ["a/block.txt"]}}}}
    first = keys(cfg)
    assert changed(base, first) == set(CHAIN) - {"raw", "quality_model"}
    (tmp_path / "a" / "block.txt").write_text("spam.example\nmore.example\n")
    assert keys(cfg)["cleaned"] != first["cleaned"]
    (tmp_path / "a" / "block.txt").write_text("spam.example\n")
    (tmp_path / "a").rename(tmp_path / "b")
    moved = {"data": {"clean": {"url": {"blocklist": [str(tmp_path / "b" / "block.txt")]}}}}
    assert keys(moved) == first
    per_source = {"data": {"clean": {"per_source": {"embedded": {"url": {"blocklist": ["b/block.txt"]}}}}}}
    assert keys(per_source)["cleaned"] not in (base["cleaned"], first["cleaned"])
    art = Plan(validate(per_source)).artifacts["cleaned"]
    assert art.settings["per_source"]["embedded"]["url"]["blocklist"][0]["files"][0][0] == "block.txt"
    assert [p[2] for p in art.located] == ["b/block.txt"]
    from lmbuild.errors import UserError

    with pytest.raises(UserError, match=r"^data\.clean\.url\.blocklist\[0\]: no file matches 'nothing\.txt'"):
        keys({"data": {"clean": {"url": {"blocklist": ["nothing.txt"]}}}})


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
        assert a.script == stage and "lmbuild/training/trained_checkpoint_masked.py" not in a.code_files, stage
    # An encoder's own entry scripts: no causal key holds encoder code.
    assert {s: enc.artifacts[s].script for s in MODEL_HALF} == {
        "init_checkpoint": "init_checkpoint_masked", "trained_checkpoint": "trained_checkpoint_masked", "eval_report": "eval_report_masked",
    }
    assert "scripts/trained_checkpoint_masked.py" in enc.artifacts["trained_checkpoint"].code_files
    assert "lmbuild/training/trained_checkpoint_masked.py" in enc.artifacts["trained_checkpoint"].code_files
    assert "lmbuild/training/trainer.py" in enc.artifacts["trained_checkpoint"].code_files  # it trains with the causal stage's Trainer
    assert set(enc.artifacts["eval_report"].code_files) == ENCODER_SETS["eval_report"]
    assert set(enc.artifacts["init_checkpoint"].code_files) == ENCODER_SETS["init_checkpoint"]
    assert enc.artifacts["trained_checkpoint"].settings["objective"] == "masked"
    # The encoder's code is not the causal model's: editing it re-keys encoders only.
    real = plan_mod.code_hash
    causal_keys = {s: a.key for s, a in causal.artifacts.items() if s in CHAIN}
    enc_keys = {s: a.key for s, a in enc.artifacts.items() if s in CHAIN}
    try:
        for rel, rekeyed in [
            ("lmbuild/training/trained_checkpoint_masked.py", {"trained_checkpoint", "eval_report", *PAGE}),
            ("lmbuild/models/modernbert.py", MODEL_HALF | PAGE),
            ("lmbuild/evaluation/masked.py", {"eval_report", *PAGE}),
        ]:
            plan_mod.code_hash = lambda stage, entry=None, rel=rel: real(stage, entry) + ("edited" if rel in code_files(stage, entry) else "")
            assert keys({}) == causal_keys, rel
            assert changed(enc_keys, keys(ENCODER)) == rekeyed, rel
    finally:
        plan_mod.code_hash = real


def test_a_report_with_an_encoder_variant_has_the_encoder_eval_settings():
    p = Plan(validate({"variants": {"mlm": {"model.objective": "masked", "model.num_key_value_heads": 4}}}))
    report = p.artifacts["eval_report"]
    assert report.script == "eval_report_masked" and "pseudo_perplexity_tokens" in report.settings
    assert "mlm__trained_checkpoint" in report.inputs
    base = keys({})
    assert {s: a.key for s, a in p.artifacts.items() if s in CHAIN and s not in {"eval_report", *PAGE}} == {s: k for s, k in base.items() if s not in {"eval_report", *PAGE}}


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


# --------------------------------------------------------------------------- plan and sweep_report


def test_the_cost_plan_is_a_stage_keyed_like_the_others_outside_the_chain():
    """`plan`: a row of the stage table (settings, code set, no inputs); nothing reads it, so no
    chain key moves with it, and its key follows what it prices."""
    assert not STAGES["plan"].chain and not STAGES["plan"].input_names(validate({}))
    assert all("plan" not in a.inputs for a in Plan(validate({})).artifacts.values())

    def cost(cfg):
        return Plan(validate(cfg)).artifacts["plan"]

    base = cost({})
    assert cost({"train": {"max_steps": 100}}).key != base.key and cost({"plan": {"gpu": "a100"}}).key != base.key
    assert cost({"data": {"clean": {"min_chars": 50}}}).key == base.key  # it reads no data setting
    assert cost({"train": {"mlm_probability": 0.3}}).key == base.key  # nor an encoder's, for a causal model
    gpus = cost({"resources": {"trained_checkpoint": {"gpu": 3}}})
    assert gpus.key != base.key and 3 in gpus.settings["plan"]["gpus"]  # the GPUs resources give training are priced
    assert base.code_files == tuple(sorted(CODE_SETS["plan"]))


def test_the_sweep_report_is_a_stage_of_the_whole_build():
    """`sweep_report`: planned once, for the base, from every run's artifacts; absent without a sweep."""
    assert "sweep_report" not in Plan(validate({})).artifacts
    p = Plan(validate({"sweep": {"grid": {"train.seed": [1, 2]}}}))
    report = p.artifacts["sweep_report"]
    assert report.settings["runs"] == p.sweep_runs and set(report.code_files) == CODE_SETS["sweep_report"]
    assert all("sweep_report" not in v.artifacts for v in p.variants.values())


def test_named_classifiers_key_their_training_and_cleaning_not_raw(tmp_path):
    """data.classifiers: a training setting or a source file re-keys the classifiers' artifact
    (quality_model) and cleaning onward; a keep rule re-keys cleaning onward only; raw never;
    changed back, the same keys. `lmbuild why` names the settings as written. (snakemake -n
    agrees: tests/workflow/test_workflow_quality.py.)"""
    from lmbuild.build.why import config_key

    (tmp_path / "pos.jsonl").write_text('{"text": "in the beginning"}\n')
    (tmp_path / "neg.jsonl").write_text('{"text": "home | about | contact"}\n')
    topic = lambda **extra: {"data": {"classifiers": {"topic": {  # noqa: E731
        "positives": [{"type": "jsonl", "path": str(tmp_path / "pos.jsonl")}],
        "negatives": [{"type": "jsonl", "path": str(tmp_path / "neg.jsonl")}], **extra}}}}
    base, named = keys({}), keys(topic())
    assert changed(base, named) == set(CHAIN) - {"raw"}
    assert "quality_model" not in Plan(validate({})).artifacts["cleaned"].inputs
    kept = keys(topic(keep={"min_score": 0.3}))
    assert changed(named, kept) == set(CHAIN) - {"raw", "quality_model"}
    assert changed(named, keys(topic(epoch=7))) == set(CHAIN) - {"raw"}
    (tmp_path / "neg.jsonl").write_text('{"text": "home | about | contact | sign in"}\n')
    assert changed(named, keys(topic())) == set(CHAIN) - {"raw"}
    (tmp_path / "neg.jsonl").write_text('{"text": "home | about | contact"}\n')
    assert keys(topic()) == named and keys(topic(keep={"min_score": 0.3})) == kept
    # The legacy classifier: unused settings key nothing; used, it shares the artifact.
    assert keys({"data": {"quality_model": {"epoch": 3}}}) == base
    both = topic()
    both["data"].update(quality_model=topic()["data"]["classifiers"]["topic"], clean={"quality": {"enabled": True}})
    assert changed(named, keys(both)) == set(CHAIN) - {"raw"}
    assert config_key("cleaned", "classifiers.topic.keep.min_score") == "data.classifiers.topic.keep.min_score"
    assert config_key("quality_model", "classifiers.topic.epoch") == "data.classifiers.topic.epoch"
    assert config_key("quality_model", "quality_model.epoch") == "data.quality_model.epoch"


@pytest.mark.parametrize("classifiers, message", [
    ({"topic": {"positives": [{"type": "embedded"}]}}, r"^config: data\.classifiers\.topic\.negatives: no sources"),
    ({"lang": {"positives": [{"type": "embedded"}], "negatives": [{"type": "embedded"}]}}, r"^config: data\.classifiers\.lang: .*lang_score"),
])
def test_a_named_classifier_without_sources_or_with_a_taken_name_is_one_line(classifiers, message):
    from lmbuild.errors import UserError

    with pytest.raises(UserError, match=message):
        Plan(validate({"data": {"classifiers": classifiers}}))
    legacy = {"quality_model": {"positives": [{"type": "embedded"}], "negatives": [{"type": "embedded"}]}, "clean": {"quality": {"enabled": True}}}
    with pytest.raises(UserError, match=r"^config: data\.classifiers\.quality: "):
        Plan(validate({"data": {**legacy, "classifiers": {"quality": dict(legacy["quality_model"])}}}))


# --------------------------------------------------------------------------- export


def all_keys(cfg: dict) -> dict:
    return {s: a.key for s, a in Plan(validate(cfg)).artifacts.items()}


def test_the_export_is_keyed_by_its_settings_and_the_checkpoints_outside_the_chain():
    """`export`: outside the chain; its own settings re-key it alone, push settings and licences
    nothing else; a new trained model or evaluation re-keys it."""
    assert not STAGES["export"].chain
    assert all("export" not in a.inputs for a in Plan(validate({})).artifacts.values())
    base = all_keys({})
    assert changed(base, all_keys({"export": {"gguf_type": "q8_0"}})) == {"export"}
    assert changed(base, all_keys({"export": {"push": {"repo_id": "me/model"}}})) == set()
    assert changed(base, all_keys({"data": {"sources": [{"type": "embedded", "license": "cc0-1.0"}]}})) == {"export"}
    assert changed(base, all_keys({"export": {"average_last": 3}})) == set()  # read only with checkpoint: average
    assert changed(base, all_keys({"train": {"learning_rate": 0.01}})) == {"trained_checkpoint", "eval_report", "report", "export", "plan"}
    assert changed(base, all_keys({"eval": {"val_docs": 7}})) == {"eval_report", "report", "export"}


def test_eval_average_last_keys_only_when_set():
    keep = {"train": {"keep_steps": [10, 20]}}
    base = all_keys(keep)
    assert changed(base, all_keys({**keep, "eval": {"average_last": None}})) == set()
    assert changed(base, all_keys({**keep, "eval": {"average_last": 2}})) == {"eval_report", "report", "export"}


@pytest.mark.parametrize("cfg, line", [
    ({"export": {"checkpoint": "average"}}, "config: export.average_last: 2 asks for the mean of the last 2 kept checkpoints, but train.keep_steps keeps 0"),
    ({"eval": {"average_last": 3}, "train": {"keep_steps": [5, 10]}}, "config: eval.average_last: 3 asks for the mean of the last 3 kept checkpoints, but train.keep_steps keeps 2"),
    ({"export": {"checkpoint": "step-7"}, "train": {"keep_steps": [5]}}, "config: export.checkpoint: step-7 is not a kept step (train.keep_steps: [5])"),
    ({"export": {"gguf_type": "q4_k"}}, "config: export.gguf_type: 'q4_k' is not one of ['f16', 'q8_0']"),
])
def test_bad_export_settings_are_one_line(cfg, line):
    from lmbuild.errors import UserError

    with pytest.raises(UserError) as exc:
        Plan(validate(cfg))
    assert str(exc.value) == line


def test_each_variant_has_its_own_export():
    p = Plan(validate({"variants": {"small": {"model.num_hidden_layers": 1}}}))
    mine, small = p.artifacts["export"], p.variants["small"].artifacts["export"]
    assert small.key != mine.key and small.inputs["trained_checkpoint"] is p.variants["small"].artifacts["trained_checkpoint"]
    assert small.inputs["eval_report"] is p.variants["small"].artifacts["eval_report"]
