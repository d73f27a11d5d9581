"""How stage ``raw`` fans out: which input files each part reads, and which shards it writes.

A *unit* is what one job can read on its own: one file of a local source (jsonl, parquet,
text, html), one data file of a Hugging Face dataset (the dataset's own shards, as
``datasets`` lists them), or a whole source that cannot be split: ``embedded``, ``synthetic``, and any
source with ``max_docs`` (its first N documents belong to the whole source, not to a file).

Grouping rule (stable under appends): each source is cut on its own, its units (files in name
order) taken ``data.files_per_job`` at a time; groups are numbered source by source in config
order. A group never mixes sources, so a source added at the end of ``data.sources`` is groups
of its own and re-keys nothing of the others. A file that sorts after a source's last file
joins its last, *open* group (or starts a new one when that group is full): only that group
changes. An edited file re-keys only its own group. A file that sorts into the middle of a
source, or one removed, shifts the files of every group after it in that source (they re-key).

Shards: every group writes ``data.shards`` shards (document k of its stream to its k mod n-th),
numbered globally: group g has shards ``g * data.shards`` onward, so appended groups never
renumber earlier ones. With one group this is the layout of a single ingest (document k to
shard k mod ``data.shards``), and ``cleaned`` runs one job per shard.

A part's key is its own units (:func:`part_settings`: the source's settings with only the part's
files, by content), ``data.shards`` and raw's code, never its position (lmbuild.build.stages).
A part writes its shards under local names (``shard-00000`` ...); the gather links them under
their global names. A document's id and text do not depend on the grouping
(tests/data/test_ingest.py checks).

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
    source: int  # index in data.sources
    start: int  # first unit of the source
    end: int  # one past its last unit
    first_shard: int
    shards: int

    @property
    def items(self) -> tuple[tuple[int, int, int], ...]:
        """(source index, first unit, end unit): the group's one run of units."""
        return ((self.source, self.start, self.end),)


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
    """The raw stage's parts: each one's units and shards (:class:`Group`), in order."""
    per_job, n = int(settings["files_per_job"]), int(settings["shards"])
    out: list[Group] = []
    for i, src in enumerate(settings["sources"]):
        units = unit_count(src, i)
        for start in range(0, units, per_job):
            g = len(out)
            out.append(Group(g, i, start, min(units, start + per_job), g * n, n))
    return out


def part_settings(settings: dict, group: Group) -> dict:
    """What a part reads, as its key covers it: its source with only its own files (key settings:
    ``{"pattern", "files"}`` sliced), its units and ``data.shards``. No source index: a part
    keeps its key wherever its source sits in ``data.sources``."""
    src = dict(settings["sources"][group.source])
    path = src.get("path")
    if isinstance(path, dict) and "files" in path and not whole(src):
        src["path"] = {**path, "files": path["files"][group.start : group.end]}
    return {"source": src, "units": [group.start, group.end], "shards": group.shards}


def shard_name(i: int) -> str:
    """The file of the artifact's shard ``i`` (raw's, and every data stage's after it); a part's
    own shards use the same names numbered from 0."""
    return f"shard-{i:05d}.parquet"


def shard_count(settings: dict) -> int:
    """Shards of the raw artifact (one ``cleaned`` job each)."""
    groups = layout(settings)
    return groups[-1].first_shard + groups[-1].shards if groups else 0
