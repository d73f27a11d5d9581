# Exact deduplication across all shards with one DuckDB query; the smallest id survives.
# Code: scripts/deduplicated.py -> lmbuild.data.dedup.build


rule build_deduplicated:
    input:
        unpack(stage_inputs("deduplicated")),
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
        settings=stage_settings("deduplicated"),
        lineage=stage_lineage("deduplicated"),
    script:
        "../scripts/deduplicated.py"
