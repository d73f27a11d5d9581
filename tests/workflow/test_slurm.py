"""The workflow on a real SLURM cluster through the Snakemake SLURM executor plugin.

The cluster (tests/conftest.py's fixture) is a single node on this machine, started by
../shared/tools/slurm/start_slurm.sh (munge, slurmctld, slurmd, slurmdbd so that `sacct` works,
and a fake GPU GRES `gpu:h100:1` backed by a character device: SLURM schedules it and sets
CUDA_VISIBLE_DEVICES, torch sees no CUDA and trains on the CPU). Tests that need it skip with
the reason where it cannot start.

One smoke build under `--profile profiles/slurm` serves several checks: every non-local rule
ran as a SLURM job (sacct, by the `rule_<name>` job comment), the part jobs grouped several to
a SLURM job and building what ungrouped local jobs build, training asked for and got a GPU, and
training, requeued with `scontrol requeue` once it has written a checkpoint, resumes from that
checkpoint and finishes. A second, failing build checks the error report.
Every snakemake call is bounded with `timeout -s KILL`: on SIGTERM snakemake waits for its
running jobs, and a status query that never succeeds would keep it waiting.
"""

from __future__ import annotations

import glob
import json
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SNAKEMAKE, job_stats, sh

GPU_RULES = {"build_trained_checkpoint", "build_eval_report"}
ARTIFACT_CPU_RULES = {f"build_{s}" for s in ("raw", "cleaned", "deduplicated", "tokenizer", "shards", "init_checkpoint", "report")}
# The fan-out steps of the data stages: jobs too, without an artifact of their own.
CPU_RULES = ARTIFACT_CPU_RULES | {"build_raw_part", "build_cleaned_part", "dedup_map", "dedup_bucket", "build_shards_part"}


