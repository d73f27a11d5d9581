"""Paragraph dedup (lmbuild.data.paragraphs) through stage deduplicated's build: planted boilerplate."""

import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from lmbuild.data import paragraphs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dedup import by_id, read, run, settings, write_cleaned  # noqa: E402

FOOTER = "Copyright 2026 Example Corp. All rights reserved. Cookies help us deliver our services."


def _letters(n: int) -> str:
    return "".join(chr(97 + int(d)) for d in str(n))  # no digits: MinHash folds digit runs


def body(i: int, words: int = 60) -> str:
    return " ".join(f"w{_letters(i)}x{_letters(j)}" for j in range(words))


def corpus() -> list[list[tuple[str, str]]]:
    """3 shards; every document ends with FOOTER; doc b:1 also repeats a paragraph of a:0, and
    doc c:0 is a short page whose only distinct text is under 50 words."""
    a = [(f"a:{i}", f"{body(i)}\n\n{FOOTER}\n") for i in range(4)]
    b = [(f"b:{i}", f"{body(10 + i)}\n  \n{FOOTER}") for i in range(3)]
    b[1] = ("b:1", f"{body(11)}\n\n{body(0)}\n\n\n{FOOTER}")
    c = [("c:0", f"short page\n\n{FOOTER}"), ("c:1", f"{FOOTER}\n\n{body(20)}\n\n{FOOTER}")]
    return [a, b, c]


def test_split_and_remove_keep_the_separators():
    text = "one\n\ntwo\n \t\nthree\n\n\nfour"
    paras, seps = paragraphs.split(text)
    assert paras == ["one", "two", "three", "four"] and seps == ["\n\n", "\n \t\n", "\n\n\n"]
    assert paragraphs.remove(text, {1}) == "two\n \t\nthree\n\n\nfour"
    assert paragraphs.remove(text, {2, 4}) == "one\n \t\nthree"
    assert paragraphs.remove(text, set()) == text


def test_duckdb_splits_as_python_does():
    """The SQL split (RE2) and the Python rewrite (re) must number paragraphs alike."""
    texts = ["a\n\nb", "a\n \n\n b\n", "\n\nx\n\ny\n\n", "no break", "", "a\r\n\r\nb", "é\n\t\nü\n"]
    con = duckdb.connect()
    got = [r[0] for r in con.execute(f"SELECT len(string_split_regex(t, '{paragraphs.SPLIT}')) FROM unnest(?) AS u(t)", [texts]).fetchall()]
    assert got == [len(paragraphs.split(t)[0]) for t in texts]


@pytest.mark.parametrize("method", ["exact", "minhash"])
def test_boilerplate_removed_from_all_but_the_first(tmp_path, method):
    cleaned = write_cleaned(tmp_path / "cleaned", corpus())
    counts, out = run(tmp_path, cleaned, settings=settings(method=method, paragraphs=True))
    docs = {r["id"]: r["text"] for r in by_id(read(out))}
    assert docs["a:0"] == f"{body(0)}\n\n{FOOTER}\n"  # the first occurrence stays
    for i in (1, 2, 3):
        assert docs[f"a:{i}"] == body(i)
    assert docs["b:0"] == body(10)
    assert docs["b:1"] == body(11)  # a:0's paragraph and the footer both seen before
    assert docs["c:1"] == body(20)  # the footer twice: both copies go
    assert "c:0" not in docs  # "short page" is under 50 words
    dropped = {r["id"]: r["reason"] for r in pq.read_table(out / "dropped.parquet").to_pylist()}
    assert dropped == {"c:0": "paragraphs:too_short"}
    assert counts["dropped"] == {"paragraphs:too_short": 1}
    assert counts["paragraphs"] == {
        "paragraphs": 3 + 4 + 3, "edited": 3 + 3 + 2, "too_short": 1,
        "bytes": counts["paragraphs"]["bytes"],
    }
    assert counts["documents_out"] == 8


def test_whole_document_duplicates_go_first(tmp_path):
    """A paragraph whose first copy is in a dropped duplicate stays in the survivor."""
    text = f"{body(1)}\n\n{body(2)}"
    cleaned = write_cleaned(tmp_path / "cleaned", [[("b:0", "x " + body(3))], [("a:0", text), ("z:0", text)]])
    counts, out = run(tmp_path, cleaned, settings=settings(paragraphs=True))
    docs = {r["id"]: r["text"] for r in by_id(read(out))}
    assert docs == {"a:0": text, "b:0": "x " + body(3)}
    assert counts["dropped"] == {"exact_duplicate": 1}


def test_deterministic_across_buckets_and_threads(tmp_path):
    cleaned = write_cleaned(tmp_path / "cleaned", corpus())
    outs = []
    for name, buckets, threads in (("one", 1, 1), ("three", 3, 2)):
        _, out = run(tmp_path, cleaned, name=name, settings=settings(paragraphs=True, buckets=buckets), threads=threads)
        outs.append([(p.name, pq.read_table(p).to_pylist()) for p in sorted(out.glob("shard-*.parquet"))])
    assert outs[0] == outs[1]


def test_off_by_default_and_min_words(tmp_path):
    cleaned = write_cleaned(tmp_path / "cleaned", corpus())
    counts, out = run(tmp_path, cleaned, name="off")
    assert "paragraphs" not in counts and counts["documents_out"] == 9
    counts, out = run(tmp_path, cleaned, name="zero", settings=settings(paragraphs=True, edited_min_words=0))
    assert counts["documents_out"] == 9
    assert {r["id"]: r["text"] for r in by_id(read(out))}["c:0"] == "short page"
