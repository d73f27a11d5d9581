# Normalise Unicode, drop by length, Gopher repetition and fastText language ID; count drops per reason.
# Code: scripts/cleaned.py -> lmbuild.data.clean.build


rule build_cleaned:
    input:
        unpack(stage_inputs("cleaned")),
    output:
        directory(f"{ART}/cleaned/{{key}}"),
    log:
        "logs/cleaned/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: res("cleaned", "threads", 2)
    resources:
        mem_mb=res("cleaned", "mem_mb", 2000),
        runtime=res("cleaned", "runtime", 30),
    params:
        stage="cleaned",
        key=lambda wc: wc.key,
        settings=stage_settings("cleaned"),
        lineage=stage_lineage("cleaned"),
    script:
        "../scripts/cleaned.py"
