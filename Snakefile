# lmbuild: LLM pretraining as one content-addressed build.
#   snakemake --cores 2                 # the default target `all` = eval_report
#   snakemake --cores 2 tokenizer       # any stage by name
# Every artifact lives at artifacts/<stage>/<key>/ (see lmbuild/plan.py); the config is
# validated against lmbuild/config.schema.yaml before anything runs (rules/common.smk).


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/raw.smk"
include: "rules/quality_model.smk"
include: "rules/cleaned.smk"
include: "rules/deduplicated.smk"
include: "rules/tokenizer.smk"
include: "rules/shards.smk"
include: "rules/init_checkpoint.smk"
include: "rules/trained_checkpoint.smk"
include: "rules/eval_report.smk"
include: "rules/plan.smk"
include: "rules/variants.smk"
include: "rules/sweep.smk"
include: "rules/store.smk"


localrules:
    all,
    raw,
    quality_model,
    cleaned,
    deduplicated,
    tokenizer,
    shards,
    init_checkpoint,
    trained_checkpoint,
    eval_report,
    build_plan,
    plan,
    gc,
    gc_remove,
    verify,


rule all:
    default_target: True
    input:
        PLAN.path("eval_report"),


rule raw:
    input:
        PLAN.path("raw"),


rule quality_model:
    input:
        PLAN.path("quality_model"),


rule cleaned:
    input:
        PLAN.path("cleaned"),


rule deduplicated:
    input:
        PLAN.path("deduplicated"),


rule tokenizer:
    input:
        PLAN.path("tokenizer"),


rule shards:
    input:
        PLAN.path("shards"),


rule init_checkpoint:
    input:
        PLAN.path("init_checkpoint"),


rule trained_checkpoint:
    input:
        PLAN.path("trained_checkpoint"),


rule eval_report:
    input:
        PLAN.path("eval_report"),
