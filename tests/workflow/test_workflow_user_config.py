"""A user's own config through the real Snakefile, as a new user writes it: only data.sources
(and a preset), in a working directory beside a copy of the demo's config.yaml. The demo's
choices must not reach the build; the preset must; bad input is one line and no artifact."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import vendored
import yaml

from conftest import ROOT, SNAKEMAKE

pytestmark = pytest.mark.e2e

PAGES_ZH = ROOT / "tests" / "data" / "manpages_zh.jsonl.gz"


def user_run(workdir: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    """`snakemake <args> --configfile my.yaml` in ``workdir``, which also holds the demo's config.yaml."""
    shutil.copy(ROOT / "config.yaml", workdir / "config.yaml")  # as a user running beside it would have
    (workdir / "my.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args, "--configfile", str(workdir / "my.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def cleaned_manifest(workdir: Path) -> dict:
    (m,) = (workdir / "artifacts" / "cleaned").glob("*/manifest.json")
    return json.loads(m.read_text())


def test_a_config_with_only_sources_gets_lmbuilds_defaults_not_the_demos(tmp_path):
    """Real web-like prose (Debian fortunes): C4's and FineWeb's rules run, as lmbuild's defaults
    say, and no per-source exception of the demo's is in the key."""
    corpus = vendored.unpack("fortunes_en.jsonl.gz", tmp_path / "corpus")
    proc = user_run(tmp_path, {"data": {"sources": [{"type": "jsonl", "path": str(corpus.relative_to(tmp_path))}]}}, "cleaned")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    s = cleaned_manifest(tmp_path)["key_settings"]
    assert s["c4"]["enabled"] is True and s["fineweb"]["enabled"] is True
    assert s["per_source"] == {} and s["lang"]["keep"] == ["en"]


def test_a_preset_in_a_users_file_reaches_the_build(tmp_path):
    """60 real Chinese man pages with `data.clean.preset: zh` and nothing else: the preset's
    language and thresholds decide (the demo's English-only language ID dropped every page)."""
    corpus = tmp_path / "zh" / "pages.jsonl"
    corpus.parent.mkdir()
    corpus.write_bytes(gzip.decompress(PAGES_ZH.read_bytes()))
    cfg = {"data": {"sources": [{"type": "jsonl", "path": "zh/*.jsonl"}], "clean": {"preset": "zh"}}}
    proc = user_run(tmp_path, cfg, "cleaned")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    m = cleaned_manifest(tmp_path)
    assert m["key_settings"]["lang"]["keep"] == ["zh"] and m["key_settings"]["c4"]["enabled"] is False
    assert m["counts"]["documents_in"] == 60 and m["counts"]["documents_out"] >= 54, m["counts"]["dropped"]


@pytest.mark.parametrize(
    "clean, message",
    [
        ({"preset": "fr"}, "error: config: data.clean.preset: 'fr' is not one of [None, 'en', 'ja', 'zh', 'ko', 'th']"),
        ({"per_source": {"embedded": {"c4": {"enabled": False}}}}, "error: config: data.clean.per_source.embedded: no source is named 'embedded'"),
        ({"per_source": {"jsonl:*.jsonl": {"dropped": {"max_per_reason": 1}}}}, "error: config: data.clean.per_source.jsonl:*.jsonl.dropped: applies to the whole stage"),
    ],
)
def test_bad_layers_are_one_line_and_build_nothing(tmp_path, clean, message):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text('{"text": "hello"}\n')
    cfg = {"data": {"sources": [{"type": "jsonl", "path": "c/*.jsonl"}], "clean": clean}}
    proc = user_run(tmp_path, cfg, "cleaned")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), proc.stderr[-2000:]
    assert not (tmp_path / "artifacts").exists()
