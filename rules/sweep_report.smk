# The sweep (`sweep:` in the config, lmbuild/build/sweep.py): its runs are variants, built by the
# same build_<stage> rules (each training a job of its own, one SLURM job each under the
# profile), and compared in one report:
#   snakemake --cores 2 sweep    # every run's eval_report and artifacts/sweep_report/<key>/
# Code: scripts/sweep_report.py -> lmbuild.evaluation.sweep_report.build. A row of the stage table
# (planned once for the build, from every run's artifacts), outside the chain that `all` builds.


rule build_sweep_report:
    input:
        unpack(stage_inputs("sweep_report")),
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
        spec=stage_spec("sweep_report"),
    script:
        "../scripts/sweep_report.py"


rule sweep:
    input:
        sweep_target,
    localrule: True
