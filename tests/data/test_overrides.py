"""Per-source cleaning settings (lmbuild/data/overrides.py) and their config check."""

from __future__ import annotations

import copy

import pytest

from lmbuild.build.config import validate
from lmbuild.build.presets import PRESETS
from lmbuild.data.overrides import difference, for_source, merge
from lmbuild.errors import UserError
from lmbuild.build.keys import digest

SOURCES = [{"type": "embedded", "name": "plays", "parts": ["shakespeare"]}, {"type": "jsonl", "path": "web/*.jsonl"}]


def config(per_source: dict, **clean) -> dict:
    return {"data": {"sources": copy.deepcopy(SOURCES), "clean": {"per_source": per_source, **clean}}}


def test_merge_and_difference_are_inverse():
    base = {"a": 1, "b": {"c": [1, 2], "d": None}, "e": {"f": 1}}
    eff = {"a": 1, "b": {"c": [3], "d": 0.5}, "e": {"f": 1}}
    diff = difference(base, eff)
    assert diff == {"b": {"c": [3], "d": 0.5}}
    assert merge(base, diff) == eff


def test_an_override_is_kept_as_its_canonical_difference():
    got = validate(config({"plays": {"c4": {"enabled": False}, "min_chars": "2e2", "fineweb": {"short_line_chars": 3e1}}}))
    # 2e2 and 3e1 equal the stage's own settings: no override, so no key change for writing them.
    assert got["data"]["clean"]["per_source"] == {"plays": {"c4": {"enabled": False}}}
    same = validate(config({"plays": {"c4": {"enabled": False}}}))
    assert digest(got["data"]["clean"]) == digest(same["data"]["clean"])
    assert validate(config({"plays": {"min_chars": 200}}))["data"]["clean"]["per_source"] == {}


def test_a_source_gets_its_override_the_others_the_stage_settings():
    clean = validate(config({"plays": {"c4": {"enabled": False}}}, min_chars=100))["data"]["clean"]
    plays, web = for_source(clean, "plays"), for_source(clean, "jsonl:*.jsonl")
    assert plays["c4"]["enabled"] is False and plays["min_chars"] == 100
    assert web["c4"]["enabled"] is True and "per_source" not in web


def test_a_per_source_preset_goes_under_its_own_keys():
    clean = validate(config({"jsonl:*.jsonl": {"preset": "th", "lang": {"threshold": 0.3}}}))["data"]["clean"]
    web = for_source(clean, "jsonl:*.jsonl")
    assert web["lang"] == {"keep": ["th"], "threshold": 0.3}
    assert web["gopher_quality"]["stop_words"] == PRESETS["th"]["gopher_quality"]["stop_words"]
    assert for_source(clean, "plays")["lang"]["keep"] == ["en"]


@pytest.mark.parametrize(
    "per_source, message",
    [
        ({"forum": {"c4": {"enabled": False}}}, r"data\.clean\.per_source\.forum: no source is named 'forum' \(the sources: plays, jsonl:\*\.jsonl"),
        ({"embedded": {"c4": {"enabled": False}}}, r"per_source\.embedded: no source is named 'embedded'"),
        ({"plays": {"quality": {"enabled": True}}}, r"per_source\.plays\.quality: applies to the whole stage \(data\.clean\.quality\)"),
        ({"plays": {"per_source": {}}}, r"per_source\.plays\.per_source: applies to the whole stage"),
        ({"plays": {"preset": "fr"}}, r"per_source\.plays\.preset: unknown preset 'fr'"),
        ({"plays": {"c4": {"enabled": "no"}}}, r"per_source\.plays\.c4\.enabled: 'no' is not of type 'boolean'"),
        ({"plays": {"gopher": {}}}, r"per_source\.plays\.gopher: unknown key"),
        ({"plays": {"min_chars": float("nan")}}, r"per_source\.plays\.min_chars"),
        ({"plays": ["c4"]}, r"data\.clean\.per_source\.plays: \['c4'\] is not of type 'object'"),
    ],
)
def test_bad_overrides_are_one_line_naming_the_key(per_source, message):
    with pytest.raises(UserError, match=message) as err:
        validate(config(per_source))
    assert "\n" not in str(err.value)


def test_a_setting_only_the_demo_understands_is_refused_elsewhere():
    """`parts` picks the embedded corpus's plays or stdlib: on a file source it is an error."""
    cfg = config({})
    cfg["data"]["sources"][1]["parts"] = ["shakespeare"]
    with pytest.raises(UserError, match=r"data\.sources\[1\]\.parts applies to type embedded only"):
        validate(cfg)