def smoke_config(**sections) -> dict:
    cfg = yaml.safe_load((ROOT / "tests" / "smoke.yaml").read_text())
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def write_config(workdir: Path, cfg: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def dry_run_resources(workdir: Path, cfg: dict) -> dict[str, list[dict]]:
    """{rule: [{resource: value} per job]} from `snakemake -n` (threads included)."""
    cfg_path = write_config(workdir, cfg)
    cmd = ["timeout", "-s", "KILL", "120", str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    # Many cores, so that threads are shown as the rules declare them, not capped.
    cmd += ["--cores", "64", "-n", "--configfile", str(cfg_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs: dict[str, list[dict]] = {}
    # Jobs of a `group:` are printed indented under "Group job ...".
    for block in re.split(r"\n\s*(?:local)?rule ", out)[1:]:
        name = block.split(":", 1)[0]
        found = {"threads": 1}
        for line in block.splitlines()[1:]:
            line = line.strip()
            if line.startswith("threads:"):
                found["threads"] = int(line.split(":")[1])
            elif line.startswith("resources:"):
                for item in line.split(":", 1)[1].split(","):
                    k, _, v = item.strip().partition("=")
                    found[k] = v
            elif line.startswith("[") or not line:
                break
        jobs.setdefault(name, []).append(found)
    return jobs


# ---------------------------------------------------------------- no cluster needed


def test_cpu_stages_never_ask_for_a_gpu_and_gpu_stages_get_config_resources(tmp_path):
    res = {
        "default": {"threads": 1, "mem_mb": 900, "runtime": 7},
        "tokenizer": {"threads": 2, "mem_mb": 1500},
        "trained_checkpoint": {"gpu": 2, "gpu_model": "h100", "cpus_per_gpu": 3, "mem_mb": 5000, "runtime": 90},
        "eval_report": {"gpu": 0, "gpu_model": "h100"},
    }
    jobs = dry_run_resources(tmp_path, smoke_config(resources=res))
    assert CPU_RULES | GPU_RULES <= set(jobs), jobs.keys()
    for rule in CPU_RULES:
        for job in jobs[rule]:
            assert not {"gpu", "gpu_model", "cpus_per_gpu", "gres"} & set(job), (rule, job)
            assert job["runtime"] == "7"
    assert jobs["build_tokenizer"][0]["threads"] == 2 and jobs["build_tokenizer"][0]["mem_mb"] == "1500"
    assert jobs["build_raw_part"][0]["mem_mb"] == "900"  # the gather asks a fixed 1500 (its DuckDB id check is capped at 500 MB)
    train = jobs["build_trained_checkpoint"][0]
    # The plugin submits these as --gpus=h100:2 --cpus-per-gpu=3; the job's threads are 2 x 3.
    assert (train["gpu"], train["gpu_model"], train["cpus_per_gpu"], train["threads"]) == ("2", "h100", "3", 6)
    assert (train["mem_mb"], train["runtime"]) == ("5000", "90")
    # gpu 0: no model either, or the plugin would submit --gpus=h100:0.
    ev = jobs["build_eval_report"][0]
    assert (ev["gpu"], ev["gpu_model"]) == ("0", "")


def test_multi_node_training_asks_for_nodes_and_gpus_per_node(tmp_path):
    res = {"trained_checkpoint": {"nodes": 2, "gpu": 4, "gpu_model": "h100", "cpus_per_gpu": 3}}
    jobs = dry_run_resources(tmp_path, smoke_config(resources=res))
    train = jobs["build_trained_checkpoint"][0]
    # --nodes=2 --gres=gpu:h100:4 (per node) and no --gpus (a count for the whole job).
    assert (train["nodes"], train["gres"], train["gpu"], train["gpu_model"]) == ("2", "gpu:h100:4", "0", "")
    assert (train["gpus_per_node"], train["cpus_per_gpu"], train["threads"]) == ("4", "3", 12)
    for rule in CPU_RULES:
        assert "nodes" not in jobs[rule][0] and "gres" not in jobs[rule][0], rule


def test_a_synthetic_source_job_gets_its_gpu_and_the_file_parts_none(tmp_path):
    """A synthetic source's raw part runs in rule build_synthetic_part with resources.synthetic
    (a teacher generates on a GPU); the profile groups only build_raw_part, so no group of file
    parts holds a GPU."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text("{}")
    (teacher / "model.safetensors").write_bytes(b"")  # a dry run hashes it, loads nothing
    (tmp_path / "prompts.txt").write_text("In the beginning\n")
    cfg = smoke_config()
    cfg["data"]["sources"].append({"type": "synthetic", "name": "tutor", "model": {"path": "teacher"}, "prompts": "prompts.txt"})
    cfg["resources"] = {"synthetic": {"gpu": 1, "gpu_model": "h100", "cpus_per_gpu": 4, "mem_mb": 20000}}
    jobs = dry_run_resources(tmp_path, cfg)
    (synthetic,) = jobs["build_synthetic_part"]
    assert (synthetic["gpu"], synthetic["gpu_model"], synthetic["cpus_per_gpu"], synthetic["threads"], synthetic["mem_mb"]) == ("1", "h100", "4", 4, "20000")
    for job in jobs["build_raw_part"]:
        assert not {"gpu", "gpu_model", "cpus_per_gpu"} & set(job), job
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert "build_synthetic_part" not in profile["groups"]
    del cfg["resources"]  # no resources.synthetic: no GPU, and no model (the plugin would ask --gpus=<model>:0)
    (job,) = dry_run_resources(tmp_path, cfg)["build_synthetic_part"]
    assert (job["gpu"], job["gpu_model"]) == ("0", "")


@pytest.mark.parametrize(
    "resources, message",
    [
        ({"raw": {"gpu": 1}}, "config: resources.raw.gpu: unknown key"),
        ({"default": {"gpu_model": "h100"}}, "config: resources.default.gpu_model: unknown key"),
        ({"training": {"gpu": 1}}, "config: resources.training: unknown key"),
        ({"trained_checkpoint": {"gpu": -1}}, "config: resources.trained_checkpoint.gpu: -1 is less than the minimum of 0"),
        ({"trained_checkpoint": {"gpu_model": "'h100'"}}, "config: resources.trained_checkpoint.gpu_model: \"'h100'\" does not match"),
        ({"eval_report": {"cpus_per_gpu": 0}}, "config: resources.eval_report.cpus_per_gpu: 0 is less than the minimum of 1"),
        ({"shards": {"mem_mb": "4G"}}, "config: resources.shards.mem_mb: '4G' is not of type 'integer'"),
        ({"eval_report": {"nodes": 2}}, "config: resources.eval_report.nodes: unknown key"),
        ({"trained_checkpoint": {"nodes": 0}}, "config: resources.trained_checkpoint.nodes: 0 is less than the minimum of 1"),
        ({"synthetic": {"gpu": 2}}, "config: resources.synthetic.gpu: 2 is greater than the maximum of 1"),
        ({"synthetic": {"nodes": 2}}, "config: resources.synthetic.nodes: unknown key"),
    ],
)
def test_resource_keys_are_validated(resources, message):
    from lmbuild.build.config import validate
    from lmbuild.errors import UserError

    with pytest.raises(UserError) as err:
        validate({"resources": resources})
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_profile_asks_for_requeue_and_leaves_partition_and_account_to_the_user():
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-requeue"] is True
    assert not {"slurm_partition", "slurm_account"} & set(profile["default-resources"])
    text = (ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    assert "# slurm_partition:" in text and "# slurm_account:" in text


# ---------------------------------------------------------------- the cluster


def slurm_snakemake(cluster: dict, workdir: Path, cfg: dict, *args: str, limit: int = 300) -> subprocess.Popen:
    cfg_path = write_config(workdir, cfg)
    cmd = ["timeout", "-s", "KILL", str(limit), str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--profile", str(ROOT / "profiles" / "slurm")]
    # What a user sets in the profile; the rest (requeue, latency) is the profile's.
    cmd += ["--default-resources", f"slurm_partition={cluster['partition']}", f"slurm_account={cluster['account']}"]
    # Test speed: first status check after 2 s instead of 40, no retry of a failed job;
    # --verbose prints each `sbatch call:`; kept SLURM logs for the assertions.
    cmd += ["--slurm-init-seconds-before-status-checks", "2", "--restart-times", "0", "--verbose", "--slurm-keep-successful-logs"]
    cmd += [*args, "--configfile", str(cfg_path)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def cancel_jobs_in(workdir: Path) -> None:
    """scancel what a killed snakemake left queued or running in `workdir`."""
    for line in sh("squeue", "-h", "-o", "%i|%Z").splitlines():
        job_id, _, job_dir = line.partition("|")
        if job_dir == str(workdir):
            subprocess.run(["scancel", job_id], timeout=30)


def sacct_jobs(run_uuid: str) -> list[dict]:
    """Every SLURM job of one snakemake run (its job name), with requeued instances (-D).
    -S: sacct lists only jobs since midnight by default, so a run across midnight lost its jobs."""
    fields = ["JobIDRaw", "Comment", "State", "AllocTRES"]
    out = sh("sacct", "-X", "-D", "-n", "-P", "-S", "2000-01-01", "--name", run_uuid, f"--format={','.join(fields)}")
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def sbatch_calls(output: str) -> dict[str, list[str]]:
    """{rule: [sbatch command line]} from `snakemake --verbose` output."""
    calls: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("sbatch call:"):
            rule = rule_of(re.search(r"--comment '?(\S+?)'? ", line).group(1))
            calls.setdefault(rule, []).append(line)
    return calls


class Requeuer(threading.Thread):
    """Requeues the training job once, as soon as it has written a complete checkpoint.

    A requeued job waits ~2 minutes (its BeginTime) before SLURM starts it again; as an
    admin would, we let it start at once.
    """

    def __init__(self, workdir: Path):
        super().__init__(daemon=True)
        self.workdir, self.done = workdir, threading.Event()
        self.job_id: str | None = None
        self.step_seen: int | None = None
        self.error: str | None = None

    def run(self):
        pattern = str(self.workdir / "artifacts" / "_work" / "trained_checkpoint" / "*" / "trainer" / "checkpoint-*" / "trainer_state.json")
        while not self.done.is_set():
            ckpts = glob.glob(pattern)
            if ckpts:
                lines = sh("squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z").splitlines()
                ours = [ln.split("|")[0] for ln in lines if "rule_build_trained_checkpoint" in ln and ln.endswith(str(self.workdir))]
                if ours:
                    self.step_seen = max(int(Path(c).parent.name.split("-")[1]) for c in ckpts)
                    self.job_id = ours[0]
                    sh("scontrol", "requeue", self.job_id)
                    for _ in range(100):
                        state = sh("squeue", "-h", "-j", self.job_id, "-o", "%T").strip()
                        if state == "PENDING":
                            sh("scontrol", "update", f"JobId={self.job_id}", "StartTime=now")
                            return
                        time.sleep(0.2)
                    self.error = f"job {self.job_id} did not go back to PENDING after scontrol requeue"
                    return
            time.sleep(0.2)


def start_failing_build(cluster: dict, work: Path) -> subprocess.Popen:
    """A build whose raw job fails: a source file with a malformed JSON line."""
    (work / "data").mkdir()
    good = json.dumps({"text": "A line of prose long enough to pass. " * 10})
    (work / "data" / "docs.jsonl").write_text(f"{good}\n{{not json\n")
    cfg = smoke_config(
        data={"sources": [{"type": "jsonl", "path": "data/*.jsonl"}]},
        resources={"default": {"threads": 1, "mem_mb": 1000, "runtime": 10}},
    )
    return slurm_snakemake(cluster, work, cfg, "raw", limit=300)


# Other groups on the command line (it replaces the profile's group-components): two parts to a job.
GROUP_ARGS = ("--group-components", "build_cleaned_part=2", "dedup_map=2", "dedup_bucket=2")


@pytest.fixture(scope="module")
def slurm_build(cluster, tmp_path_factory) -> dict:
    """The smoke build under --profile profiles/slurm, with its training job requeued halfway,
    and beside it (at the same time, to save wall time) a build whose first job fails."""
    work, failing_work = tmp_path_factory.mktemp("slurm"), tmp_path_factory.mktemp("slurm_failing")
    cfg = smoke_config(
        # A checkpoint every 5 of 20 steps: the requeue (at the first) lands well before the end.
        train={"max_steps": 20, "warmup_steps": 3, "eval_steps": 5, "save_steps": 5, "eval_batches": 1, "logging_steps": 5},
        resources={
            "default": {"threads": 1, "mem_mb": 1000, "runtime": 10},
            "trained_checkpoint": {"gpu": 1, "gpu_model": "h100", "cpus_per_gpu": 2, "mem_mb": 2000},
            "eval_report": {"mem_mb": 2000},
        },
    )
    requeuer = Requeuer(work)
    requeuer.start()
    try:
        failing = start_failing_build(cluster, failing_work)
        proc = slurm_snakemake(cluster, work, cfg, limit=900)
        failing_output, _ = failing.communicate()
        output, _ = proc.communicate()
    finally:
        requeuer.done.set()
        requeuer.join(10)
        cancel_jobs_in(work)
        cancel_jobs_in(failing_work)
    assert proc.returncode == 0, output[-6000:]
    run_uuid = re.search(r"--job-name '?([0-9a-f-]{36})", output).group(1)
    return {
        "work": work,
        "cfg": cfg,
        "output": output,
        "sacct": sacct_jobs(run_uuid),
        "requeuer": requeuer,
        "failing": {"work": failing_work, "output": failing_output, "returncode": failing.returncode},
    }


def manifest(work: Path, stage: str) -> dict:
    (path,) = [p for p in (work / "artifacts" / stage).glob("*/manifest.json")]
    return json.loads(path.read_text())


# Grouped part rules (each its own `group:` of the rule's name): SLURM's comment for a group
# job is rule_<group>[_...], without a `_wildcards_` part.
GROUPED_RULES = ("build_raw_part", "build_cleaned_part", "build_shards_part", "dedup_map", "dedup_bucket")


def rule_of(comment: str) -> str:
    m = re.match(r"rule_(\w+?)_wildcards_", comment)
    if m:
        return m.group(1)
    (rule,) = [r for r in GROUPED_RULES if re.match(rf"rule_{r}(_|$)", comment)]
    return rule


@pytest.mark.e2e
def test_every_non_local_rule_ran_as_a_slurm_job(slurm_build):
    planned = job_stats(slurm_build["output"])
    remote = Counter({r: n for r, n in planned.items() if r in CPU_RULES | GPU_RULES})
    assert set(remote) == CPU_RULES | GPU_RULES
    # smoke.yaml: 2 sources (a raw part each: groups never mix sources), 2 raw shards, 2 hash
    # buckets. The profile groups the part rules: ceil(jobs / group components) SLURM jobs each, here one.
    assert {r: remote[r] for r in GROUPED_RULES} == {"build_raw_part": 2, "build_cleaned_part": 2, "dedup_map": 2, "dedup_bucket": 2, "build_shards_part": 2}
    groups = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())["group-components"]
    submitted = Counter({r: -(-n // groups.get(r, 1)) for r, n in remote.items()})
    assert sum(submitted.values()) == sum(len(c) for c in sbatch_calls(slurm_build["output"]).values())
    # One sacct row per job instance: count each job once (the requeued one has two rows).
    final = {j["JobIDRaw"]: j for j in slurm_build["sacct"] if j["State"] != "REQUEUED"}
    assert Counter(rule_of(j["Comment"]) for j in final.values() if j["Comment"]) == submitted
    assert {j["State"] for j in final.values()} == {"COMPLETED"}, final
    # Each stage's manifest names the SLURM job that built it.
    ids = {rule_of(j["Comment"]): j["JobIDRaw"] for j in final.values() if j["Comment"]}
    for rule in remote.keys() & (ARTIFACT_CPU_RULES | GPU_RULES):
        assert manifest(slurm_build["work"], rule.removeprefix("build_"))["job"]["slurm_job_id"] == ids[rule]


@pytest.mark.e2e
def test_training_asked_for_and_got_a_gpu_and_cpu_stages_did_not(slurm_build):
    calls = sbatch_calls(slurm_build["output"])
    assert len(calls["build_trained_checkpoint"]) == 1
    assert "--gpus=h100:1" in calls["build_trained_checkpoint"][0]
    assert "--cpus-per-gpu=2" in calls["build_trained_checkpoint"][0]
    assert "--requeue" in calls["build_trained_checkpoint"][0]
    for rule in CPU_RULES | {"build_eval_report"}:
        for call in calls[rule]:
            assert "--gpus" not in call and "--gres" not in call, call
    for job in slurm_build["sacct"]:
        if job["Comment"]:
            assert ("gres/gpu=1" in job["AllocTRES"]) == (rule_of(job["Comment"]) == "build_trained_checkpoint"), job
    # Inside the job SLURM set CUDA_VISIBLE_DEVICES to the GPU it allocated; the others have none.
    work = slurm_build["work"]
    train = manifest(work, "trained_checkpoint")
    assert train["job"]["cuda_visible_devices"] == "0" and train["gpus"] == 1 and train["threads"] == 2
    for stage in ("raw", "cleaned", "deduplicated", "tokenizer", "shards", "init_checkpoint", "eval_report"):
        m = manifest(work, stage)
        assert m["job"]["cuda_visible_devices"] is None and m["gpus"] == 0, (stage, m["job"])
        assert m["threads"] == 1


@pytest.mark.e2e
def test_requeued_training_resumes_from_its_checkpoint(slurm_build):
    requeuer, work = slurm_build["requeuer"], slurm_build["work"]
    assert requeuer.error is None, requeuer.error
    assert requeuer.job_id is not None, "the training job was never seen running with a checkpoint"
    states = [j["State"] for j in slurm_build["sacct"] if j["JobIDRaw"] == requeuer.job_id]
    assert sorted(states) == ["COMPLETED", "REQUEUED"], states
    m = manifest(work, "trained_checkpoint")
    counts = m["counts"]
    # The second run resumed from a checkpoint at least as new as the one seen at the requeue.
    assert counts["resumed_from_step"] is not None and counts["resumed_from_step"] >= requeuer.step_seen > 0
    assert counts["steps"] == slurm_build["cfg"]["train"]["max_steps"]
    assert math_finite(counts["final_val_loss"]) and counts["final_val_loss"] < counts["initial_val_loss"]
    # The stage log is the requeued run's: it says so and where it resumed from.
    log = Path(work / m["log"]).read_text()
    assert re.search(rf"resuming from \S+/checkpoint-{counts['resumed_from_step']}\b", log), log[-2000:]
    assert f"slurm_job_id={requeuer.job_id}" in log
    # Its checkpoints were scratch state: gone once the artifact is complete.
    assert not (work / "artifacts" / "_work" / "trained_checkpoint" / m["key"]).exists()


def math_finite(x) -> bool:
    return isinstance(x, float) and x == x and abs(x) != float("inf")


@pytest.mark.e2e
def test_a_failing_job_fails_the_workflow_and_names_its_log(slurm_build):
    work, output, returncode = (slurm_build["failing"][k] for k in ("work", "output", "returncode"))
    assert returncode != 0, output[-4000:]
    # The raw part job that read the file failed (its log: logs/raw_parts/<part key>.log).
    (log,) = [p for p in (work / "logs" / "raw_parts").glob("*.log") if "invalid JSON" in p.read_text()]
    assert str(log.relative_to(work)) in output, output[-4000:]
    assert "docs.jsonl:2: invalid JSON" in log.read_text()
    # SLURM's log of the failed job is named too, and sacct has the job as failed.
    assert re.search(r"\.snakemake/slurm_logs/\S*build_raw_part\S*/\d+\.log", output), output[-4000:]
    run_uuid = re.search(r"--job-name '?([0-9a-f-]{36})", output).group(1)
    assert [j["State"] for j in sacct_jobs(run_uuid)] == ["FAILED"]
    assert not [p for p in (work / "artifacts" / "raw").glob("*") if not p.name.startswith(".")]


# ---------------------------------------------------------------- grouped part jobs


def group_config() -> dict:
    cfg = smoke_config(resources={"default": {"threads": 1, "mem_mb": 1000, "runtime": 5}})
    assert cfg["data"]["dedup"]["buckets"] == 2
    return cfg


def local_snakemake(workdir: Path, cfg: dict, *args: str, limit: int = 600) -> subprocess.CompletedProcess:
    cfg_path = write_config(workdir, cfg)
    cmd = ["timeout", "-s", "KILL", str(limit), str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    return subprocess.run([*cmd, *args, "--configfile", str(cfg_path)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def local_dedup(tmp_path_factory) -> Path:
    """`deduplicated` of the smoke config, built locally (no cluster, groups ignored)."""
    work = tmp_path_factory.mktemp("local_dedup")
    proc = local_snakemake(work, group_config(), "--cores", "2", "deduplicated")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return work


@pytest.mark.e2e
def test_grouping_settings_plan_nothing(local_dedup):
    """Groups are scheduling, not content: under the SLURM profile, with its groups or others,
    the locally built artifacts are up to date and no key changes."""
    for extra in ((), GROUP_ARGS, ("--group-components", "build_cleaned_part=1", "--groups", "build_cleaned=build_cleaned_part")):
        # The target first: --group-components takes every following word.
        proc = local_snakemake(local_dedup, group_config(), "deduplicated", "-n", "--profile", str(ROOT / "profiles" / "slurm"), *extra, limit=120)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert "Nothing to be done" in out and "Group job" not in out, (extra, out[-3000:])


@pytest.mark.e2e
def test_grouped_parts_build_the_same_artifact_as_ungrouped_local_jobs(slurm_build, local_dedup):
    """The SLURM build ran each part rule's jobs as one grouped SLURM job
    (test_every_non_local_rule_ran_as_a_slurm_job counts them): its deduplicated artifact has the
    key and the bytes of the local build without groups, and locally, without the profile, its
    working directory plans nothing."""
    (ref,) = (local_dedup / "artifacts" / "deduplicated").glob("*/manifest.json")
    (got,) = (slurm_build["work"] / "artifacts" / "deduplicated").glob("*/manifest.json")
    assert got.parent.name == ref.parent.name
    assert json.loads(got.read_text())["files"] == json.loads(ref.read_text())["files"]
    proc = local_snakemake(slurm_build["work"], slurm_build["cfg"], "--cores", "2", "-n", limit=120)
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
