"""What several test modules share: the checkout's root, the end-to-end helpers (tests/smoke.yaml
with overrides, a `snakemake` subprocess, its dry-run job table, a copy of the checkout) and the
SLURM cluster fixture. Test modules import these (`from conftest import ...`); no test module
imports another. Not here: a module's own fixtures and helpers, which stay in that module, and
the helper modules beside this file (vendored.py, lm_corpus.py, bad_files.py, masked_inputs.py,
data/clean_runs.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lmbuild  # noqa: F401 (sets the hub defaults before a test module imports transformers)

ROOT = Path(__file__).resolve().parent.parent


def _bench_common():
    """bench/common.py (standard library only), loaded under its own name: the benches' helpers."""
    spec = importlib.util.spec_from_file_location("lmbuild_bench_common", ROOT / "bench" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# {rule: jobs} from the first 'Job stats' table Snakemake printed: the parser the benches use.
job_stats = _bench_common().job_stats
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# The stages tests/smoke.yaml builds, in order; DATA_STAGES are those before the model.
SMOKE_STAGES = ["raw", "cleaned", "deduplicated", "tokenizer", "shards", "init_checkpoint", "trained_checkpoint", "eval_report", "report"]
DATA_STAGES = SMOKE_STAGES[:5]


# The modules of a minute or more, longest first: the end-to-end ones, then those of the fast
# lane. test_workflow builds the session's smoke demo (smoke_built) that later ones copy;
# test_slurm, mostly waiting on SLURM, runs beside it and test_faults, which use the CPUs.
SLOWEST = ["test_workflow.py", "test_slurm.py", "test_faults.py", "test_workflow_masked.py", "test_store.py",
           "test_train.py", "test_evaluate.py"]


def pytest_collection_modifyitems(config, items):
    """End-to-end modules first, then the others, SLOWEST first of each. Under pytest-xdist's
    `--dist loadfile --no-loadscope-reorder` (pyproject's addopts) a worker takes whole modules
    in this order, so the minutes-long builds start at once instead of running alone at the end
    while the other worker idles (xdist's own order: the modules with the most tests first)."""

    def rank(item) -> tuple:
        name = item.path.name
        return (item.get_closest_marker("e2e") is None, SLOWEST.index(name) if name in SLOWEST else len(SLOWEST))

    items.sort(key=rank)


# --- the workflow end to end -----------------------------------------------------------------


def smoke_config(**overrides) -> dict:
    """tests/smoke.yaml with dotted overrides: smoke_config(**{"train.max_steps": 20})."""
    cfg = yaml.safe_load((ROOT / "tests" / "smoke.yaml").read_text())
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = cfg
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def snakemake(workdir: Path, cfg: dict, *args: str, timeout: int = 900, snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    """`snakemake --cores 2 <args>` in ``workdir`` with ``cfg`` as its config.yaml."""
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    # Targets go before --configfile: after it Snakemake would read them as more config files.
    cmd = [str(SNAKEMAKE), "--snakefile", str(snakefile), "--directory", str(workdir), "--cores", "2", *args, "--configfile", str(cfg_path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def jobs_of_dry_run(proc: subprocess.CompletedProcess) -> dict:
    """{rule: count} from the 'Job stats' table of `snakemake -n`; {} for 'Nothing to be done'."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return {} if "Nothing to be done" in out else job_stats(out)


def artifact_dirs(workdir: Path, stage: str) -> list[Path]:
    """The complete and incomplete artifact folders of a stage (not its .tmp-* folders)."""
    return sorted(p for p in (workdir / "artifacts" / stage).glob("*") if not p.name.startswith("."))


@pytest.fixture(scope="session")
def smoke_built(tmp_path_factory, request) -> Path:
    """tests/smoke.yaml built once per test session (`snakemake --cores 2`, every stage): the
    first module to ask builds it, under a file lock that other pytest-xdist workers wait on.
    Its users copy it (copy_built) and change only their copy."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # an xdist worker: the session's folder is its parent, shared by all
        root = root.parent
    work, failed = root / "smoke-built", root / "smoke-built.failed"
    with FileLock(str(root / "smoke-built.lock")):
        assert not failed.exists(), failed.read_text()
        if not (root / "smoke-built.ok").exists():
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            proc = snakemake(work, smoke_config())
            if proc.returncode != 0:
                failed.write_text(f"the smoke build failed:\n{(proc.stdout + proc.stderr)[-5000:]}")
                raise AssertionError(failed.read_text())
            (root / "smoke-built.ok").touch()
    return work


def copy_built(built: Path, dest: Path, stages: list[str] | None = None) -> Path:
    """A copy of the built working directory ``built`` (artifacts, logs, .snakemake) in ``dest``,
    modification times kept: Snakemake finds it built, as in the original (tests/workflow/test_reruns.py
    attacks copies). ``stages``: only these stages' artifacts, as if fewer targets were built."""

    def skipped(folder: str, names: list[str]) -> set[str]:
        if stages is None or Path(folder) != built / "artifacts":
            return set()
        return {n for n in names if not n.startswith(("_", ".")) and n not in stages}

    shutil.copytree(built, dest, symlinks=True, ignore=skipped, dirs_exist_ok=True)
    return dest


def copy_checkout(clone: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files, copied to ``clone``."""
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, clone / rel)
    return clone


def reordered(obj):
    """Every mapping with its keys in reverse order (lists keep theirs)."""
    if isinstance(obj, dict):
        return {k: reordered(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [reordered(v) for v in obj]
    return obj


# --- a SLURM cluster -------------------------------------------------------------------------

SLURM_START = Path(os.environ.get("LMBUILD_SLURM_START", ROOT.parent / "shared" / "tools" / "slurm" / "start_slurm.sh"))


def sh(*cmd: str, timeout: int = 30) -> str:
    """A command's stdout; raises on a non-zero exit."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout


@pytest.fixture(scope="session")
def cluster() -> dict:
    """A running SLURM cluster with sacct and a GPU GRES: {partition, account}; skips if none.

    The cluster is a single node on this machine, started by ../shared/tools/slurm/start_slurm.sh
    (or $LMBUILD_SLURM_START) where it is not running and this runs as root."""
    ready = shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
    if not ready:
        if os.geteuid() != 0:
            pytest.skip("SLURM is not running and starting it needs root")
        if not SLURM_START.is_file():
            pytest.skip(f"SLURM is not running and its start script is missing: {SLURM_START} (set LMBUILD_SLURM_START)")
        if not shutil.which("apt-get") and not shutil.which("slurmctld"):
            pytest.skip("SLURM is not installed and there is no apt-get to install it")
    # Idempotent; also (re)starts a stopped slurmdbd, which sacct needs. No `srun hostname` at
    # its end: it waits for a free CPU behind the other worker's SLURM jobs; the tests run jobs.
    env = {**os.environ, "SLURM_ACCOUNTING": "dbd", "SLURM_FAKE_GPUS": "1", "SLURM_FAKE_GPU_TYPE": "h100", "SLURM_SMOKE_TEST": "0"}
    if SLURM_START.is_file() and os.geteuid() == 0:
        proc = subprocess.run(["bash", str(SLURM_START)], capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode != 0:
            pytest.skip(f"could not start SLURM with {SLURM_START}: {proc.stderr.strip().splitlines()[-1:]}")
    try:
        gres = sh("sinfo", "-h", "-o", "%G")
        partition = sh("sinfo", "-h", "-o", "%P").split()[0].rstrip("*")
        account = sh("sacctmgr", "-n", "-P", "show", "assoc", f"user={os.environ.get('USER', 'root')}", "format=account").split()[0]
    except (subprocess.SubprocessError, IndexError, OSError) as exc:
        pytest.skip(f"SLURM is up but sinfo/sacctmgr failed: {exc}")
    if "gpu:h100" not in gres:
        pytest.skip(f"the SLURM node has no gpu:h100 GRES (it has {gres.strip()!r}); start it with SLURM_FAKE_GPUS=1")
    return {"partition": partition, "account": account}
