# Stage cleaned, fanned out: one job per raw shard (normalise Unicode; Gopher, C4, FineWeb rules
# for prose, StarCoder rules for code; language ID; PII redaction; drops counted per reason),
# then a gather job that links the parts into the artifact and writes its manifest.
# Code: scripts/cleaned_part.py -> lmbuild.data.cleaned.build_part; scripts/cleaned.py -> build
wildcard_constraints:
    part="[0-9]{5}",


rule build_cleaned_part:
    input:
        unpack(stage_inputs("cleaned")),
    output:
        # temp: the gather hard-links the files into the artifact, then the part goes.
        temp(directory(part_path("cleaned", "{key}", "{part}"))),
    log:
        "logs/cleaned_parts/{key}/{part}.log",
    # Parts are small jobs: on a cluster, --group-components build_cleaned_part=N submits N
    # per SLURM job (profiles/slurm, docs/cluster.md). Locally groups are ignored.
    group:
        "build_cleaned_part"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=res("cleaned", "mem_mb", 2000),
        runtime=res("cleaned", "runtime", 30),
        parallel_parts=1,
    params:
        stage="cleaned_part",
        key=lambda wc: f"{wc.key}/{wc.part}",
        part=lambda wc: int(wc.part),
        spec=stage_spec("cleaned"),
    script:
        "../scripts/cleaned_part.py"


rule build_cleaned:
    input:
        unpack(unless_built("cleaned", cleaned_parts)),
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
