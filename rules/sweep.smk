# The sweep (`sweep:` in the config, lmbuild/sweep.py): its runs are variants, built by the
# same build_<stage> rules (each training a job of its own, one SLURM job each under the
# profile), and compared in one report:
#   snakemake --cores 2 sweep    # every run's eval_report and artifacts/sweep_report/<key>/
# Code: scripts/sweep_report.py -> lmbuild.sweep_report.build
from lmbuild.plan import sweep_report_artifact

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
        raise WorkflowError("config: sweep: no runs (set sweep.grid or sweep.random)")
    return SWEEP.path


rule build_sweep_report:
    input:
        unpack(sweep_report_inputs),
    output:
        report(
            directory(f"{ART}/sweep_report/{{key}}"),
            htmlindex="report.html",
            category="Sweep",
        ),
    log:
        "logs/sweep_report/{key}.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        stage="sweep_report",
        key=lambda wc: wc.key,
        spec=lambda wc: f"{SPECS}/sweep_report/{wc.key}.json",
    script:
        "../scripts/sweep_report.py"


rule sweep:
    input:
        sweep_target,
    localrule: True
