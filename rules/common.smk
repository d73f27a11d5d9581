# Helpers shared by every rule: the validated config, the build plan, and the functions
# that map an artifact key to its inputs, settings and lineage.
import os
import sys

from snakemake.exceptions import WorkflowError

# The jobs import lmbuild as an installed package (pip install -e .); the parse does too,
# and finds this checkout first.
sys.path.insert(0, workflow.basedir)

from lmbuild.config import validate
from lmbuild.errors import UserError
from lmbuild.plan import Plan, STAGES

# Hub names fail at once instead of retrying for a minute; users with the hub set these to 0.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

try:
    _validated = validate(config, source="config")
    config.clear()
    config.update(_validated)
    PLAN = Plan(config)
except UserError as exc:
    # One line naming the key, a non-zero exit, and nothing has run.
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)

ART = config["artifacts"]


wildcard_constraints:
    key="[0-9a-f]{16}",


def artifact(stage, wildcards):
    """The planned artifact of `stage` at the key in the wildcards."""
    try:
        return PLAN.get(stage, wildcards.key)
    except UserError as exc:
        raise WorkflowError(str(exc)) from None


def stage_inputs(stage):
    """Input function: {input stage name: path} for the artifact at the wildcard key."""
    return lambda wc: {n: a.path for n, a in artifact(stage, wc).inputs.items()}


def stage_settings(stage):
    return lambda wc: artifact(stage, wc).settings


def stage_lineage(stage):
    return lambda wc: artifact(stage, wc).lineage()


def res(stage, name, fallback):
    """A resource of `stage` from config `resources`, else `resources.default`, else fallback."""
    per = config["resources"]
    for section in (per.get(stage, {}), per.get("default", {})):
        if section.get(name) is not None:
            return section[name]
    return fallback


# The deduplicated stage's map-reduce parts (rules/deduplicated.smk): one per hash bucket.
def dedup_buckets(wc):
    return range(artifact("deduplicated", wc).settings["buckets"])


def dedup_maps(wc):
    return {
        f"map_{p:03d}": f"{ART}/_parts/deduplicated/{wc.key}/map-{p:03d}"
        for p in dedup_buckets(wc)
    }


def dedup_reduces(wc):
    return {
        f"bucket_{c:03d}": f"{ART}/_parts/deduplicated/{wc.key}/bucket-{c:03d}"
        for c in dedup_buckets(wc)
    }
