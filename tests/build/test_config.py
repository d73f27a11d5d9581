import pytest
import yaml

from lmbuild.build.config import validate
from lmbuild.errors import UserError

from conftest import ROOT


def test_defaults_fill_every_section():
    c = validate({})
    assert c["train"]["learning_rate"] > 0
    assert c["data"]["sources"] == [c["data"]["sources"][0]] and c["data"]["sources"][0]["type"] == "embedded"
    assert c["data"]["clean"]["lang"]["keep"] == ["en"]
    assert c["data"]["dedup"]["method"] == "exact"


@pytest.mark.parametrize("name", ["config.yaml", "tests/smoke.yaml"])
def test_shipped_configs_are_valid(name):
    validate(yaml.safe_load((ROOT / name).read_text()))


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"trian": {}}, "config: trian: unknown key"),
        ({"train": {"learning_rat": 1}}, "config: train.learning_rat: unknown key"),
        ({"train": {"learning_rate": "fast"}}, "config: train.learning_rate: 'fast' is not of type 'number'"),
        ({"data": {"sources": [{"type": "jsonl", "path": "x", "txt": 1}]}}, "config: data.sources[0].txt: unknown key"),
        ({"data": {"shards": 0}}, "config: data.shards: 0 is less than the minimum of 1"),
        ({"data": {"sources": [{"type": "jsonl"}]}}, "config: data.sources[0].path is required for type jsonl"),
        ({"model": {"hidden_size": 100, "num_attention_heads": 3}}, "config: model.hidden_size (100) must be a multiple"),
        ({"pack": {"seq_len": 512}}, "config: pack.seq_len (512) exceeds model.max_position_embeddings"),
        ({"train": {"max_steps": 10, "warmup_steps": 10}}, "config: train.warmup_steps must be smaller than train.max_steps"),
        (
            {"train": {"lr_scheduler": "wsd", "max_steps": 100, "warmup_steps": 60, "decay_fraction": 0.5}},
            "config: train.warmup_steps (60) plus the wsd decay (50 steps, train.decay_fraction 0.5) exceed train.max_steps (100)",
        ),
        ({"train": {"max_steps": 10, "warmup_steps": 2, "keep_steps": [5, 11]}}, "config: train.keep_steps [11] exceed train.max_steps (10)"),
        ({"train": {"keep_steps": [5, 5]}}, "config: train.keep_steps: [5, 5] has non-unique elements"),
        ({"train": {"spike": {"action": "restart"}}}, "config: train.spike.action: 'restart' is not one of"),
        ({"train": {"lr_scheduler": "wsd", "max_steps": 100, "warmup_steps": 60, "decay_steps": 41}}, "config: train.warmup_steps (60) plus the wsd decay (41 steps"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(cfg, expected):
    with pytest.raises(UserError) as err:
        validate(cfg)
    msg = str(err.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg


def test_config_reference_is_generated_from_the_schema():
    from lmbuild.build.config import END, START, reference_markdown

    doc = (ROOT / "docs" / "configuration.md").read_text()
    block = doc.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == reference_markdown().strip(), "run: python -m lmbuild.build.config docs/configuration.md"


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"data": {"clean": {"gopher_repetition": {"top_ngram_char_frac": {2: float("-inf")}}}}}, "config: data.clean.gopher_repetition.top_ngram_char_frac.2: -inf is not a finite number"),
        ({"variants": {"a": {"train.weight_decay": float("nan")}}}, "config: variants.a.train.weight_decay: nan is not a finite number"),
        ({"artifacts": ""}, "config: artifacts: must be a folder name"),
        ({"artifacts": "  "}, "config: artifacts: must be a folder name"),
        ({"artifacts": " art"}, "config: artifacts: must be a folder name"),
    ],
)
def test_nonsense_values_are_one_line_naming_the_key(cfg, expected):
    """YAML's .nan/.inf are numbers to JSON Schema; an empty artifacts folder is a string."""
    with pytest.raises(UserError) as err:
        validate(cfg)
    msg = str(err.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg


def test_yaml_nan_and_inf_from_a_file_name_the_key():
    cfg = yaml.safe_load("model:\n  rope_theta: .inf\ntrain:\n  learning_rate: .nan\n")
    with pytest.raises(UserError, match=r"^config: model\.rope_theta: inf is not a finite number"):
        validate(cfg)


def test_schema_is_package_data():
    """A non-editable install (pip install .) has no checkout beside it: the schema must
    travel inside the package, declared as package data."""
    import importlib.resources
    import tomllib

    for name in ("config.schema.yaml", "report.schema.json"):  # the one place for schemas
        assert (importlib.resources.files("lmbuild") / "schemas" / name).is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "schemas/*" in pyproject["tool"]["setuptools"]["package-data"]["lmbuild"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "-inf", ".nan"])
def test_non_finite_numbers_are_one_line_errors(value):
    with pytest.raises(UserError, match=r"^config: train.learning_rate: (nan|inf) is not a finite number$|^config: train.learning_rate: '(-inf|\.nan)' is not of type 'number'$"):
        validate({"train": {"learning_rate": value}})


def test_numbers_get_one_canonical_type_and_mappings_sorted():
    c = validate({"train": {"max_steps": 3.0e2, "learning_rate": "1e-3", "warmup_steps": "10", "weight_decay": 1}})
    t = c["train"]
    assert (t["max_steps"], type(t["max_steps"])) == (300, int)
    assert (t["learning_rate"], type(t["learning_rate"])) == (0.001, float)
    assert t["warmup_steps"] == 10
    assert t["weight_decay"] == 1.0 and isinstance(t["weight_decay"], float)
    assert list(c) == sorted(c) and list(t) == sorted(t)
    with pytest.raises(UserError, match=r"^config: train.max_steps: 2.5 is not of type 'integer'$"):
        validate({"train": {"max_steps": 2.5}})
