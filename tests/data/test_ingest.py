"""Stage raw: sources into round-robin Parquet shards of one schema; ids unique."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import vendored

from lmbuild.data import ingest
from lmbuild.errors import UserError
from lmbuild.runner import StageContext

EMBEDDED = [
    {"type": "embedded", "name": "shakespeare", "parts": ["shakespeare"], "max_docs": 6},
    {"type": "embedded", "name": "stdlib", "parts": ["python_stdlib"], "max_docs": 20},
]


def ctx_for(tmp_path: Path, sources, shards=3, name="raw") -> StageContext:
    out, work = tmp_path / name, tmp_path / f"{name}-work"
    out.mkdir()
    work.mkdir()
    return StageContext("raw", "test", {"sources": sources, "shards": shards}, {}, out, work, threads=2)


def read(out: Path) -> list[pa.Table]:
    return [pq.read_table(p) for p in sorted(out.glob("shard-*.parquet"))]


def test_embedded_and_jsonl_into_shards(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("notes.jsonl").write_text(
        json.dumps({"text": "def f():\n    return 1\n", "doc": "a"}) + "\n" + json.dumps({"text": "x = 2\n", "doc": "b"}) + "\n"
    )
    sources = EMBEDDED + [{"type": "jsonl", "path": "notes.jsonl", "id_field": "doc", "kind": "code", "name": "snippets"}]
    ctx = ctx_for(tmp_path, sources)
    counts = ingest.build(ctx)
    tables = read(ctx.out)
    assert [t.schema for t in tables] == [ingest.SCHEMA] * 3
    rows = [r for t in tables for r in t.to_pylist()]
    assert counts["documents"] == len(rows) == 28
    assert [s["documents"] for s in counts["shards"]] == [10, 9, 9]  # round robin
    assert [(s["name"], s["documents"]) for s in counts["sources"]] == [("shakespeare", 6), ("stdlib", 20), ("snippets", 2)]
    assert counts["bytes"] == sum(len(r["text"].encode()) for r in rows) == sum(s["bytes"] for s in counts["sources"])
    # Round robin by stream position: the first document of the stream leads shard 0, the second shard 1.
    assert tables[0]["id"][0].as_py() == "shakespeare:shakespeare/comedies/a-midsummer-night-s-dream.md:act-1"
    assert tables[1]["id"][0].as_py() == "shakespeare:shakespeare/comedies/a-midsummer-night-s-dream.md:act-2"
    by_id = {r["id"]: r for r in rows}
    assert json.loads(by_id["snippets:a"]["metadata"]) == {"kind": "code"}
    assert json.loads(by_id["stdlib:python_stdlib/__future__.py"]["metadata"]) == {"kind": "code", "path": "__future__.py"}
    assert json.loads(by_id["shakespeare:shakespeare/comedies/as-you-like-it.md:act-1"]["metadata"]) == {"kind": "prose"}
    assert {r["source"] for r in rows} == {"shakespeare", "stdlib", "snippets"}


def test_deterministic(tmp_path):
    a = ctx_for(tmp_path, EMBEDDED, name="a")
    b = ctx_for(tmp_path, EMBEDDED, name="b")
    ingest.build(a)
    ingest.build(b)
    assert [t.to_pylist() for t in read(a.out)] == [t.to_pylist() for t in read(b.out)]


def test_more_shards_than_documents(tmp_path):
    ctx = ctx_for(tmp_path, [{"type": "embedded", "parts": ["shakespeare"], "max_docs": 2}], shards=4)
    counts = ingest.build(ctx)
    assert [s["documents"] for s in counts["shards"]] == [1, 1, 0, 0]
    assert [t.num_rows for t in read(ctx.out)] == [1, 1, 0, 0]


def test_fortunes_keep_their_fields(tmp_path):
    path = str(vendored.path("fortunes_it.jsonl.gz"))
    ctx = ctx_for(tmp_path, [{"type": "jsonl", "path": path, "name": "it"}], shards=2)
    counts = ingest.build(ctx)
    assert counts["documents"] == 400
    meta = json.loads(read(ctx.out)[0]["metadata"][0].as_py())
    assert meta == {"kind": "prose", "lang": "it"}


def test_duplicate_ids_are_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.jsonl").write_text('{"text": "one", "id": 1}\n{"text": "two", "id": 1}\n')
    with pytest.raises(UserError, match=r"duplicate document id 'a:1' \(2 documents, from data\.sources\[0\] \(a\)\)"):
        ingest.build(ctx_for(tmp_path, [{"type": "jsonl", "path": "a.jsonl", "id_field": "id", "name": "a"}]))
    # Two entries reading the same file under one name collide too.
    same = {"type": "jsonl", "path": "a.jsonl", "name": "same"}
    with pytest.raises(UserError, match="duplicate document id 'same:a.jsonl:1'"):
        ingest.build(ctx_for(tmp_path, [same, same], name="raw2"))


def test_bad_input_stops_ingest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.jsonl").write_text('{"text": "ok"}\n{oops}\n')
    with pytest.raises(UserError, match=r"^bad\.jsonl:2: invalid JSON"):
        ingest.build(ctx_for(tmp_path, [{"type": "jsonl", "path": "bad.jsonl"}]))
    Path("surrogate.jsonl").write_text('{"text": "half a pair \\ud800"}\n')
    with pytest.raises(UserError, match=r"document 'jsonl:surrogate\.jsonl:surrogate\.jsonl:1': text is not valid Unicode"):
        ingest.build(ctx_for(tmp_path, [{"type": "jsonl", "path": "surrogate.jsonl"}], name="raw2"))
    Path("empty.jsonl").write_text("")
    with pytest.raises(UserError, match=r"^data\.sources\[1\] \(empty\.jsonl\): no documents$"):
        ingest.build(ctx_for(tmp_path, [EMBEDDED[0], {"type": "jsonl", "path": "empty.jsonl"}], name="raw3"))


def test_skip_mode_counts_in_the_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mixed.jsonl").write_text('{"text": "ok"}\n{oops}\n{"text": "half a pair \\ud800"}\n{"text": "fine"}\n')
    Path("empty.jsonl").write_text("")
    src = {"type": "jsonl", "path": "*.jsonl", "on_error": "skip"}
    counts = ingest.build(ctx_for(tmp_path, [src]))
    assert counts["documents"] == 2
    assert counts["skipped"] == {"empty_file": 1, "invalid_json": 1, "invalid_unicode": 1}
    assert counts["sources"][0]["skipped"] == counts["skipped"]
