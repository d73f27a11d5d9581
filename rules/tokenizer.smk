# Train a byte-level BPE on the deduplicated text, or take an existing tokenizer.
# Code: scripts/tokenizer.py -> lmbuild.tokens.tokenizer.build


rule build_tokenizer:
    input:
        unpack(stage_inputs("tokenizer")),
    output:
        directory(f"{ART}/tokenizer/{{key}}"),
    log:
        "logs/tokenizer/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: res("tokenizer", "threads", 2)
    resources:
        mem_mb=res("tokenizer", "mem_mb", 4000),
        runtime=res("tokenizer", "runtime", 30),
    params:
        stage="tokenizer",
        key=lambda wc: wc.key,
        spec=stage_spec("tokenizer"),
    script:
        "../scripts/tokenizer.py"
