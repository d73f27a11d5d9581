"""The deduplicated stage's output shards (lmbuild.data.survivors): rows dropped by position, and
shards whose survivors did not change linked from an earlier build instead of rewritten."""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmbuild.build.config import validate
from lmbuild.data import deduplicated as dedup, survivors
from lmbuild.store.artifact import file_entries
from lmbuild.store.runner import StageContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_runs import write_cleaned  # noqa: E402

SETTINGS = validate({"data": {"dedup": {"method": "exact", "buckets": 2, "memory_limit": "512MB"}}})["data"]["dedup"]


def test_survivor_rows_across_batches_and_row_groups(tmp_path, monkeypatch):
    """The gather drops rows by position: right across record batches and row groups."""
    monkeypatch.setattr(survivors, "WRITE_ROWS", 7)
    ids = [f"d{i:03d}" for i in range(100)]
    table = pa.table({"id": ids, "text": [f"text {i}" for i in range(100)]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=30)  # groups of 30, batches of 7
    drop = np.array(sorted(random.Random(3).sample(range(100), 37)), np.int64)
    n = survivors.write_survivors(tmp_path / "in.parquet", drop, tmp_path / "out.parquet")
    out = pq.read_table(tmp_path / "out.parquet")
    assert n == 63 and out.schema == table.schema
    assert out["id"].to_pylist() == [x for i, x in enumerate(ids) if i not in set(drop.tolist())]
    assert survivors.write_survivors(tmp_path / "in.parquet", np.array([], np.int64), tmp_path / "all.parquet") == 100


def docs(prefix: str, n: int) -> list[tuple[str, str]]:
    return [(f"{prefix}:{i:03d}", f"document {prefix} {i} " + "words " * (i % 7)) for i in range(n)]


A = docs("a", 40) + [("a:900", "a repeated text, kept once")] + [("a:901", "a repeated text, kept once")]
B = docs("b", 30)


def cleaned(store: Path, key: str, shards) -> Path:
    """A complete cleaned artifact in a store: its shards and a manifest with their hashes."""
    (store / "cleaned").mkdir(parents=True, exist_ok=True)
    folder = write_cleaned(store / "cleaned" / key, shards)
    (folder / "manifest.json").write_text(json.dumps({"stage": "cleaned", "key": key, "files": file_entries(folder)}))
    return folder


def build(tmp_path: Path, store: Path | None, inp: Path, name: str, settings=SETTINGS) -> tuple[dict, Path]:
    out, work = tmp_path / name, tmp_path / f"{name}-work"
    out.mkdir()
    work.mkdir()
    ctx = StageContext("deduplicated", name, settings, {"cleaned": inp}, out, work, 2, lineage={"code_hash": "code"}, store=store)
    return dedup.build(ctx), out


def test_unchanged_survivors_are_linked_not_rewritten(tmp_path):
    store = tmp_path / "store"
    first, out1 = build(tmp_path, store, cleaned(store, "k1", [A, B]), "first")
    assert first["shards_reused"] == 0 and first["documents_out"] == len(A) + len(B) - 1
    # One more shard with new documents only: both earlier shards keep their survivors.
    c = docs("c", 25)
    grown, out2 = build(tmp_path, store, cleaned(store, "k2", [A, B, c]), "grown")
    assert grown["shards_reused"] == 2 and grown["documents_out"] == first["documents_out"] + 25
    for name in ("shard-00000.parquet", "shard-00001.parquet"):
        assert (out2 / name).stat().st_ino == (out1 / name).stat().st_ino  # the same file, linked
    # The same bytes as a build that writes everything (no store).
    fresh, out3 = build(tmp_path, None, cleaned(tmp_path / "other", "k2", [A, B, c]), "fresh")
    assert "shards_reused" not in fresh
    assert sorted(p.name for p in out3.iterdir()) == sorted(p.name for p in out2.iterdir())
    for p in out3.glob("shard-*.parquet"):
        assert p.read_bytes() == (out2 / p.name).read_bytes(), p.name

    # A new shard that repeats a document of B with a smaller id: B loses it and is written again.
    d = [("a:000b", B[3][1])]
    changed, out4 = build(tmp_path, store, cleaned(store, "k3", [A, B, d]), "changed")
    assert changed["shards_reused"] == 1 and changed["documents_out"] == first["documents_out"]
    kept = pq.read_table(out4 / "shard-00001.parquet")["id"].to_pylist()
    assert B[3][0] not in kept and len(kept) == len(B) - 1
    assert (out4 / "shard-00000.parquet").stat().st_ino == (out1 / "shard-00000.parquet").stat().st_ino

    # A source before them grew: the same shards under new numbers are still linked.
    moved, out5 = build(tmp_path, store, cleaned(store, "k4", [docs("z", 5), A, B]), "moved")
    assert moved["shards_reused"] == 2
    assert (out5 / "shard-00001.parquet").stat().st_ino == (out1 / "shard-00000.parquet").stat().st_ino
    assert (out5 / "shard-00002.parquet").stat().st_ino == (out1 / "shard-00001.parquet").stat().st_ino


def test_edits_that_depend_on_the_whole_corpus_write_every_shard(tmp_path):
    store = tmp_path / "store"
    paragraphs = validate({"data": {"dedup": {"method": "exact", "buckets": 2, "memory_limit": "512MB", "paragraphs": True}}})["data"]["dedup"]
    inp = cleaned(store, "k1", [A, B])
    counts, _ = build(tmp_path, store, inp, "p1", paragraphs)
    assert "shards_reused" not in counts and not (store / "_parts").exists()
