# Stage shards, fanned out: one job per deduplicated shard (tokenize, append EOS, pack into
# seq_len blocks per split and source; validation documents held out by id hash), then a
# gather job that links the token files into the artifact and writes its index.
# Code: scripts/shards_part.py -> lmbuild.tokens.shards.build_part; scripts/shards.py -> build
rule build_shards_part:
    input:
        unpack(stage_inputs("shards")),
    output:
        # temp: the gather hard-links the files into the artifact, then the part goes.
        temp(directory(part_path("shards", "{key}", "{part}"))),
    log:
        "logs/shards_parts/{key}/{part}.log",
    wildcard_constraints:
        part="[0-9]{5}",
    conda:
        "../envs/data.yaml"
    threads: res("shards", "threads", 1)
    resources:
        mem_mb=res("shards", "mem_mb", 2000),
        runtime=res("shards", "runtime", 30),
        parallel_parts=1,
    params:
        stage="shards_part",
        key=lambda wc: f"{wc.key}/{wc.part}",
        part=lambda wc: int(wc.part),
        spec=stage_spec("shards"),
    script:
        "../scripts/shards_part.py"


rule build_shards:
    input:
        unpack(unless_built("shards", shards_parts)),
    output:
        directory(f"{ART}/shards/{{key}}"),
    log:
        "logs/shards/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=res("shards", "runtime", 30),
    params:
        stage="shards",
        key=lambda wc: wc.key,
        spec=stage_spec("shards"),
    script:
        "../scripts/shards.py"
