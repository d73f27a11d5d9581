"""Config variants and model.init settings: validation (one line naming the key) and keys."""

from __future__ import annotations

import pytest

from lmbuild.build.config import validate
from lmbuild.build.filestate import StateCache
from lmbuild.errors import UserError
from lmbuild.build.graph import Plan
from lmbuild.build.stages import CHAIN

UPSCALE = {"init": "upscale", "upscale_drop": 1, "num_hidden_layers": 6, "source": {"variant": "small"}}
SMALL = {"model.num_hidden_layers": 4, "model.init": "random", "model.source": None, "train.max_steps": 100}


def solar(**variants) -> dict:
    return {"model": dict(UPSCALE), "variants": {"small": dict(SMALL), **variants}}


def keys(plan: Plan) -> dict:
    """The keys of the chain that `all` builds (not the cost plan, which prices every model.* key)."""
    return {s: a.key for s, a in plan.artifacts.items() if s in CHAIN}


def test_a_variant_is_the_base_with_its_overrides_and_shares_equal_artifacts():
    plan = Plan(validate(solar()))
    small = plan.variants["small"]
    assert small.config["model"]["num_hidden_layers"] == 4 and small.config["train"]["max_steps"] == 100
    assert plan.config["train"]["max_steps"] == 300
    base, var = keys(plan), keys(small)
    # Data stages and tokenizer are shared; the model chain is the variant's own.
    assert {s for s in base if base[s] == var[s]} == {"raw", "quality_model", "cleaned", "deduplicated", "tokenizer", "shards"}
    init = plan.artifacts["init_checkpoint"]
    assert init.inputs["source"] is small.artifacts["trained_checkpoint"]
    assert set(init.lineage()["inputs"]) == {"tokenizer", "source"}
    # Snakemake's input functions find the variant's artifacts by key.
    assert plan.get("trained_checkpoint", var["trained_checkpoint"]) is small.artifacts["trained_checkpoint"]


def test_the_source_variant_key_enters_the_downstream_keys():
    base = keys(Plan(validate(solar())))
    longer = keys(Plan(validate(solar(small={**SMALL, "train.max_steps": 120}))))
    assert {s for s in base if base[s] != longer[s]} == {"init_checkpoint", "trained_checkpoint", "eval_report", "report"}
    from_init = validate(solar())
    from_init["model"]["source"]["stage"] = "init_checkpoint"
    other = Plan(validate(from_init))
    assert other.artifacts["init_checkpoint"].inputs["source"].stage == "init_checkpoint"
    assert keys(other)["init_checkpoint"] != base["init_checkpoint"]


def test_renaming_a_variant_rebuilds_only_the_report_that_shows_its_name():
    a, b = keys(Plan(validate(solar()))), keys(Plan(validate({"model": {**UPSCALE, "source": {"variant": "tiny"}}, "variants": {"tiny": dict(SMALL)}})))
    assert {s for s in a if a[s] != b[s]} == {"eval_report", "report"}


def test_the_base_report_evaluates_every_variants_trained_model():
    plan = Plan(validate(solar(random6={"model.init": "random", "model.source": None, "train.max_steps": 450})))
    ins = plan.artifacts["eval_report"].inputs
    # Variants come in name order (the validated config's mappings are sorted).
    assert list(ins) == ["init_checkpoint", "trained_checkpoint", "shards", "random6__trained_checkpoint", "small__trained_checkpoint"]
    assert ins["small__trained_checkpoint"] is plan.variants["small"].artifacts["trained_checkpoint"]
    assert ins["random6__trained_checkpoint"] is plan.variants["random6"].artifacts["trained_checkpoint"]
    # A variant's own report has only its own models; one equal to the base adds nothing.
    assert list(plan.variants["small"].artifacts["eval_report"].inputs) == ["init_checkpoint", "trained_checkpoint", "shards"]
    same = Plan(validate({"variants": {"same": {"train.seed": 42}}}))
    assert list(same.artifacts["eval_report"].inputs) == ["init_checkpoint", "trained_checkpoint", "shards"]


def test_a_variant_equal_to_the_base_has_the_base_keys():
    plan = Plan(validate({"variants": {"same": {"train.seed": 42}}}))
    assert keys(plan.variants["same"]) == keys(plan)


def test_random_init_keys_ignore_the_layer_plan_settings():
    assert keys(Plan(validate({}))) == keys(Plan(validate({"model": {"upscale_drop": 3}})))


