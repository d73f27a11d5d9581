# The report page over eval_report's report.json: its own cheap step, so a change of the page
# (lmbuild/evaluation/report.py, lmbuild/evaluation/templates/report.html.j2) re-renders in seconds and evaluates nothing.
# Code: scripts/report.py -> lmbuild.evaluation.report.build


rule build_report:
    input:
        unpack(stage_inputs("report")),
    output:
        # `snakemake --report report.zip` includes the page (it is self-contained).
        report(
            directory(f"{ART}/report/{{key}}"),
            htmlindex="report.html",
            caption="report.rst",
            category="Evaluation",
        ),
    log:
        "logs/report/{key}.log",
    conda:
        "../envs/train.yaml"
    threads: stage_threads("report", 1)
    resources:
        mem_mb=res("report", "mem_mb", 2000),
        runtime=res("report", "runtime", 10),
    params:
        stage="report",
        key=lambda wc: wc.key,
        spec=stage_spec("report"),
    script:
        "../scripts/report.py"
