# Ingest the configured sources into Parquet shards (id, text, source, metadata).
# Code: scripts/raw.py -> lmbuild.data.ingest.build


rule build_raw:
    input:
        unpack(stage_inputs("raw")),
    output:
        directory(f"{ART}/raw/{{key}}"),
    log:
        "logs/raw/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: res("raw", "threads", 1)
    resources:
        mem_mb=res("raw", "mem_mb", 2000),
        runtime=res("raw", "runtime", 30),
    params:
        stage="raw",
        key=lambda wc: wc.key,
        spec=stage_spec("raw"),
    script:
        "../scripts/raw.py"
