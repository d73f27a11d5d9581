"""Source paths: a glob's root, names relative to it, and files reached twice."""

import os

import pytest

from lmbuild.data.files import match_files, pattern_root, relative_pattern
from lmbuild.errors import UserError


@pytest.mark.parametrize(
    "pattern, root, rel",
    [
        ("data/**/*.jsonl", "data", "**/*.jsonl"),
        ("/abs/corpus/*.parquet", "/abs/corpus", "*.parquet"),
        ("corpus/a.jsonl", "corpus", "a.jsonl"),
        ("a.jsonl", ".", "a.jsonl"),
        ("*.jsonl", ".", "*.jsonl"),
    ],
)
def test_root_and_relative_pattern(pattern, root, rel):
    assert pattern_root(pattern) == root and relative_pattern(pattern) == rel


def test_names_are_relative_to_the_root(tmp_path):
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "a.jsonl").write_text("{}\n")
    (tmp_path / "c" / "sub" / "b.jsonl").write_text("{}\n")
    found = match_files(str(tmp_path / "c" / "**" / "*.jsonl"), "data.sources[0].path")
    assert [rel for _, rel in found] == ["a.jsonl", "sub/b.jsonl"]


def test_a_file_reached_twice_is_listed_once(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text("{}\n")
    os.symlink(tmp_path / "c", tmp_path / "c" / "loop")  # a link loop under **
    found = match_files(str(tmp_path / "c" / "**" / "*.jsonl"), "data.sources[0].path")
    assert [rel for _, rel in found] == ["a.jsonl"]


def test_nothing_matches(tmp_path):
    with pytest.raises(UserError, match=r"^data.sources\[0\].path: no file matches"):
        match_files(str(tmp_path / "*.jsonl"), "data.sources[0].path")
