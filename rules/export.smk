# The model shipped: `snakemake export` (and `<variant>__export`) builds artifacts/export/<key>/,
# the trained model's HF folder (or a kept step's, or the mean of the last kept steps), a GGUF
# file and a model card (README.md). Code: scripts/export.py -> lmbuild.ship.export.build.
# Outside the chain that `all` builds: a second copy of the weights and a GGUF are not needed to
# read the report, and building it builds nothing it does not read.
# `snakemake push` uploads the base's export to export.push.repo_id (lmbuild/ship/push.py): not an
# artifact, in no key; offline or without a repo id it says so in one line and uploads nothing.


rule build_export:
    input:
        unpack(stage_inputs("export")),
    output:
        directory(f"{ART}/export/{{key}}"),
    log:
        "logs/export/{key}.log",
    conda:
        "../envs/train.yaml"
    threads: stage_threads("export", 2)
    resources:
        mem_mb=res("export", "mem_mb", 8000),
        runtime=res("export", "runtime", 60),
    params:
        stage="export",
        key=lambda wc: wc.key,
        spec=stage_spec("export"),
    script:
        "../scripts/export.py"


for _prefix, _plan in [("", PLAN), *((f"{n}__", p) for n, p in PLAN.variants.items())]:

    rule:
        name:
            f"{_prefix}export"
        input:
            _plan.path("export"),
        localrule: True


rule push:
    input:
        PLAN.path("export"),
    log:
        "logs/export/push.log",
    conda:
        "../envs/train.yaml"
    params:
        push=config["export"]["push"],
    script:
        "../scripts/push.py"
