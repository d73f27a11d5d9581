# Helpers shared by every rule: the validated config, the build plan, and the functions
# that map an artifact key to its inputs, settings and lineage.
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The jobs import lmbuild as an installed package (pip install -e .); the parse does too,
# and finds this checkout first.
sys.path.insert(0, workflow.basedir)

from lmbuild.build import layers
from lmbuild.build.config import validate
from lmbuild.build.filestate import StateCache
from lmbuild.build.graph import Plan
from lmbuild.build.stages import CHAIN, FINAL, STAGES
from lmbuild.errors import UserError
from lmbuild.store.artifact import is_complete
from lmbuild.store.tracking import settings as tracking_settings

# Build metadata of this working directory: the file-hash cache (lmbuild/build/filestate.py) and
# one job spec per artifact, which is all a job reads besides its input artifacts.
META = ".snakemake/lmbuild"
SPECS = f"{META}/specs"

try:
    # The config's layers (lmbuild/build/layers.py): lmbuild's defaults < a preset < the
    # --configfile files in order < --config. The demo's config.yaml is the config file only
    # when none is given, so a user's config never inherits the demo's choices.
    _layers = layers.load(
        workflow.config_settings.configfiles,
        workflow.config_settings.config,
        demo=os.path.join(workflow.basedir, layers.DEMO),
    )
    _validated = validate(_layers.config, source="config")
    config.clear()
    config.update(_validated)
    _state = StateCache(f"{META}/file-hashes.json")
    # Every artifact of the build: each stage of the table for the base and each variant, the
    # cost plan and the sweep report included (lmbuild/build/graph.py).
    PLAN = Plan(config, state=_state)
    _state.save()
    # Tracking goes into the training and evaluation specs only, beside (not in) the settings.
    PLAN.write_specs(SPECS, tracking_settings(config))
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
    """The artifact of `stage` at the wildcard key is complete (lmbuild.store.artifact.is_complete)."""
    return is_complete(Path(f"{ART}/{stage}/{wc.key}"))


def unless_built(stage, inputs):
    """An input function of a `stage` rule that asks for nothing once the stage's artifact is
    complete. Its key already covers its inputs, and a complete artifact is never rebuilt:
    without inputs, Snakemake cannot plan it again because an upstream artifact is (re)built
    ("Input files updated by another job"), deleted or copied with new modification times.
    """
    return lambda wc: {} if built(stage, wc) else inputs(wc)


def stage_inputs(stage):
    """Input function: {input name: path} for the artifact at the wildcard key."""
    return unless_built(
        stage, lambda wc: {n: a.path for n, a in artifact(stage, wc).inputs.items()}
    )


def stage_spec(stage):
    """params.spec: the job spec's path, the one setting each job gets from Snakemake. It changes
    exactly when the key does, so Snakemake's params trigger can never disagree with the keys.
    """
    return lambda wc: f"{SPECS}/{stage}/{artifact(stage, wc).key}.json"


def stage_script(stage):
    """params.script: the entry script's name (scripts/<name>.py); a stage's own, or an
    encoder's (lmbuild.build.stages.Stage.encoder_script). Its code is in the key, so it agrees
    with it.
    """
    return lambda wc: artifact(stage, wc).script


def sweep_target(wc):
    if "sweep_report" not in PLAN.artifacts:
        # One line and a non-zero exit, as a config error at parse time (a WorkflowError here
        # would come wrapped in Snakemake's InputFunctionException and a traceback).
        print(
            "error: config: sweep: no runs (set sweep.grid or sweep.random)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    return PLAN.path("sweep_report")
