# `snakemake plan`: what the configured run will cost, from the config alone (no data, no
# training): artifacts/plan/<key>/plan.json and plan.txt, printed. Code: scripts/plan.py ->
# lmbuild.models.plan.build. A row of the stage table keyed like every other (its settings, its
# code set, no inputs); outside the chain that `all` builds: nothing depends on it, and building
# it builds nothing else.


rule build_plan:
    output:
        directory(f"{ART}/plan/{{key}}"),
    log:
        "logs/plan/{key}.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        stage="plan",
        key=lambda wc: wc.key,
        spec=stage_spec("plan"),
    script:
        "../scripts/plan.py"


rule plan:
    input:
        PLAN.path("plan"),
    log:
        "logs/plan/print.log",
    conda:
        "../envs/train.yaml"
    shell:
        "cat {input}/plan.txt | tee {log}"
