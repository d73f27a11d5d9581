# Stage raw, fanned out: one job per group of input files (data.files_per_job files; a hub
# dataset by its own data files), each writing its run of Parquet shards (id, text, source,
# metadata), then a gather job that links the shards into the artifact, checks that ids are
# unique and writes the manifest. The groups are known at parse time (lmbuild.data.groups).
# Code: scripts/raw_part.py -> lmbuild.data.raw.build_part; scripts/raw.py -> build
rule build_raw_part:
    input:
        unpack(part_inputs("raw")),
    output:
        # A store entry of its own, keyed by what it reads (rules/parts.smk): not temp().
        directory(keyed_part_path("raw")),
    log:
        "logs/raw_parts/{pkey}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=res("raw", "mem_mb", 1000),
        runtime=res("raw", "runtime", 30),
        parallel_parts=1,
    params:
        stage="raw_part",
        key=lambda wc: wc.pkey,
        spec=part_spec("raw"),
    script:
        "../scripts/raw_part.py"


# A synthetic source's part (lmbuild.data.synthetic: a teacher model writes the documents): the
# same job, its own rule so that it can have a GPU (resources.synthetic) and a cluster profile
# never groups it with the file parts, which need none. Its keys are known at parse time.
use rule build_raw_part as build_synthetic_part with:
    wildcard_constraints:
        pkey=synthetic_part_keys(),
    threads: stage_threads("synthetic", 1)
    resources:
        mem_mb=res("synthetic", "mem_mb", 4000),
        runtime=res("synthetic", "runtime", 60),
        gpu=gpus("synthetic"),
        gpu_model=gpu_model("synthetic"),
        cpus_per_gpu=cpus_per_gpu("synthetic", 1),


ruleorder: build_synthetic_part > build_raw_part


rule build_raw:
    input:
        unpack(unless_built("raw", keyed_parts("raw"))),
    output:
        directory(f"{ART}/raw/{{key}}"),
    log:
        "logs/raw/{key}.log",
    conda:
        "../envs/data.yaml"
    threads: res("raw", "threads", 1)
    resources:
        mem_mb=1500,
        runtime=res("raw", "runtime", 30),
    params:
        stage="raw",
        key=lambda wc: wc.key,
        spec=stage_spec("raw"),
    script:
        "../scripts/raw.py"
