# Targets for the config's variants (`variants:` in the config, lmbuild/build/variants.py):
#   snakemake --cores 2 small__trained_checkpoint   # one stage of variant `small`
#   snakemake --cores 2 variants                    # every variant's report (its last stage)
# Their artifacts are built by the same build_<stage> rules as the base's; the Snakefile makes
# the <variant>__<stage> target rules in the same loop as the base's <stage> ones.


rule variants:
    input:
        [p.path(FINAL) for p in PLAN.variants.values()],
    localrule: True
