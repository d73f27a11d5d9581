# The fan-out stages' parts. Parts of raw and cleaned are store entries of their own,
# artifacts/_parts/<stage>/<part key> (lmbuild.build.graph.Part, the row's `parts` hook): keyed by
# what they read, so a build of another stage key (one more input file, another source) reuses
# every part whose own files did not change. Not temp(): gc keeps the parts that complete
# artifacts list and collects the rest (lmbuild/store/gc.py). The other stages' parts
# (dedup buckets, shards parts) are per artifact key, artifacts/_parts/<stage>/<key>/<part>,
# temp(). How many: known at parse time from the planned settings.
# On a cluster the part rules are grouped by profiles/slurm (`groups:`, `group-components:`),
# not by a `group:` here, which costs every local dry run a walk upstream of each part.
from lmbuild.data.groups import shard_count as raw_shard_count


wildcard_constraints:
    pkey="[0-9a-f]{16}",


def part_path(stage, key, part):
    """A per-artifact fan-out job's output: artifacts/_parts/<stage>/<key>/<part> (gc collects
    parts of complete or dropped artifacts there)."""
    return f"{ART}/_parts/{stage}/{key}/{part}"


def keyed_part_path(stage):
    """A keyed part's output: artifacts/_parts/<stage>/<part key>."""
    return f"{ART}/_parts/{stage}/{{pkey}}"


def synthetic_part_keys():
    """A regex of the raw parts that a teacher writes (data.sources of type synthetic), for
    rule build_synthetic_part; one that matches nothing when there are none."""
    keys = sorted(
        p.key
        for p in PLAN.parts_of("raw")
        if p.settings["source"]["type"] == "synthetic"
    )
    return "|".join(keys) if keys else "(?!)"


def planned_part(stage, wc):
    try:
        return PLAN.part(stage, wc.pkey)
    except UserError as exc:
        raise WorkflowError(str(exc)) from None


def part_inputs(stage):
    """A keyed part's inputs (other parts, artifacts), or nothing once it is complete: like
    unless_built, a complete part is never replaced because an input was rebuilt."""

    def inputs(wc):
        if is_complete(Path(f"{ART}/_parts/{stage}/{wc.pkey}")):
            return {}
        return {n: i.path for n, i in planned_part(stage, wc).inputs.items()}

    return inputs


def part_spec(stage):
    """params.spec of a keyed part: .snakemake/lmbuild/specs/<stage>_part/<part key>.json."""
    return lambda wc: f"{SPECS}/{stage}_part/{planned_part(stage, wc).key}.json"


def keyed_parts(stage):
    """A gather's parts: the artifact's keyed parts, in order (with its other inputs)."""

    def inputs(wc):
        a = artifact(stage, wc)
        return {
            **{n: i.path for n, i in a.inputs.items()},
            "parts": [p.path for p in a.parts],
        }

    return inputs


# The deduplicated stage's reduce parts (rules/deduplicated.smk): one per hash bucket.
def dedup_buckets(wc):
    return range(artifact("deduplicated", wc).settings["buckets"])


def dedup_maps(wc):
    """The reduce's and the gather's maps: one keyed part per cleaned part, in order."""
    return {"maps": [p.path for p in artifact("deduplicated", wc).parts]}


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
