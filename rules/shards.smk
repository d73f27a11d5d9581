# Tokenize, append EOS, pack into seq_len blocks; hold out validation documents by id hash.
# Code: scripts/shards.py -> lmbuild.pack.build


rule build_shards:
    input:
        unpack(stage_inputs("shards")),
    output:
        directory(f"{ART}/shards/{{key}}"),
    log:
        "logs/shards/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: res("shards", "threads", 2)
    resources:
        mem_mb=res("shards", "mem_mb", 4000),
        runtime=res("shards", "runtime", 30),
    params:
        stage="shards",
        key=lambda wc: wc.key,
        spec=stage_spec("shards"),
    script:
        "../scripts/shards.py"
