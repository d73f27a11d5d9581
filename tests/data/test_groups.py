"""Raw's fan-out plan: units per source, groups of files_per_job, shards spread over the jobs."""

from pathlib import Path

from lmbuild.data.groups import layout, shard_count, unit_count

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


def test_groups_pack_units_across_sources():
    groups = layout(settings([{"type": "jsonl", "path": FILES}, {"type": "embedded"}], shards=4, files_per_job=2))
    assert [g.items for g in groups] == [((0, 0, 2),), ((0, 2, 4),), ((0, 4, 5), (1, 0, 1))]
    # 4 shards over 3 jobs: 2, 1, 1, numbered globally.
    assert [(g.first_shard, g.shards) for g in groups] == [(0, 2), (2, 1), (3, 1)]


def test_shard_count_is_at_least_one_per_job():
    one = settings([{"type": "embedded"}], shards=4)
    assert (len(layout(one)), shard_count(one)) == (1, 4)  # the default run: one job, 4 shards
    many = settings([{"type": "jsonl", "path": FILES}], shards=2, files_per_job=1)
    assert (len(layout(many)), shard_count(many)) == (5, 5)
