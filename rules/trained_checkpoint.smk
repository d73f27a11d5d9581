# Train with the HF Trainer: AdamW, warmup + cosine or WSD, clipping, bf16 where supported, validation loss,
# resumable checkpoints in the work folder; torchrun (DDP/FSDP) when resources give it gpu > 1.
# Code: scripts/trained_checkpoint.py -> lmbuild.training.trained_checkpoint.build (an encoder: scripts/trained_checkpoint_masked.py
# -> lmbuild.training.trained_checkpoint_masked.build_train)


rule build_trained_checkpoint:
    input:
        unpack(stage_inputs("trained_checkpoint")),
    output:
        directory(f"{ART}/trained_checkpoint/{{key}}"),
    log:
        "logs/trained_checkpoint/{key}.log",
    conda:
        "../envs/train.yaml"
    threads: stage_threads("trained_checkpoint", 2)
    resources:
        mem_mb=res("trained_checkpoint", "mem_mb", 8000),
        runtime=res("trained_checkpoint", "runtime", 120),
        # With gpu > 0 the SLURM plugin submits --gpus=<gpu_model>:<gpu> --cpus-per-gpu=<cpus_per_gpu>;
        # with nodes > 1, --nodes=<nodes> --gres=gpu:<gpu_model>:<gpu> (per node) instead of --gpus,
        # and the job launches one torchrun per node through srun (lmbuild.training.launch.launch).
        gpu=job_gpus("trained_checkpoint"),
        gpu_model=job_gpu_model("trained_checkpoint"),
        gres=gres("trained_checkpoint"),
        gpus_per_node=gpus("trained_checkpoint"),
        nodes=nodes("trained_checkpoint"),
        cpus_per_gpu=cpus_per_gpu("trained_checkpoint", 2),
    params:
        stage="trained_checkpoint",
        key=lambda wc: wc.key,
        spec=stage_spec("trained_checkpoint"),
        # scripts/trained_checkpoint.py, or trained_checkpoint_masked.py for an encoder (Stage.encoder_script).
        script=stage_script("trained_checkpoint"),
    script:
        "../scripts/{params.script}.py"
