"""The config's layers (lmbuild/build/layers.py) and the `lmbuild config` command that shows them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from lmbuild.build import layers
from lmbuild.cli import main
from lmbuild.errors import UserError

LMBUILD = Path(sys.executable).parent / "lmbuild"


def write(path: Path, data) -> str:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_files_merge_in_order_and_the_command_line_wins(tmp_path):
    a = write(tmp_path / "a.yaml", {"train": {"max_steps": 100, "learning_rate": 0.01}, "data": {"sources": [{"type": "embedded"}, {"type": "embedded", "name": "x"}]}})
    b = write(tmp_path / "b.yaml", {"train": {"max_steps": 200}, "data": {"sources": [{"type": "jsonl", "path": "c/*.jsonl"}]}})
    got = layers.load([a, b], {"train": {"seed": "7"}})
    assert got.config == {"train": {"max_steps": 200, "learning_rate": 0.01, "seed": "7"}, "data": {"sources": [{"type": "jsonl", "path": "c/*.jsonl"}]}}
    # Mappings merge key by key; a list is replaced whole, and the origins of its old items go with it.
    assert got.origins == {
        "train.max_steps": f"file:{b}", "train.learning_rate": f"file:{a}", "train.seed": "command line",
        "data.sources[0].type": f"file:{b}", "data.sources[0].path": f"file:{b}",
    }  # fmt: skip


def test_the_demo_is_the_config_only_without_a_config_file(tmp_path):
    demo = write(tmp_path / "config.yaml", {"data": {"clean": {"per_source": {"embedded": {"c4": {"enabled": False}}}}}})
    mine = write(tmp_path / "mine.yaml", {"data": {"sources": [{"type": "jsonl", "path": "c/*.jsonl"}]}})
    assert layers.load([], None, demo=demo).config["data"]["clean"]["per_source"]
    assert "clean" not in layers.load([mine], None, demo=demo).config["data"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: {max_steps: 3\n", r"bad\.yaml:2: not valid YAML"),
        ("- a\n- b\n", r"bad\.yaml: expected a mapping of settings, got a list"),
        (b"\xff\xfe", r"bad\.yaml: not UTF-8 text"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=message):
        layers.load([str(path)])
    with pytest.raises(UserError, match=r"missing\.yaml: cannot read"):
        layers.load([str(tmp_path / "missing.yaml")])


def origins_of(capsys, *argv) -> dict[str, tuple[str, str]]:
    assert main(["config", *argv]) == 0
    out = {}
    for line in capsys.readouterr().out.splitlines():
        origin, setting = line.split("\t")
        key, value = setting.split("=", 1)
        out[key] = (origin, value)
    return out


def test_lmbuild_config_names_each_values_layer(tmp_path, capsys, monkeypatch):
    """A user's file that sets only its source and a preset: the preset's values (not the demo's
    English-only language ID or its C4/FineWeb exceptions) reach the build, and every value
    says where it came from."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "zh").mkdir()
    write(tmp_path / "zh" / "a.jsonl", '{"text": "x"}\n')
    mine = write(tmp_path / "mine.yaml", {"data": {"sources": [{"type": "jsonl", "path": "zh/*.jsonl"}], "clean": {"preset": "zh"}}})
    got = origins_of(capsys, "--configfile", mine, "--config", "train={max_steps: 100}")
    assert got["data.clean.lang.keep"] == ("preset zh", '["zh"]')
    assert got["data.clean.c4.enabled"] == ("preset zh", "false")
    assert got["data.clean.fineweb.enabled"] == ("default", "true")
    assert got["data.clean.per_source"] == ("default", "{}")
    assert got["data.sources[0].path"] == (f"file:{mine}", "zh/*.jsonl")
    assert got["data.sources[0].text_field"] == ("default", "text")
    assert got["train.max_steps"] == ("command line", "100")
    assert got["model.hidden_size"] == ("default", "256")
    assert "resources.default.threads" not in got  # the demo's resources stay with the demo

    # A value the user writes over the preset is the user's.
    over = write(tmp_path / "over.yaml", {"data": {"clean": {"lang": {"keep": ["zh", "en"]}}}})
    got = origins_of(capsys, "--configfile", mine, over)
    assert got["data.clean.lang.keep"] == (f"file:{over}", '["zh", "en"]')


def test_lmbuild_config_without_a_file_is_the_demo(capsys):
    got = origins_of(capsys)
    assert got["data.clean.per_source.embedded.c4.enabled"] == ("file:config.yaml", "false")
    assert got["data.sources[0].type"] == ("file:config.yaml", "embedded")
    assert got["data.clean.c4.enabled"] == ("default", "true")


def test_the_console_script_reports_bad_input_in_one_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"data": {"clean": {"preset": "xx"}}})
    proc = subprocess.run([str(LMBUILD), "config", "--configfile", bad], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: config: data.clean.preset: 'xx' is not one of [None, 'en', 'ja', 'zh', 'ko', 'th']"]
