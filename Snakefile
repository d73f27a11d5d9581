# lmbuild: LLM pretraining as one content-addressed build.
#   snakemake --cores 2                 # the default target `all`: the last stage (lmbuild.stages.FINAL)
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
include: "rules/report.smk"
include: "rules/plan.smk"
include: "rules/variants.smk"
include: "rules/store.smk"


localrules:
    all,
    build_plan,
    plan,
    gc,
    gc_remove,
    verify,


rule all:
    default_target: True
    input:
        PLAN.path(FINAL),


# One target rule per stage of the table (`snakemake tokenizer`), and per stage of each variant
# (`snakemake small__tokenizer`); the build_<stage> rules of rules/<stage>.smk make the artifacts.
for _prefix, _plan in [("", PLAN), *((f"{n}__", p) for n, p in PLAN.variants.items())]:
    for _stage in STAGES:

        rule:
            name:
                f"{_prefix}{_stage}"
            input:
                _plan.path(_stage),
            localrule: True
