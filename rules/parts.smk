# The fan-out stages' parts: one job per part writes artifacts/_parts/<stage>/<key>/<part>
# (temp(): Snakemake removes it once the gather has linked it into the artifact; gc collects what
# a crash left, lmbuild/store/gc.py), and each gather's input function lists its parts. How many:
# known at parse time from the planned settings (lmbuild.data.groups, data.dedup.buckets).
from lmbuild.data.groups import layout as raw_layout, shard_count as raw_shard_count


def part_path(stage, key, part):
    """A fan-out job's output: artifacts/_parts/<stage>/<key>/<part> (one convention for every
    stage; gc collects parts of complete or dropped artifacts there)."""
    return f"{ART}/_parts/{stage}/{key}/{part}"


def raw_parts(wc):
    """The raw gather's inputs: one part per group of input files (lmbuild.data.groups)."""
    n = len(raw_layout(artifact("raw", wc).settings))
    return {"parts": [part_path("raw", wc.key, f"{i:05d}") for i in range(n)]}


def cleaned_parts(wc):
    """The gather's inputs: the raw artifact and one part per raw shard (as the raw plan has them)."""
    a = artifact("cleaned", wc)
    n = raw_shard_count(a.inputs["raw"].settings)
    return {
        "raw": a.inputs["raw"].path,
        "parts": [part_path("cleaned", wc.key, f"{i:05d}") for i in range(n)],
    }


# The deduplicated stage's map-reduce parts (rules/deduplicated.smk): one per hash bucket.
def dedup_buckets(wc):
    return range(artifact("deduplicated", wc).settings["buckets"])


def dedup_maps(wc):
    return {
        f"map_{p:03d}": part_path("deduplicated", wc.key, f"map-{p:03d}")
        for p in dedup_buckets(wc)
    }


def dedup_reduces(wc):
    return {
        f"bucket_{c:03d}": part_path("deduplicated", wc.key, f"bucket-{c:03d}")
        for c in dedup_buckets(wc)
    }


def shards_parts(wc):
    """The shards gather's inputs: its input artifacts and one part per deduplicated shard
    (as many as raw shards: cleaning and dedup keep the shard names)."""
    a = artifact("shards", wc)
    n = raw_shard_count(
        a.inputs["deduplicated"].inputs["cleaned"].inputs["raw"].settings
    )
    return {
        **{name: i.path for name, i in a.inputs.items()},
        "parts": [part_path("shards", wc.key, f"{i:05d}") for i in range(n)],
    }
