"""Stage deduplicated: exact duplicates (after case and whitespace normalisation) removed,
the smallest id kept, output ordered by id."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmbuild.data import clean, dedup
from lmbuild.data.embedded import iter_python_stdlib
from lmbuild.errors import UserError
from lmbuild.runner import StageContext

SETTINGS = {"method": "exact", "memory_limit": "512MB"}


def real_code(n: int) -> list[str]:
    """n stdlib files of >= 500 characters, distinct after normalisation (the stdlib itself
    holds copies, such as empty and twin modules)."""
    texts: dict[str, str] = {}
    for _, text, _ in iter_python_stdlib():
        if len(text) >= 500:
            texts.setdefault(" ".join(text.lower().split()), text)
            if len(texts) == n:
                break
    return list(texts.values())


def write_cleaned(folder: Path, shards: list[list[tuple[str, str]]]) -> Path:
    folder.mkdir()
    for i, docs in enumerate(shards):
        table = pa.Table.from_pylist(
            [
                {"id": d, "text": t, "source": d.split(":")[0], "metadata": json.dumps({"kind": "prose"}), "lang": "en", "lang_score": 0.9}
                for d, t in docs
            ],
            schema=clean.SCHEMA,
        )
        pq.write_table(table, folder / f"shard-{i:05d}.parquet")
    return folder


def run(tmp_path: Path, cleaned: Path, name="dedup", settings=SETTINGS, threads=2):
    out, work = tmp_path / name, tmp_path / f"{name}-work"
    out.mkdir()
    work.mkdir()
    counts = dedup.build(StageContext("deduplicated", "t", settings, {"cleaned": cleaned}, out, work, threads))
    return counts, out


def read(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("shard-*.parquet")))


def test_duplicates_by_normalised_text(tmp_path):
    stdlib = real_code(30)
    shards = [
        [("b:1", "Hello  World\n"), ("a:9", stdlib[0]), ("c:1", "unique text")],
        [("a:2", "hello world"), ("z:0", " HELLO\tworld "), ("b:7", stdlib[0].replace("\n", "\r\n"))],
        [(f"s:{i:02d}", t) for i, t in enumerate(stdlib[1:])] + [("a:1", "Hello World!")],  # "!" differs
    ]
    counts, out = run(tmp_path, write_cleaned(tmp_path / "cleaned", shards))
    table = read(out)
    ids = table["id"].to_pylist()
    assert ids == sorted(ids)
    assert "a:2" in ids and not {"b:1", "z:0"} & set(ids)  # smallest id of the hello-world group
    assert "a:9" in ids and "b:7" not in ids  # CRLF copy of a real file
    assert {"a:1", "c:1"} <= set(ids)
    assert counts == {"documents_in": 36, "documents_out": 33, "duplicates_removed": 3, "duplicate_groups": 2, "shards": 1}
    assert table.schema.names == clean.SCHEMA.names and table.schema.field("lang_score").type == pa.float32()
    survivor = table.filter(pa.compute.equal(table["id"], "a:2")).to_pylist()[0]
    assert survivor["text"] == "hello world" and survivor["lang"] == "en"  # the row is kept whole


def test_deterministic_across_threads_and_shard_order(tmp_path):
    stdlib = real_code(60)
    docs = [(f"x:{i:03d}", t) for i, t in enumerate(stdlib)] + [(f"y:{i:03d}", t.upper()) for i, t in enumerate(stdlib[:20])]
    a = write_cleaned(tmp_path / "a", [docs[::2], docs[1::2]])
    b = write_cleaned(tmp_path / "b", [docs[1::2][::-1], docs[::2][::-1], []])
    ca, outa = run(tmp_path, a, "da", threads=1)
    cb, outb = run(tmp_path, b, "db", threads=2)
    assert ca == cb and ca["duplicates_removed"] == ca["duplicate_groups"] > 0
    assert read(outa).equals(read(outb))
    assert all(i.startswith("x:") for i in read(outa)["id"].to_pylist())


def test_bad_settings_and_input(tmp_path):
    cleaned = write_cleaned(tmp_path / "cleaned", [[("a:1", "text")]])
    with pytest.raises(UserError, match=r"^data\.dedup\.memory_limit: 'lots' rejected by DuckDB"):
        run(tmp_path, cleaned, settings={"method": "exact", "memory_limit": "lots"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no shard-\\*\\.parquet files"):
        run(tmp_path, tmp_path / "empty", name="d2")
