"""Source paths: a glob's root, names relative to it, files reached twice, glob's matches
without following a symlink loop, compression recognised by content."""

import bz2
import glob
import gzip
import lzma
import os

import pytest

from lmbuild.data.files import compression_of, glob_files, match_files, open_binary, pattern_root, relative_pattern
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


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for f in ["a.jsonl", "b.txt", "s/c.jsonl", "s/t/d.jsonl", ".h/e.jsonl", "s/.f.jsonl", "u[1]/g.jsonl", "s/t/u/x.jsonl"]:
        os.makedirs(os.path.dirname(f) or ".", exist_ok=True)
        open(f, "w").write("x")
    return tmp_path


PATTERNS = ["*.jsonl", "**/*.jsonl", "s/**/*.jsonl", "s/**", "**", "*/**/*.jsonl", "s/**/t/*.jsonl", "**/t/**/*.jsonl", "u[[]1]/**/*.jsonl", "a.jsonl", "s/*/d.jsonl", "none/**/*.jsonl", "s/**/"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_same_matches_as_glob_without_symlinks(tree, pattern):
    assert glob_files(pattern) == sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
    absolute = str(tree / pattern)
    assert glob_files(absolute) == sorted(f for f in glob.glob(absolute, recursive=True) if os.path.isfile(f))


def test_symlink_loops_are_walked_once(tree):
    os.symlink("..", "s/t/up")  # a loop: s/t/up/t/up/...
    assert len(glob.glob("**/*.jsonl", recursive=True)) > 40  # Python's glob: ~40 laps
    os.symlink(str(tree / "s"), "s/again")  # a second (absolute) link: glob would take hours
    os.symlink("c.jsonl", "s/link.jsonl")  # a linked file beside its target
    assert glob_files("**/*.jsonl") == ["a.jsonl", "s/c.jsonl", "s/t/d.jsonl", "s/t/u/x.jsonl", "u[1]/g.jsonl"]
    assert [rel for _, rel in match_files("s/**/*.jsonl", "data.sources[0].path")] == ["c.jsonl", "t/d.jsonl", "t/u/x.jsonl"]
    os.mkdir("other")
    open("other/o.jsonl", "w").write("x")
    os.symlink("../other", "s/out")  # a link out of the tree is followed
    assert "s/out/o.jsonl" in glob_files("s/**/*.jsonl")


@pytest.mark.parametrize("kind, compress", [("gzip", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress), (None, lambda b: b)])
def test_compression_by_content_not_name(tmp_path, kind, compress):
    path = tmp_path / "x.jsonl"
    path.write_bytes(compress(b'{"text": "BZh91AY"}\n'))
    assert compression_of(str(path)) == kind
    with open_binary(str(path)) as fh:
        assert fh.read() == b'{"text": "BZh91AY"}\n'
    path.write_bytes(b"BZh9 is how a bz2 file starts")  # but not a bz2 file
    assert compression_of(str(path)) is None
