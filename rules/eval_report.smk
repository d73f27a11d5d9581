# lm-eval held-out perplexity (+ configured tasks), sample generations: report.json (the page is
# the report stage, rules/report.smk).
# An encoder's checkpoint: masked-token accuracy and pseudo-perplexity instead (lmbuild.evaluation.masked).
# Code: scripts/eval_report.py -> lmbuild.evaluation.eval_report.build; with an encoder among the
# checkpoints, scripts/eval_report_masked.py (the same build, handed lmbuild.evaluation.masked)


rule build_eval_report:
    input:
        unpack(stage_inputs("eval_report")),
    output:
        directory(f"{ART}/eval_report/{{key}}"),
    log:
        "logs/eval_report/{key}.log",
    conda:
        "../envs/train.yaml"
    threads: stage_threads("eval_report", 2)
    resources:
        mem_mb=res("eval_report", "mem_mb", 8000),
        runtime=res("eval_report", "runtime", 60),
        # With gpu > 0 the SLURM plugin submits --gpus=<gpu_model>:<gpu> --cpus-per-gpu=<cpus_per_gpu>.
        gpu=gpus("eval_report"),
        gpu_model=gpu_model("eval_report"),
        cpus_per_gpu=cpus_per_gpu("eval_report", 2),
    params:
        stage="eval_report",
        key=lambda wc: wc.key,
        spec=stage_spec("eval_report"),
        # scripts/eval_report.py, or eval_report_masked.py with an encoder among the checkpoints.
        script=stage_script("eval_report"),
    script:
        "../scripts/{params.script}.py"
