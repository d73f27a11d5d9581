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
from lmbuild.filestate import StateCache
from lmbuild.plan import Plan, STAGES, cost_plan_artifact, write_spec
from lmbuild.stages import FINAL

# Build metadata of this working directory: the file-hash cache (lmbuild/filestate.py) and one
# job spec per artifact, which is all a job reads besides its input artifacts.
META = ".snakemake/lmbuild"
SPECS = f"{META}/specs"

try:
    _validated = validate(config, source="config")
    config.clear()
    config.update(_validated)
    _state = StateCache(f"{META}/file-hashes.json")
    PLAN = Plan(config, state=_state)
    COST_PLAN = cost_plan_artifact(config)
    _state.save()
    PLAN.write_specs(SPECS)
    write_spec(SPECS, "plan", COST_PLAN.key, COST_PLAN.spec())
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


def stage_spec(stage):
    """params.spec: the job spec's path, the one setting each job gets from Snakemake. It changes
    exactly when the key does, so Snakemake's params trigger can never disagree with the keys.
    """
    return lambda wc: f"{SPECS}/{stage}/{artifact(stage, wc).key}.json"


def stage_script(stage):
    """params.script: the entry script's name (scripts/<name>.py); a stage's own, or another one
    for an encoder (lmbuild.stages.Stage.entry; only trained_checkpoint has one). Its code is in
    the key, so it agrees with it.
    """
    return lambda wc: artifact(stage, wc).script


def res(stage, name, fallback):
    """A resource of `stage` from config `resources`, else `resources.default`, else fallback."""
    per = config["resources"]
    for section in (per.get(stage, {}), per.get("default", {})):
        if section.get(name) is not None:
            return section[name]
    return fallback


# Only these stages may use GPUs; the schema gives the others no GPU keys.
GPU_STAGES = ("trained_checkpoint", "eval_report")


def gpus(stage):
    """GPUs per job of `stage`: resources.<stage>.gpu, always 0 for a CPU-only stage."""
    return res(stage, "gpu", 0) if stage in GPU_STAGES else 0


def cpus_per_gpu(stage, fallback):
    return res(stage, "cpus_per_gpu", None) or res(stage, "threads", fallback)


def stage_threads(stage, fallback):
    """A job's CPU threads: `threads`, or gpu * cpus_per_gpu when it has GPUs."""
    n = gpus(stage)
    return n * cpus_per_gpu(stage, fallback) if n else res(stage, "threads", fallback)


def gpu_model(stage):
    """The GPU type to ask for; "" (any) without one, and always "" without GPUs, since the
    SLURM plugin turns a model with gpu=0 into --gpus=<model>:0."""
    return (res(stage, "gpu_model", None) or "") if gpus(stage) else ""


def cleaned_parts(wc):
    """The gather's inputs: the raw artifact and one part per raw shard (count from config)."""
    a = artifact("cleaned", wc)
    n = a.inputs["raw"].settings["shards"]
    return {
        "raw": a.inputs["raw"].path,
        "parts": [f"{ART}/cleaned_parts/{wc.key}/{i:05d}" for i in range(n)],
    }


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
