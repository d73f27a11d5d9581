"""match_files: glob's matches on an ordinary tree, but no symlink loop followed and no file
twice; compression recognised by content."""

import bz2
import glob
import gzip
import lzma
import os

import pytest

from lmbuild.files import compression_of, match_files, open_binary
from lmbuild.plan import source_fingerprint
from lmbuild.config import validate


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for f in ["a.jsonl", "b.txt", "s/c.jsonl", "s/t/d.jsonl", ".h/e.jsonl", "s/.f.jsonl", "u[1]/g.jsonl", "s/t/u/x.jsonl"]:
        os.makedirs(os.path.dirname(f) or ".", exist_ok=True)
        open(f, "w").write("x")
    return tmp_path


PATTERNS = ["*.jsonl", "**/*.jsonl", "s/**/*.jsonl", "s/**", "**", "*/**/*.jsonl", "s/**/t/*.jsonl", "**/t/**/*.jsonl", "u[[]1]/**/*.jsonl", "a.jsonl", "s/*/d.jsonl", "none/**/*.jsonl"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_same_matches_as_glob_without_symlinks(tree, pattern):
    assert match_files(pattern) == sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
    absolute = str(tree / pattern)
    assert match_files(absolute) == sorted(f for f in glob.glob(absolute, recursive=True) if os.path.isfile(f))


def test_symlink_loops_are_walked_once(tree):
    os.symlink("..", "s/t/up")  # a loop: s/t/up/t/up/...
    assert len(glob.glob("**/*.jsonl", recursive=True)) > 40  # Python's glob: ~40 laps
    os.symlink(str(tree / "s"), "s/again")  # a second (absolute) link: glob would take hours
    os.symlink("c.jsonl", "s/link.jsonl")  # a linked file beside its target
    assert match_files("**/*.jsonl") == ["a.jsonl", "s/c.jsonl", "s/t/d.jsonl", "s/t/u/x.jsonl", "u[1]/g.jsonl"]
    os.mkdir("other")
    open("other/o.jsonl", "w").write("x")
    os.symlink("../other", "s/out")  # a link out of the tree is followed
    assert "s/out/o.jsonl" in match_files("s/**/*.jsonl")


def test_source_fingerprint_lists_each_file_once(tree):
    os.symlink("..", "s/t/up")
    cfg = validate({"data": {"sources": [{"type": "jsonl", "path": "s/**/*.jsonl"}]}})
    assert [f[0] for f in source_fingerprint(cfg)[0]] == ["s/c.jsonl", "s/t/d.jsonl", "s/t/u/x.jsonl"]


@pytest.mark.parametrize("kind, compress", [("gzip", gzip.compress), ("bz2", bz2.compress), ("xz", lzma.compress), (None, lambda b: b)])
def test_compression_by_content_not_name(tmp_path, kind, compress):
    path = tmp_path / "x.jsonl"
    path.write_bytes(compress(b'{"text": "BZh91AY"}\n'))
    assert compression_of(str(path)) == kind
    with open_binary(str(path)) as fh:
        assert fh.read() == b'{"text": "BZh91AY"}\n'
    path.write_bytes(b"BZh9 is how a bz2 file starts")  # but not a bz2 file
    assert compression_of(str(path)) is None
