"""Training under torchrun: the launch commands (one node, or one torchrun per SLURM node
through srun) and the job spec that the launcher writes and each worker reads.

Each worker runs ``python -m lmbuild.training.trained_checkpoint <spec>`` (:data:`WORKER`),
which hands its ``train`` to :func:`worker`.

What this module does not do: train (it imports no training code), or start processes outside
torchrun and srun; multi-node runs need SLURM.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)

WORKER = "lmbuild.training.trained_checkpoint"  # the module each torchrun worker runs


def torchrun_argv(nproc: int, spec: Path) -> list[str]:
    """The launch command as an argv list (no shell, nothing from config in a command string)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(nproc)}", "-m", WORKER, str(spec)]


def slurm_hosts() -> list[str]:
    """This SLURM job's hosts, first one first (``scontrol show hostnames $SLURM_JOB_NODELIST``)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    if not nodelist or not os.environ.get("SLURM_JOB_ID"):
        raise UserError("resources.trained_checkpoint.nodes > 1 needs a SLURM job (no SLURM_JOB_NODELIST here): run with --profile profiles/slurm")
    return subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True).stdout.split()


def rendezvous_port(job_id: str) -> int:
    """The c10d port on the first node: one per SLURM job id, so that two jobs sharing a node differ."""
    return 29500 + int(job_id) % 10000


def srun_torchrun_argv(nnodes: int, nproc: int, spec: Path, *, host: str, port: int, job_id: str, srun_nodes: int | None = None) -> list[str]:
    """One torchrun agent per node through srun (an argv list; config never reaches a shell).

    ``--overlap``: the job's own step (the SLURM plugin runs the job under ``srun -n1``) holds
    the first node's CPUs. ``srun_nodes`` < ``nnodes`` puts several agents on one node (tests)."""
    srun_nodes = nnodes if srun_nodes is None else srun_nodes
    srun = ["srun", "--overlap", f"--nodes={int(srun_nodes)}", f"--ntasks={int(nnodes)}", f"--ntasks-per-node={-(-int(nnodes) // int(srun_nodes))}", "--kill-on-bad-exit=1"]
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={int(nnodes)}", f"--nproc_per_node={int(nproc)}",
        "--rdzv_backend=c10d", f"--rdzv_endpoint={host}:{int(port)}", f"--rdzv_id=lmbuild-{int(job_id)}",
    ]
    return [*srun, *torchrun, "-m", WORKER, str(spec)]


def launch(ctx: StageContext, nproc: int, nodes: int = 1, *, srun_nodes: int | None = None) -> dict:
    """Run :func:`lmbuild.training.trained_checkpoint.train` under torchrun with ``nproc`` processes per node; return rank 0's counts.

    On ``nodes`` > 1 (a SLURM job on that many nodes), one torchrun per node through srun."""
    spec = ctx.work / "launch.json"
    result, error = ctx.work / "counts.json", ctx.work / "error.txt"
    for stale in (result, error):
        stale.unlink(missing_ok=True)
    spec.write_text(json.dumps({
        "settings": ctx.settings, "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out": str(ctx.out), "work": str(ctx.work),
        "threads": max(1, ctx.threads // nproc), "counts": str(result), "error": str(error),
        "store": str(ctx.store) if ctx.store else None, "lineage": ctx.lineage,
    }))
    if nodes > 1:
        hosts, job_id = slurm_hosts(), os.environ["SLURM_JOB_ID"]
        if srun_nodes is None and len(hosts) != nodes:
            raise UserError(f"resources.trained_checkpoint.nodes is {nodes} but SLURM gave this job {len(hosts)} node(s): {' '.join(hosts)}")
        argv = srun_torchrun_argv(nodes, nproc, spec, host=hosts[0], port=rendezvous_port(job_id), job_id=job_id, srun_nodes=srun_nodes)
    else:
        argv = torchrun_argv(nproc, spec)
    log.info("launching %s", argv)
    rc = subprocess.run(argv, check=False).returncode
    if error.exists():
        raise UserError(error.read_text().strip())
    if rc != 0 or not result.exists():
        raise RuntimeError(f"torchrun with {nproc} processes on {nodes} node(s) exited with status {rc}; the workers' tracebacks are in the job's log")
    return json.loads(result.read_text())


def worker(spec_path: str, train) -> int:
    """One torchrun worker: ``train`` (:func:`lmbuild.training.trained_checkpoint.train`) with the
    spec's arguments; rank 0 writes the counts, a UserError becomes one line in error.txt."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    spec = json.loads(Path(spec_path).read_text())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        counts = train(spec["settings"], {k: Path(v) for k, v in spec["inputs"].items()}, Path(spec["out"]), Path(spec["work"]), spec["threads"], world,
                       Path(spec["store"]) if spec.get("store") else None, spec.get("lineage"))
    except UserError as exc:
        Path(spec["error"]).write_text(f"{exc}\n")
        raise
    if counts is not None:
        Path(spec["counts"]).write_text(json.dumps(counts))
    # Join the process group's threads before the interpreter exits: left to static destructors,
    # a rank of a finished CPU run was once aborted ("terminate called without an active
    # exception", SIGABRT) after the artifact's counts were written, failing the job.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0