def test_copying_inits_ignore_initializer_range_and_seed(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = {"model": {"init": "pretrained", "source": {"path": str(tmp_path)}}}
    base = keys(Plan(validate(cfg)))
    assert keys(Plan(validate({"model": {**cfg["model"], "initializer_range": 0.5}}))) == base
    changed = keys(Plan(validate({**cfg, "train": {"seed": 7}})))
    assert {s for s in base if base[s] != changed[s]} == {"trained_checkpoint", "eval_report", "report"}


def test_a_local_source_folder_enters_the_init_key(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = {"model": {"init": "pretrained", "source": {"path": str(tmp_path)}}}
    before = keys(Plan(validate(cfg)))
    (tmp_path / "model.safetensors").write_bytes(b"x")
    after = keys(Plan(validate(cfg)))
    assert {s for s in before if before[s] != after[s]} == {"init_checkpoint", "trained_checkpoint", "eval_report", "report"}


def test_chained_variants():
    cfg = solar(tiny={"model.num_hidden_layers": 2, "model.init": "random", "model.source": None})
    cfg["variants"]["small"] = {"model.num_hidden_layers": 4, "model.init": "upscale", "model.upscale_drop": 0, "model.source": {"variant": "tiny"}}
    plan = Plan(validate(cfg))
    small = plan.variants["small"]
    assert small.artifacts["init_checkpoint"].inputs["source"] is plan.variants["tiny"].artifacts["trained_checkpoint"]
    assert plan.artifacts["init_checkpoint"].inputs["source"] is small.artifacts["trained_checkpoint"]


@pytest.mark.parametrize(
    "cfg,message",
    [
        ({"model": {**UPSCALE, "source": {"variant": "big"}}, "variants": {"small": SMALL}}, r"^config: model.source.variant: unknown variant 'big' \(variants: small\)$"),
        (solar(small={**SMALL, "model.num_hidden_layer": 4}), r"^config: variants.small: model.num_hidden_layer: unknown key$"),
        (solar(small={**SMALL, "train.max_steps": "many"}), r"^config: variants.small: train.max_steps: 'many' is not of type 'integer'$"),
        (solar(small={**SMALL, "resources.default": {}}), r"^config: variants.small: resources.default: resources is the same for every variant$"),
        (solar(small={**SMALL, "model.hidden_size.x": 1}), r"^config: variants.small: model.hidden_size.x: model.hidden_size is not a section$"),
        (solar(small={k: v for k, v in SMALL.items() if k != "model.source"}), r"^config: variants.small: model.source is set but model.init is random"),
        (
            {"model": {**UPSCALE, "source": {"variant": "a"}}, "variants": {"a": {"model.source": {"variant": "b"}}, "b": {"model.source": {"variant": "a"}}}},
            r"^config: variants: model.source.variant forms a cycle: \(base\) -> a -> b -> a$",
        ),
        ({"model": UPSCALE, "variants": {"small": {"model.source": {"variant": "small"}}}}, r"cycle: \(base\) -> small -> small$"),
        (solar(small={**SMALL, "data.clean.preset": "ja"}), r"^config: variants.small: data.clean.preset: a preset is set in the base config, or for one source"),
        (solar(eval_report=SMALL), r"^config: variants.eval_report: a variant name is"),
        (solar(**{"bad__name": SMALL}), r"^config: variants.bad__name: a variant name is"),
        ({"model": {"init": "pretrained"}}, r"^config: model.source: model.init pretrained needs exactly one of path, hub or variant$"),
        ({"model": {"init": "pretrained", "source": {"path": "a", "hub": "b"}}}, r"needs exactly one of path, hub or variant$"),
        ({"model": {"init": "pretrained", "source": {"path": "a", "revision": "main"}}}, r"^config: model.source: stage goes with variant, revision with hub$"),
        ({"model": {"init": "pretrained", "source": {"path": "a"}, "upscale_drop": 2}}, r"^config: model.init pretrained takes no layer plan \(given: upscale_drop\)$"),
        ({"model": {**UPSCALE, "upscale_drop": None}, "variants": {"small": SMALL}}, r"^config: model.init upscale takes model.layer_plan or model.upscale_drop \(given: none\)$"),
        ({"model": {**UPSCALE, "layer_plan": [0, 1]}, "variants": {"small": SMALL}}, r"given: layer_plan, upscale_drop\)$"),
        ({"model": {**UPSCALE, "init": "downscale"}, "variants": {"small": SMALL}}, r"^config: model.init downscale takes model.layer_plan or model.downscale_keep \(given: upscale_drop\)$"),
        ({"model": {"init": "random", "source": {"path": "x"}}}, r"^config: model.source is set but model.init is random"),
        ({"model": {"source": {"paht": "x"}}}, r"^config: model.source.paht: unknown key$"),
    ],
)
def test_bad_configs_stop_with_one_line_naming_the_key(cfg, message):
    with pytest.raises(UserError, match=message) as err:
        Plan(validate(cfg))
    assert "\n" not in str(err.value)


def test_a_variant_source_must_fit_before_anything_trains():
    with pytest.raises(UserError, match=r"^config: model.num_hidden_layers: 5, but model.init upscale of the 4-layer source variant gives 6$"):
        Plan(validate({"model": {**UPSCALE, "num_hidden_layers": 5}, "variants": {"small": SMALL}}))
    with pytest.raises(UserError, match=r"^config: model.hidden_size: 256 does not match its source variant's 128 \(small\)$"):
        Plan(validate(solar(small={**SMALL, "model.hidden_size": 128})))
    # The plan itself is checked too, with lmbuild.models.surgery's own rules and messages.
    with pytest.raises(UserError, match=r"^config: model.upscale_drop: 4 must be at least 0 and smaller than the source's 4 layers \(source variant small\)$"):
        Plan(validate({"model": {**UPSCALE, "upscale_drop": 4}, "variants": {"small": SMALL}}))
    with pytest.raises(UserError, match=r"^config: model.layer_plan: layer 9 does not exist in the 4-layer source \(source variant small\)$"):
        Plan(validate({"model": {**UPSCALE, "upscale_drop": None, "layer_plan": [0, 1, 2, 3, 9], "num_hidden_layers": 5}, "variants": {"small": SMALL}}))
    with pytest.raises(UserError, match=r"^config: model.downscale_keep: .* removes nothing"):
        Plan(validate({"model": {**UPSCALE, "init": "downscale", "upscale_drop": None, "downscale_keep": 2, "num_hidden_layers": 4}, "variants": {"small": SMALL}}))


# --- a synthetic source whose teacher is a variant of the build (lmbuild/data/synthetic.py) ---------

EMBEDDED = {"type": "embedded"}


def taught(teacher: dict | None = None, **synthetic) -> dict:
    """The base reads the embedded corpus and what the variant `teacher` (trained on the embedded
    corpus alone) writes from prompts.txt."""
    src = {"type": "synthetic", "model": {"variant": "teacher"}, "prompts": "prompts.txt", **synthetic}
    return {"data": {"sources": [EMBEDDED, src]}, "variants": {"teacher": {"data.sources": [EMBEDDED], **(teacher or {})}}}


@pytest.fixture
def prompts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("Once upon a time\n")
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text("{}")
    return tmp_path / "prompts.txt"


def test_a_teacher_variant_is_an_input_of_raw_and_its_key_in_every_key_after(prompts):
    plan = Plan(validate(taught()))
    teacher = plan.variants["teacher"]
    raw = plan.artifacts["raw"]
    assert raw.inputs == {"teacher_1": teacher.artifacts["trained_checkpoint"]}
    # The teacher is the embedded build: its keys are those of a build without the synthetic source.
    assert keys(teacher) == keys(Plan(validate({})))
    # Named by its artifact, not the variant's name: a renamed teacher re-keys only the page that shows it.
    assert raw.settings["sources"][1]["model"] == {"stage": "trained_checkpoint"}
    renamed = Plan(validate({"data": {"sources": [EMBEDDED, {**taught()["data"]["sources"][1], "model": {"variant": "tutor"}}]},
                             "variants": {"tutor": {"data.sources": [EMBEDDED]}}}))
    base = keys(plan)
    assert {s for s in base if keys(renamed)[s] != base[s]} == {"eval_report", "report"}
    # The seed and every sampling setting re-key raw onward and not the teacher; so does the teacher's training.
    downstream = {"raw", "cleaned", "deduplicated", "tokenizer", "shards", "init_checkpoint", "trained_checkpoint", "eval_report", "report"}
    for cfg in (taught(seed=1), taught(temperature=0.7), taught(per_prompt=2), taught(teacher={"train.max_steps": 100})):
        other = Plan(validate(cfg))
        assert {s for s in base if keys(other)[s] != base[s]} == downstream, cfg
    assert keys(Plan(validate(taught(teacher={"train.seed": 42})))) == base  # settings written otherwise
    assert keys(Plan(validate(taught(seed=0, per_prompt=1, temperature=1)))) == base
    assert keys(Plan(validate(taught({}, model={"variant": "teacher", "stage": "init_checkpoint"}))))["raw"] != base["raw"]
    prompts.write_text("Once upon a time\nThe king\n")  # the prompts by content
    assert keys(Plan(validate(taught())))["raw"] != base["raw"]


def test_a_local_teacher_folder_enters_the_raw_key_by_content(prompts, tmp_path):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    cfg = {"data": {"sources": [EMBEDDED, {"type": "synthetic", "model": {"path": "teacher"}, "prompts": "prompts.txt"}]}}
    before = Plan(validate(cfg)).artifacts["raw"]
    assert before.inputs == {} and before.settings["sources"][1]["model"]["path"] == {"sha256": StateCache().folder_digest(folder)}
    (folder / "model.safetensors").write_bytes(b"y")
    assert Plan(validate(cfg)).artifacts["raw"].key != before.key


@pytest.mark.parametrize(
    "cfg,message",
    [
        # The base's sources are the variant's unless it sets its own: its teacher would be itself.
        ({**taught(), "variants": {"teacher": {}}}, r"^config: variants.teacher: data.sources\[1\].model.variant: the teacher is this variant itself; give variants.teacher its own data.sources$"),
        ({**taught(), "variants": {}}, r"^config: data.sources\[1\].model.variant: unknown variant 'teacher' \(variants: none defined\)$"),
        (
            {**taught(), "variants": {"teacher": {"data.sources": [EMBEDDED], "model.init": "pretrained", "model.source": {"variant": "student"}},
                                      "student": {"data.sources": taught()["data"]["sources"]}}},
            r"^config: variants: synthetic teachers and model.source form a cycle: teacher -> student -> teacher$",
        ),
        (taught(model={"variant": "teacher", "path": "x"}), r"^config: data.sources\[1\].model: needs exactly one of path \(a local model folder\) or variant"),
        (taught(model={"path": "x", "stage": "init_checkpoint"}), r"^config: data.sources\[1\].model: stage goes with variant$"),
        (taught(path="x"), r"^config: data.sources\[1\].path: a synthetic source has no path"),
        ({"data": {"sources": [{"type": "jsonl", "path": "x", "seed": 1}]}}, r"^config: data.sources\[0\].seed applies to type synthetic only$"),
        ({"data": {"sources": [{"type": "synthetic", "model": {"path": "x"}}]}}, r"^config: data.sources\[0\]: 'prompts' is a required property$"),
        (
            {"data": {"quality_model": {"positives": [taught()["data"]["sources"][1]], "negatives": [EMBEDDED]}}},
            r"^config: data.quality_model.positives\[0\].model: unknown key$",  # the schema has no synthetic classifier sources
        ),
        ({"data": {"sources": [{"type": "synthetic", "model": {"path": "nowhere"}, "prompts": "prompts.txt"}]}}, r"^data.sources\[0\].model.path: nowhere: no such folder$"),
        ({"data": {"sources": [{"type": "synthetic", "model": {"path": "."}, "prompts": "none.txt"}]}}, r"^data.sources\[0\].prompts: no file matches 'none.txt'$"),
        # Found when the workflow is parsed, before a teacher trains: an empty prompts file, a folder without weights.
        (taught(prompts="blank.txt"), r"^data.sources\[1\].prompts: blank.txt: no prompts \(one prompt a line\)$"),
        (
            {"data": {"sources": [{"type": "synthetic", "model": {"path": "no_weights"}, "prompts": "prompts.txt"}]}},
            r"^data.sources\[0\].model.path: no_weights: not a Hugging Face model folder \(config.json and \*.safetensors weights\)$",
        ),
    ],
)
def test_bad_synthetic_sources_stop_with_one_line(prompts, cfg, message):
    with pytest.raises(UserError, match=message) as err:
        Plan(validate(cfg))
    assert "\n" not in str(err.value)
