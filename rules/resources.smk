# Resources of a stage's jobs, from config `resources` (docs/cluster.md). None of this enters a
# key. Included before the stage rules, which call these helpers in `threads:` and `resources:`.


def res(stage, name, fallback):
    """A resource of `stage` from config `resources`, else `resources.default`, else fallback."""
    per = config["resources"]
    for section in (per.get(stage, {}), per.get("default", {})):
        if section.get(name) is not None:
            return section[name]
    return fallback


def gpus(stage):
    """GPUs per job of `stage`: resources.<stage>.gpu, always 0 for a CPU-only stage
    (lmbuild.build.stages.Stage.gpu; the schema gives the others no GPU keys). `synthetic`: the
    raw parts of synthetic sources (rule build_synthetic_part), which may have one."""
    return res(stage, "gpu", 0) if stage == "synthetic" or STAGES[stage].gpu else 0


def cpus_per_gpu(stage, fallback):
    return res(stage, "cpus_per_gpu", None) or res(stage, "threads", fallback)


def stage_threads(stage, fallback):
    """A job's CPU threads: `threads`, or gpu * cpus_per_gpu when it has GPUs."""
    n = gpus(stage)
    return n * cpus_per_gpu(stage, fallback) if n else res(stage, "threads", fallback)


def gpu_model(stage):
    """The GPU type to ask for; "" (any) without one, and always "" without GPUs, since the
    SLURM plugin turns a model with gpu=0 into --gpus=<model>:0."""
    return (res(stage, "gpu_model", None) or "") if gpus(stage) else ""


def nodes(stage):
    """Nodes per job of `stage` (resources.<stage>.nodes; only training has the key)."""
    return res(stage, "nodes", 1)


def job_gpus(stage):
    """The `gpu` resource (sbatch --gpus, a count for the whole job): 0 on more than one node,
    where GPUs are asked per node through `gres` instead."""
    return gpus(stage) if nodes(stage) == 1 else 0


def job_gpu_model(stage):
    """gpu_model for the --gpus flag: "" on more than one node (the model goes into gres)."""
    return gpu_model(stage) if nodes(stage) == 1 else ""


def gres(stage):
    """sbatch --gres (per node) for a multi-node job with GPUs: gpu:<model>:<gpu>, else ""."""
    if nodes(stage) == 1 or not gpus(stage):
        return ""
    model = res(stage, "gpu_model", None)
    return f"gpu:{model}:{gpus(stage)}" if model else f"gpu:{gpus(stage)}"
