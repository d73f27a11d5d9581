# lmbuild: LLM pretraining as one content-addressed build.
#   snakemake --cores 2                            # the embedded demo (config.yaml), target `all`
#   snakemake --cores 2 tokenizer                  # any stage by name
#   snakemake --cores 2 all --configfile my.yaml   # your own config (targets before --configfile)
# Every artifact lives at artifacts/<stage>/<key>/ (see lmbuild/build/graph.py). The config is
# layered (lmbuild/build/layers.py: defaults < preset < --configfile files < --config; config.yaml
# only when no --configfile is given) and validated against lmbuild/schemas/config.schema.yaml
# before anything runs (rules/common.smk).
from snakemake.utils import min_version

min_version("9.0")  # pyproject.toml: snakemake>=9,<10


include: "rules/common.smk"
include: "rules/resources.smk"
include: "rules/parts.smk"
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
include: "rules/export.smk"
include: "rules/plan.smk"
include: "rules/variants.smk"
include: "rules/sweep_report.smk"
include: "rules/store.smk"


localrules:
    all,
    build_plan,
    plan,
    gc,
    gc_remove,
    verify,
    push,


# The last stage and the trained model itself: a deleted model is rebuilt (at its key) even
# though the report built from it is still there.
rule all:
    default_target: True
    input:
        PLAN.path(FINAL),
        PLAN.path("trained_checkpoint"),


# One target rule per stage of the chain (`snakemake tokenizer`), and per stage of each variant
# (`snakemake small__tokenizer`); the build_<stage> rules of rules/<stage>.smk make the artifacts.
# The stages outside the chain have their own targets: `plan` and `sweep`.
for _prefix, _plan in [("", PLAN), *((f"{n}__", p) for n, p in PLAN.variants.items())]:
    for _stage in CHAIN:

        rule:
            name:
                f"{_prefix}{_stage}"
            input:
                _plan.path(_stage),
            localrule: True
