# The starting model (model.init): a seeded random Llama from model.*, or one made from
# model.source (pretrained, downscale, upscale; an input when it is a variant's artifact).
# Code: scripts/init_checkpoint.py -> lmbuild.models.init_checkpoint.build (lmbuild.models.surgery for a
# source); an encoder (model.objective masked): scripts/init_checkpoint_masked.py ->
# lmbuild.models.modernbert.build_init


rule build_init_checkpoint:
    input:
        unpack(stage_inputs("init_checkpoint")),
    output:
        directory(f"{ART}/init_checkpoint/{{key}}"),
    log:
        "logs/init_checkpoint/{key}.log",
    conda:
        "../envs/train.yaml"
    threads: res("init_checkpoint", "threads", 1)
    resources:
        mem_mb=res("init_checkpoint", "mem_mb", 2000),
        runtime=res("init_checkpoint", "runtime", 30),
    params:
        stage="init_checkpoint",
        key=lambda wc: wc.key,
        spec=stage_spec("init_checkpoint"),
        # scripts/init_checkpoint.py, or init_checkpoint_masked.py for an encoder (Stage.encoder_script).
        script=stage_script("init_checkpoint"),
    script:
        "../scripts/{params.script}.py"
