"""Raw's fan-out plan: units per source, groups of files_per_job per source, data.shards per part."""

from pathlib import Path

from lmbuild.build.keys import canonical
from lmbuild.data.groups import layout, part_settings, shard_count, unit_count

FILES = {"pattern": "*.jsonl", "files": [[f"f{i}.jsonl", "0" * 64] for i in range(5)]}


def settings(sources, shards=4, files_per_job=2):
    return {"sources": sources, "shards": shards, "files_per_job": files_per_job}


def test_units_of_each_source_type(tmp_path, monkeypatch):
    assert unit_count({"type": "jsonl", "path": FILES}, 0) == 5  # key settings: the hashed files
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        Path(f"g{i}.parquet").write_text("x")
    assert unit_count({"type": "parquet", "path": "g*.parquet"}, 0) == 3  # the job: the glob again
    assert unit_count({"type": "jsonl", "path": FILES, "max_docs": 10}, 0) == 1  # first N of the whole source
    assert unit_count({"type": "embedded"}, 0) == 1
    assert unit_count({"type": "hf", "path": "org/x", "data_files": 12}, 0) == 12
    assert unit_count({"type": "hf", "path": "org/x", "data_files": None}, 0) == 1  # hub off: one job


def test_groups_are_cut_per_source():
    groups = layout(settings([{"type": "jsonl", "path": FILES}, {"type": "embedded"}], shards=4, files_per_job=2))
    assert [g.items for g in groups] == [((0, 0, 2),), ((0, 2, 4),), ((0, 4, 5),), ((1, 0, 1),)]
    # data.shards shards per part, numbered globally: group g has shards 4g .. 4g+3.
    assert [(g.first_shard, g.shards) for g in groups] == [(0, 4), (4, 4), (8, 4), (12, 4)]


def test_shard_count_is_shards_per_part():
    one = settings([{"type": "embedded"}], shards=4)
    assert (len(layout(one)), shard_count(one)) == (1, 4)  # the default run: one job, 4 shards
    many = settings([{"type": "jsonl", "path": FILES}], shards=2, files_per_job=1)
    assert (len(layout(many)), shard_count(many)) == (5, 10)


def parts(sources, **kw):
    s = settings(sources, **kw)
    return [canonical(part_settings(s, g)) for g in layout(s)]


def files(n, edited=()):
    return {"pattern": "*.jsonl", "files": [[f"f{i}.jsonl", ("1" if i in edited else "0") * 64] for i in range(n)]}


def test_parts_are_stable_under_appends_edits_and_new_sources():
    """A part is named by its own files: an appended file changes only the open (last) group,
    an edited file only its own group, a new source adds groups and changes none."""
    base = parts([{"type": "jsonl", "path": files(5)}])
    appended = parts([{"type": "jsonl", "path": files(6)}])
    assert appended[:2] == base[:2] and appended[2] != base[2]  # f4's group now has f4, f5
    assert parts([{"type": "jsonl", "path": files(7)}])[:3] == appended  # a full group stays
    edited = parts([{"type": "jsonl", "path": files(5, edited={2})}])
    assert [a == b for a, b in zip(edited, base)] == [True, False, True]
    two = parts([{"type": "jsonl", "path": files(5)}, {"type": "jsonl", "path": files(2), "name": "b"}])
    assert two[:3] == base and len(two) == 4
    # Where the source sits is not in the part: moved behind another, its parts are the same.
    moved = parts([{"type": "jsonl", "path": files(2), "name": "b"}, {"type": "jsonl", "path": files(5)}])
    assert moved[1:] == base
