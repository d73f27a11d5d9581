# The shared store and recovery (lmbuild/store/registry.py), then garbage collection (lmbuild/store/gc.py).
# At parse time, in the snakemake process that plans (not in job processes): settle what a
# hard-killed earlier run left in .snakemake (stale lock, incomplete markers), register the keys
# this config plans in the store (what gc in any checkout sharing it keeps), then, when this
# command builds, hold the build lock of every planned artifact not complete yet, so that a
# second checkout building the same keys into the same store waits and then reuses them.
# None of this enters a key.
import os

from lmbuild.build.graph import store_keeps
from lmbuild.store import registry as _store

# Every artifact this config and its variants reach: the chain's, the cost plan's and the sweep
# report's (what a build may make, so what it registers and, building, locks).
REACHABLE = sorted({(a.stage, a.key, a.path) for a in PLAN.all_artifacts()})

# What gc keeps: those, and what their builds reuse (a wsd run's stable-phase cache: Stage.keeps).
GC_KEEPS = [f"{s}/{k}" for s, k, _ in REACHABLE] + store_keeps(PLAN)

# What `verify` expects built: what the targets all, variants and sweep build; and what it checks
# when built: the cost plans (only `snakemake plan` builds one).
PLANNED = _store.planned(
    [(None, PLAN), *PLAN.variants.items()],
    FINAL,
    (
        [(PLAN.artifacts["sweep_report"], "sweep")]
        if "sweep_report" in PLAN.artifacts
        else []
    ),
)
OPTIONAL = sorted(
    {a.path for a in PLAN.all_artifacts() if not STAGES[a.stage].chain}
    - {a.path for a, _ in PLANNED}
)

# This checkout's registration in the store: its working directory and config files.
CHECKOUT = _store.checkout_id(os.getcwd(), _layers.files)

if workflow.is_main_process:
    for _line in _store.recover(ART):
        print(f"lmbuild: recovered: {_line}", file=sys.stderr)
    _building = _store.builds(sys.argv)
    try:
        _store.register(ART, os.getcwd(), _layers.files, GC_KEEPS, live=_building)
    except OSError as exc:
        if (
            _building
        ):  # a build cannot write the store either: one line, nothing has run
            print(
                f"error: {ART}: cannot register this build in the store: {exc}",
                file=sys.stderr,
            )
            sys.exit(1)
        print(
            f"lmbuild: could not register this config in {ART} ({exc}); gc elsewhere will not know it",
            file=sys.stderr,
        )
    if _building:
        _store.claim(ART, REACHABLE)


# `snakemake gc` lists what stays and what goes (dry run), each with why; `snakemake gc_remove`
# removes what goes. Which is which: config `gc:` (scope, retention_days, forget; set per
# call with --config gc='{scope: checkout}'), docs/design.md "Garbage collection".
rule gc:
    log:
        "logs/gc.log",
    conda:
        "../envs/data.yaml"
    params:
        root=ART,
        reachable=GC_KEEPS,
        stages=list(STAGES),
        checkout=CHECKOUT,
        policy=config["gc"],
        delete=False,
    script:
        "../scripts/gc.py"


use rule gc as gc_remove with:
    params:
        root=ART,
        reachable=GC_KEEPS,
        stages=list(STAGES),
        checkout=CHECKOUT,
        policy=config["gc"],
        delete=True,


# `snakemake verify`: every planned artifact of this config and its variants against its
# manifest, file sizes and SHA-256 (a stage checks only sizes before it reads); a missing one
# is an error too. The cost plan is checked when built (only `snakemake plan` builds it).
rule verify:
    log:
        "logs/verify.log",
    conda:
        "../envs/data.yaml"
    params:
        expected=[[a.path, target] for a, target in PLANNED],
        optional=OPTIONAL,
    script:
        "../scripts/verify.py"
