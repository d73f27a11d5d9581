# Targets for the config's variants (`variants:` in the config, lmbuild/variants.py):
#   snakemake --cores 2 small__trained_checkpoint   # one stage of variant `small`
#   snakemake --cores 2 variants                    # every variant's report
# Their artifacts are built by the same build_<stage> rules as the base's.

for _name, _vplan in PLAN.variants.items():
    for _stage in STAGES:

        rule:
            name:
                f"{_name}__{_stage}"
            input:
                _vplan.path(_stage),
            localrule: True


rule variants:
    input:
        [p.path("report") for p in PLAN.variants.values()],
    localrule: True
