# Stage cleaned, fanned out: one job per raw shard (normalise Unicode; Gopher, C4, FineWeb rules
# for prose, StarCoder rules for code; language ID; PII redaction; drops counted per reason),
# then a gather job that links the parts into the artifact and writes its manifest.
# Code: scripts/cleaned_part.py -> lmbuild.data.cleaned.build_part; scripts/cleaned.py -> build
rule build_cleaned_part:
    input:
        unpack(part_inputs("cleaned")),
    output:
        # A store entry of its own, keyed by what it reads (rules/parts.smk): not temp().
        directory(keyed_part_path("cleaned")),
    log:
        "logs/cleaned_parts/{pkey}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=res("cleaned", "mem_mb", 2000),
        runtime=res("cleaned", "runtime", 30),
        parallel_parts=1,
    params:
        stage="cleaned_part",
        key=lambda wc: wc.pkey,
        spec=part_spec("cleaned"),
    script:
        "../scripts/cleaned_part.py"


rule build_cleaned:
    input:
        unpack(unless_built("cleaned", keyed_parts("cleaned"))),
    output:
        directory(f"{ART}/cleaned/{{key}}"),
    log:
        "logs/cleaned/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=res("cleaned", "runtime", 30),
    params:
        stage="cleaned",
        key=lambda wc: wc.key,
        spec=stage_spec("cleaned"),
    script:
        "../scripts/cleaned.py"
