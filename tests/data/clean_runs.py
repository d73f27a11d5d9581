"""Stage runs and inputs shared by the data-stage tests (test_clean, test_quality,
test_quality_model, test_lang, test_dedup, test_survivors): a stage's output and work folders,
cleaned shards written from (id, text) pairs, a raw and a cleaned run through
the stage functions (no Snakemake), their rows, prose cut into passages, a JSONL source.
Not a test module."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmbuild.build.config import validate
from lmbuild.data import cleaned as clean, raw as ingest
from lmbuild.store.runner import StageContext

DEFAULTS = validate({})["data"]["clean"]


def stage(tmp_path: Path, name: str) -> tuple[Path, Path]:
    out, work = tmp_path / name, tmp_path / f"{name}-work"
    out.mkdir()
    work.mkdir()
    return out, work


def make_raw(tmp_path: Path, sources, shards=2) -> Path:
    out, work = stage(tmp_path, "raw")
    ingest.build(StageContext("raw", "t", {"sources": sources, "shards": shards, "files_per_job": 8}, {}, out, work, 1))
    return out


def run_clean(tmp_path: Path, raw: Path, settings=None, threads=1, name="cleaned"):
    out, work = stage(tmp_path, name)
    ctx = StageContext("cleaned", "t", settings or DEFAULTS, {"raw": raw}, out, work, threads)
    return clean.build(ctx), out


def rows(out: Path) -> list[dict]:
    return [r for p in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist()]


def passages(text: str, size: int = 1200) -> list[str]:
    """``text`` cut at line ends into passages of about ``size`` characters."""
    out, cur = [], ""
    for line in text.splitlines(keepends=True):
        cur += line
        if len(cur) >= size:
            out.append(cur)
            cur = ""
    return out


def jsonl_source(path: Path, texts: list[str]) -> dict:
    """``texts`` written to ``path`` as JSON Lines: a data.sources entry."""
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return {"type": "jsonl", "path": str(path)}


def write_cleaned(folder: Path, shards: list[list[tuple[str, str]]]) -> Path:
    """A cleaned artifact's shards (no manifest), one per list of (id, text); the source is the
    id's prefix before ':'."""
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
