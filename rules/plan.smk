# `snakemake plan`: what the configured run will cost, from the config alone (no data, no
# training): artifacts/plan/<key>/plan.json and plan.txt, printed. Code: scripts/plan.py ->
# lmbuild.cost.build. Not a STAGES stage: nothing depends on it.
from lmbuild.cost import artifact as _cost_artifact

try:
    COST_PLAN = _cost_artifact(config)
except UserError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)


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
        settings=COST_PLAN["settings"],
        lineage=COST_PLAN["lineage"],
    script:
        "../scripts/plan.py"


rule plan:
    input:
        COST_PLAN["path"],
    log:
        "logs/plan/print.log",
    conda:
        "../envs/train.yaml"
    shell:
        "cat {input}/plan.txt | tee {log}"
