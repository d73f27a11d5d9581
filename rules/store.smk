# The shared store and recovery (lmbuild/store.py), then garbage collection (lmbuild/gc.py).
# At parse time, in the snakemake process that plans (not in job processes): settle what a
# hard-killed earlier run left in .snakemake (stale lock, incomplete markers), then, when this
# command builds, hold the build lock of every planned artifact not complete yet, so that a
# second checkout building the same keys into the same store waits and then reuses them.
from lmbuild import store as _store
from lmbuild.plan import stable_cache_keys

# Every artifact this config and its variants reach, and the cost plan's.
REACHABLE = sorted(
    {(a.stage, a.key, a.path) for a in PLAN.all_artifacts()}
    | {("plan", COST_PLAN.key, COST_PLAN.path)}
    | ({("sweep_report", SWEEP.key, SWEEP.path)} if SWEEP is not None else set())
)

# What gc keeps: those, and the stable-phase caches (lmbuild.train) its wsd runs continue from.
GC_KEEPS = [f"{s}/{k}" for s, k, _ in REACHABLE] + [
    f"_stable/{k}" for k in stable_cache_keys(PLAN)
]

if workflow.is_main_process:
    for _line in _store.recover(ART):
        print(f"lmbuild: recovered: {_line}", file=sys.stderr)
    if _store.builds(sys.argv):
        _store.claim(ART, REACHABLE)


# `snakemake gc` lists what no artifact of this config or its variants needs (dry run);
# `snakemake gc_remove` removes it.
rule gc:
    log:
        "logs/gc.log",
    conda:
        "../envs/data.yaml"
    params:
        root=ART,
        reachable=GC_KEEPS,
        stages=[*STAGES, "plan", "sweep_report"],
        delete=False,
    script:
        "../scripts/gc.py"


use rule gc as gc_remove with:
    params:
        root=ART,
        reachable=GC_KEEPS,
        stages=[*STAGES, "plan", "sweep_report"],
        delete=True,


# `snakemake verify`: every built artifact of this config and its variants against its
# manifest, file sizes and SHA-256 (a stage checks only sizes before it reads).
rule verify:
    log:
        "logs/verify.log",
    conda:
        "../envs/data.yaml"
    params:
        artifacts=[p for _, _, p in REACHABLE],
    script:
        "../scripts/verify.py"
