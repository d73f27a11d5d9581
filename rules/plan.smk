# `snakemake plan`: what the configured run will cost, from the config alone (no data, no
# training): artifacts/plan/<key>/plan.json and plan.txt, printed. Code: scripts/plan.py ->
# lmbuild.cost.build. Not a STAGES stage: nothing depends on it.
# COST_PLAN (lmbuild.plan.cost_plan_artifact) is planned in rules/common.smk with the rest.


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
        spec=f"{SPECS}/plan/{COST_PLAN.key}.json",
    script:
        "../scripts/plan.py"


rule plan:
    input:
        COST_PLAN.path,
    log:
        "logs/plan/print.log",
    conda:
        "../envs/train.yaml"
    shell:
        "cat {input}/plan.txt | tee {log}"
