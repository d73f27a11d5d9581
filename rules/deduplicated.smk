# Deduplication (exact or MinHash) and decontamination as a map-reduce over hash buckets:
# B map jobs (a slice of the cleaned shards each) -> B reduce jobs (a bucket of hash keys
# each) -> one gather job that writes the artifact. B = data.dedup.buckets, known at parse time.
# The map and reduce outputs are temp(): Snakemake removes them once the artifact is built.
# Code: scripts/dedup_{map,bucket}.py and scripts/deduplicated.py -> lmbuild.data.deduplicated


rule dedup_map:
    input:
        unpack(stage_inputs("deduplicated")),
    output:
        temp(directory(part_path("deduplicated", "{key}", "map-{part}"))),
    log:
        "logs/deduplicated/{key}/map-{part}.log",
    wildcard_constraints:
        part="[0-9]{3}",
    group:
        "dedup_map"
    conda:
        "../envs/data.yaml"
    threads: res("deduplicated", "threads", 2)
    resources:
        mem_mb=res("deduplicated", "mem_mb", 4000),
        runtime=res("deduplicated", "runtime", 30),
        parallel_parts=1,
    params:
        stage=lambda wc: f"deduplicated.map-{wc.part}",
        part=lambda wc: int(wc.part),
        key=lambda wc: wc.key,
        spec=stage_spec("deduplicated"),
    script:
        "../scripts/dedup_map.py"


rule dedup_bucket:
    input:
        unpack(unless_built("deduplicated", dedup_maps)),
    output:
        temp(directory(part_path("deduplicated", "{key}", "bucket-{bucket}"))),
    log:
        "logs/deduplicated/{key}/bucket-{bucket}.log",
    wildcard_constraints:
        bucket="[0-9]{3}",
    group:
        "dedup_bucket"
    conda:
        "../envs/data.yaml"
    threads: res("deduplicated", "threads", 2)
    resources:
        mem_mb=res("deduplicated", "mem_mb", 4000),
        runtime=res("deduplicated", "runtime", 30),
        parallel_parts=1,
    params:
        stage=lambda wc: f"deduplicated.bucket-{wc.bucket}",
        bucket=lambda wc: int(wc.bucket),
        key=lambda wc: wc.key,
        spec=stage_spec("deduplicated"),
    script:
        "../scripts/dedup_bucket.py"


rule build_deduplicated:
    input:
        unpack(stage_inputs("deduplicated")),
        unpack(unless_built("deduplicated", dedup_maps)),
        unpack(unless_built("deduplicated", dedup_reduces)),
    output:
        directory(f"{ART}/deduplicated/{{key}}"),
    log:
        "logs/deduplicated/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: res("deduplicated", "threads", 2)
    resources:
        mem_mb=res("deduplicated", "mem_mb", 4000),
        runtime=res("deduplicated", "runtime", 30),
    params:
        stage="deduplicated",
        key=lambda wc: wc.key,
        spec=stage_spec("deduplicated"),
    script:
        "../scripts/deduplicated.py"
