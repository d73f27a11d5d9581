# Deduplication (exact or MinHash) and decontamination as a map-reduce over hash buckets:
# one map job per cleaned part (its hash keys in B buckets; a keyed part that later builds
# reuse) -> B reduce jobs (a bucket of hash keys each: the global step, rerun with every new
# key) -> one gather job that writes the artifact. B = data.dedup.buckets, known at parse time.
# The reduce outputs are temp(): Snakemake removes them once the artifact is built.
# Code: scripts/dedup_{map,bucket}.py and scripts/deduplicated.py -> lmbuild.data.deduplicated


rule dedup_map:
    input:
        unpack(part_inputs("deduplicated")),
    output:
        # One per cleaned part, keyed by it and the dedup settings (rules/parts.smk): a store
        # entry that a build of another dedup key (one more input file) reuses; not temp().
        directory(keyed_part_path("deduplicated")),
    log:
        "logs/deduplicated/maps/{pkey}.log",
    conda:
        "../envs/data.yaml"
    threads: res("deduplicated", "threads", 2)
    resources:
        mem_mb=res("deduplicated", "mem_mb", 4000),
        runtime=res("deduplicated", "runtime", 30),
        parallel_parts=1,
    params:
        stage="deduplicated.map",
        key=lambda wc: wc.pkey,
        spec=part_spec("deduplicated"),
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
