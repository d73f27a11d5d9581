"""lmbuild why's comparison of a planned artifact with a built one (lmbuild/build/why.py); the
agreement with `snakemake -n` is tested end to end in tests/workflow/test_reruns.py."""

from lmbuild.build.why import config_key, setting_changes


def test_settings_are_named_as_config_keys():
    assert config_key("cleaned", "c4.enabled") == "data.clean.c4.enabled"
    assert config_key("raw", "sources[0].path") == "data.sources[0].path"
    assert config_key("init_checkpoint", "seed") == "train.seed"
    assert config_key("trained_checkpoint", "mixture.web.weight") == "data.mixture.web.weight"
    assert config_key("report", "x") == "x"


def test_changes_name_values_and_files():
    old = {"min_chars": 200, "c4": {"enabled": False}, "sources": [{"path": {"pattern": "*.jsonl", "files": [["a.jsonl", "1"], ["b.jsonl", "2"]]}}]}
    new = {"min_chars": 300, "c4": {"enabled": False, "x": None}, "sources": [{"path": {"pattern": "*.jsonl", "files": [["a.jsonl", "9"], ["c.jsonl", "3"]]}}]}
    assert setting_changes(old, new, "cleaned") == [
        "data.clean.c4.x: (unset) -> null",
        "data.clean.min_chars: 200 -> 300",
        "data.clean.sources[0].path: file changed: a.jsonl",
        "data.clean.sources[0].path: file removed: b.jsonl",
        "data.clean.sources[0].path: file added: c.jsonl",
    ]
    assert setting_changes(old, old) == []


def test_the_export_targets_are_known():
    from lmbuild.build.config import validate
    from lmbuild.build.graph import Plan
    from lmbuild.build.why import targets

    p = Plan(validate({"variants": {"small": {"model.num_hidden_layers": 1}}}))
    assert targets(p, ["export", "small__export"]) == [p.artifacts["export"], p.variants["small"].artifacts["export"]]
