# Helpers shared by every rule: the validated config, the build plan, and the functions
# that map an artifact key to its inputs, settings and lineage.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The jobs import lmbuild as an installed package (pip install -e .); the parse does too,
# and finds this checkout first.
sys.path.insert(0, workflow.basedir)

from lmbuild import layers
from lmbuild.artifact import is_complete
from lmbuild.config import validate
from lmbuild.data.groups import layout as raw_layout, shard_count as raw_shard_count
from lmbuild.errors import UserError
from lmbuild.filestate import StateCache
from lmbuild.plan import (
    Plan,
    STAGES,
    cost_plan_artifact,
    sweep_report_artifact,
    write_spec,
)
from lmbuild.tracking import settings as tracking_settings
from lmbuild.stages import FINAL

# Build metadata of this working directory: the file-hash cache (lmbuild/filestate.py) and one
# job spec per artifact, which is all a job reads besides its input artifacts.
META = ".snakemake/lmbuild"
SPECS = f"{META}/specs"

try:
    # The config's layers (lmbuild/layers.py): lmbuild's defaults < a preset < the --configfile
    # files in order < --config. The demo's config.yaml is the config file only when none is
    # given, so a user's config never inherits the demo's choices.
    _layers = layers.load(
        workflow.config_settings.configfiles,
        workflow.config_settings.config,
        demo=os.path.join(workflow.basedir, layers.DEMO),
    )
    _validated = validate(_layers.config, source="config")
    config.clear()
    config.update(_validated)
    _state = StateCache(f"{META}/file-hashes.json")
    PLAN = Plan(config, state=_state)
    COST_PLAN = cost_plan_artifact(config)
    _state.save()
    # Tracking goes into the training and evaluation specs only, beside (not in) the settings.
    PLAN.write_specs(SPECS, tracking_settings(config))
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


def built(stage, wc):
    """The artifact of `stage` at the wildcard key is complete (lmbuild.artifact.is_complete)."""
    return is_complete(Path(f"{ART}/{stage}/{wc.key}"))


def unless_built(stage, inputs):
    """An input function of a `stage` rule that asks for nothing once the stage's artifact is
    complete. Its key already covers its inputs, and a complete artifact is never rebuilt:
    without inputs, Snakemake cannot plan it again because an upstream artifact is (re)built
    ("Input files updated by another job"), deleted or copied with new modification times.
    """
    return lambda wc: {} if built(stage, wc) else inputs(wc)


def stage_inputs(stage):
    """Input function: {input stage name: path} for the artifact at the wildcard key."""
    return unless_built(
        stage, lambda wc: {n: a.path for n, a in artifact(stage, wc).inputs.items()}
    )


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


def raw_parts(wc):
    """The raw gather's inputs: one part per group of input files (lmbuild.data.groups)."""
    n = len(raw_layout(artifact("raw", wc).settings))
    return {"parts": [f"{ART}/raw_parts/{wc.key}/{i:05d}" for i in range(n)]}


def cleaned_parts(wc):
    """The gather's inputs: the raw artifact and one part per raw shard (as the raw plan has them)."""
    a = artifact("cleaned", wc)
    n = raw_shard_count(a.inputs["raw"].settings)
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


def shards_parts(wc):
    """The shards gather's inputs: its input artifacts and one part per deduplicated shard
    (as many as raw shards: cleaning and dedup keep the shard names)."""
    a = artifact("shards", wc)
    n = raw_shard_count(
        a.inputs["deduplicated"].inputs["cleaned"].inputs["raw"].settings
    )
    return {
        **{name: i.path for name, i in a.inputs.items()},
        "parts": [f"{ART}/shards_parts/{wc.key}/{i:05d}" for i in range(n)],
    }


# The sweep's comparison report (rules/sweep.smk, lmbuild/sweep.py): None without a sweep.
SWEEP = sweep_report_artifact(PLAN)
if SWEEP is not None:
    write_spec(SPECS, "sweep_report", SWEEP.key, SWEEP.spec())


def sweep_report_inputs(wc):
    """The runs' artifacts of the planned sweep report (an error for any other key)."""
    if SWEEP is None or wc.key != SWEEP.key:
        raise WorkflowError(
            f"{ART}/sweep_report/{wc.key}: not the sweep report of the current config"
        )
    return {n: a.path for n, a in SWEEP.inputs.items()}


def sweep_target(wc):
    if SWEEP is None:
        # One line and a non-zero exit, as a config error at parse time (a WorkflowError here
        # would come wrapped in Snakemake's InputFunctionException and a traceback).
        print("error: config: sweep: no runs (set sweep.grid or sweep.random)", file=sys.stderr, flush=True)
        sys.exit(1)
    return SWEEP.path


def nodes(stage):
    """Nodes per job of `stage` (resources.<stage>.nodes; only training has the key)."""
    return res(stage, "nodes", 1)


def job_gpus(stage):
    """The `gpu` resource (sbatch --gpus, a count for the whole job): 0 on more than one node,
    where GPUs are asked per node through `gres` instead."""
    return gpus(stage) if nodes(stage) == 1 else 0


def job_gpu_model(stage):
    """gpu_model for the --gpus flag: "" on more than one node (the model goes into gres)."""
    return gpu_model(stage) if nodes(stage) == 1 else ""


def gres(stage):
    """sbatch --gres (per node) for a multi-node job with GPUs: gpu:<model>:<gpu>, else ""."""
    if nodes(stage) == 1 or not gpus(stage):
        return ""
    model = res(stage, "gpu_model", None)
    return f"gpu:{model}:{gpus(stage)}" if model else f"gpu:{gpus(stage)}"
