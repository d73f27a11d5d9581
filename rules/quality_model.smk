# Train the fastText classifiers (DCLM's recipe): data.quality_model's, when
# data.clean.quality.enabled, and each of data.classifiers; cleaning scores prose with them.
# Code: scripts/quality_model.py -> lmbuild.data.quality_model.build


rule build_quality_model:
    input:
        unpack(stage_inputs("quality_model")),
    output:
        directory(f"{ART}/quality_model/{{key}}"),
    log:
        "logs/quality_model/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=res("quality_model", "mem_mb", 2000),
        runtime=res("quality_model", "runtime", 30),
    params:
        stage="quality_model",
        key=lambda wc: wc.key,
        spec=stage_spec("quality_model"),
    script:
        "../scripts/quality_model.py"
