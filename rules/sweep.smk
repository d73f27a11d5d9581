# The sweep (`sweep:` in the config, lmbuild/sweep.py): its runs are variants, built by the
# same build_<stage> rules (each training a job of its own, one SLURM job each under the
# profile), and compared in one report:
#   snakemake --cores 2 sweep    # every run's eval_report and artifacts/sweep_report/<key>/
# Code: scripts/sweep_report.py -> lmbuild.sweep_report.build. SWEEP (the report's artifact) and
# its input functions are planned in rules/common.smk with the rest.
rule build_sweep_report:
    input:
        unpack(unless_built("sweep_report", sweep_report_inputs)),
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
