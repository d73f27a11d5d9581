"""How stage ``raw`` fans out: which input files each job reads, and which shards it writes.

A *unit* is what one job can read on its own: one file of a local source (jsonl, parquet,
text, html), one data file of a Hugging Face dataset (the dataset's own shards, as
``datasets`` lists them), or a whole source that cannot be split: ``embedded``, ``synthetic``, and any
source with ``max_docs`` (its first N documents belong to the whole source, not to a file).
Units are taken in config order (files in name order) and packed ``data.files_per_job`` to a
job, across sources, so many small sources make few jobs.

Shards: the artifact has ``max(data.shards, jobs)`` shards, numbered globally; job g writes a
contiguous run of them (``data.shards`` spread over the jobs, at least one each) and deals its
documents round robin over that run. With one job this is the layout of a single ingest
(document k to shard k mod ``data.shards``), and ``cleaned`` runs one job per shard.

Grouping is part of raw's key (``files_per_job`` is a raw setting): it decides which
documents share a shard, which ``cleaned``'s per-shard ``quality_top_fraction`` reads. A
document's id and text do not depend on it (tests/data/test_ingest.py checks).

The same function runs at parse time on key settings (a local path is ``{"pattern",
"files"}``, a hub dataset carries ``data_files``, its count that the plan looked up) and in
the job on the located settings (a local path is a glob again, matched the same way), so the
plan and the jobs agree on the groups. What this module does not do: read any file, or
balance groups by bytes (a job reads ``files_per_job`` files whatever their sizes).
"""

from __future__ import annotations

import dataclasses

from lmbuild.data.files import match_files


@dataclasses.dataclass(frozen=True)
class Group:
    index: int
    items: tuple[tuple[int, int, int], ...]  # (source index, first unit, end unit), in order
    first_shard: int
    shards: int


def whole(src: dict) -> bool:
    """A source that one job reads whole: embedded, synthetic (its teacher loaded once), capped
    by ``max_docs``, or a hub dataset whose data files the plan could not list (hub off)."""
    return src["type"] in ("embedded", "synthetic") or src.get("max_docs") is not None or (src["type"] == "hf" and not src.get("data_files"))


def unit_count(src: dict, index: int) -> int:
    """How many units ``data.sources[index]`` splits into (1 = read whole by one job)."""
    if whole(src):
        return 1
    if src["type"] == "hf":
        return src["data_files"]
    path = src["path"]
    if isinstance(path, dict):  # key settings: the files the plan hashed
        return len(path["files"])
    return len(match_files(path, f"data.sources[{index}].path"))


def layout(settings: dict) -> list[Group]:
    """The raw stage's jobs: each one's units and shards (:class:`Group`), in order."""
    per_job = int(settings["files_per_job"])
    units = [(i, u) for i, src in enumerate(settings["sources"]) for u in range(unit_count(src, i))]
    chunks = [units[j : j + per_job] for j in range(0, len(units), per_job)]
    jobs, wanted = len(chunks), int(settings["shards"])
    out, first = [], 0
    for g, chunk in enumerate(chunks):
        items: list[list[int]] = []
        for i, u in chunk:
            if items and items[-1][0] == i and items[-1][2] == u:
                items[-1][2] = u + 1
            else:
                items.append([i, u, u + 1])
        n = max(1, wanted // jobs + (g < wanted % jobs))
        out.append(Group(g, tuple(tuple(x) for x in items), first, n))
        first += n
    return out


def shard_name(i: int) -> str:
    """The file of the artifact's shard ``i`` (raw's, and every data stage's after it)."""
    return f"shard-{i:05d}.parquet"


def shard_count(settings: dict) -> int:
    """Shards of the raw artifact (one ``cleaned`` job each)."""
    groups = layout(settings)
    return groups[-1].first_shard + groups[-1].shards
