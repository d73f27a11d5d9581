"""The trained_checkpoint stage: a short real training run, its outputs, and its failure modes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.models import common, init_checkpoint as model  # noqa: E402
from lmbuild.tokens import shards as pack, tokenizer
from lmbuild.training import trained_checkpoint as train
from lmbuild.training.accel import bf16_available, use_bf16
from lmbuild.training.checkpoints import DATA_ORDER, KEPT_MARK, SPIKE_STATE, STABLE_MARK, check_resume, checkpoint_step, last_checkpoint
from lmbuild.training.launch import launch, rendezvous_port, srun_torchrun_argv, torchrun_argv
from lmbuild.training.order import BlockOrder
from lmbuild.training.run import evenly_spaced
from lmbuild.training.spikes import SpikeRule, TrainingDiverged
from lmbuild.training.stable_cache import stable_key
from lmbuild.training.trainer import CurveCallback, LMTrainer, training_arguments
from lmbuild.errors import UserError  # noqa: E402
from lmbuild.store.runner import StageContext  # noqa: E402
from conftest import ROOT  # noqa: E402

SEQ, BATCH = 32, 8
# One torch thread: a tiny model gains nothing from two, and on a busy machine two OpenMP
# threads wait on each other at every op (measured 15x slower under a load of 5 on 2 cores).
THREADS = 1
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": SEQ}
SHORT = {"max_steps": 20, "warmup_steps": 2, "learning_rate": 0.01, "batch_size": BATCH, "eval_steps": 10, "eval_batches": 4, "logging_steps": 5, "save_steps": 10}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """tokenizer -> shards and init_checkpoint, on 40 stdlib modules."""
    root = tmp_path_factory.mktemp("inputs")
    dedup = lc.write_deduplicated(root / "dedup", lc.stdlib_docs(limit=40))
    tok = lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 512}), {"deduplicated": dedup}, root)
    shards = lc.run(pack, "shards", lc.settings("shards", pack={"seq_len": SEQ, "val_fraction": 0.1}), {"deduplicated": dedup, "tokenizer": tok}, root)
    init = lc.run(model, "init_checkpoint", lc.settings("init_checkpoint", model=TINY, pack={"seq_len": SEQ}), {"tokenizer": tok}, root, threads=THREADS)
    return {"init_checkpoint": init, "shards": shards}


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    return lc.run(train, "trained_checkpoint", lc.settings("trained_checkpoint", train=SHORT), inputs, tmp_path_factory.mktemp("trained"), threads=THREADS)


@pytest.fixture(scope="module")
def trained_fp32(inputs, trained, tmp_path_factory):
    """The ``trained`` run in fp32 (the same run where the CPU has no bf16 arithmetic)."""
    if not use_bf16("auto"):
        return trained
    return lc.run(train, "trained_checkpoint", lc.settings("trained_checkpoint", train={**SHORT, "bf16": False}), inputs, tmp_path_factory.mktemp("fp32"), threads=THREADS)


def _context(inputs, tmp_path, **overrides) -> StageContext:
    (tmp_path / "out").mkdir(parents=True)
    (tmp_path / "work").mkdir(exist_ok=True)
    settings = lc.settings("trained_checkpoint", train={**SHORT, **overrides})
    return StageContext("trained_checkpoint", "test", settings, inputs, tmp_path / "out", tmp_path / "work", threads=THREADS)


def test_validation_loss_falls(trained):
    counts = json.loads((trained / "manifest.json").read_text())["counts"]
    assert counts["steps"] == 20 and counts["tokens_seen"] == 20 * BATCH * SEQ
    assert counts["final_val_loss"] < counts["initial_val_loss"] - 0.3
    assert counts["initial_val_loss"] == pytest.approx(torch.log(torch.tensor(512.0)).item(), abs=0.3)  # near-uniform at init
    assert counts["bf16"] == use_bf16("auto") and counts["tokens_per_second"] > 0
    assert counts["tokens_per_source"] == {"python_stdlib": counts["tokens_seen"]}


def test_a_mixture_is_what_training_samples(inputs, tmp_path):
    """data.mixture reaches training through its settings; the manifest counts tokens per source."""
    mix = {"python_stdlib": {"tokens": 3 * BATCH * SEQ}}  # one epoch = 3 steps' blocks
    settings = lc.settings("trained_checkpoint", train={**SHORT, "max_steps": 4, "warmup_steps": 1, "eval_steps": 100, "save_steps": 100},
                           data={"mixture": mix})
    assert settings["mixture"] == mix
    out = lc.run(train, "trained_checkpoint", settings, inputs, tmp_path, threads=THREADS)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["steps"] == 4 and counts["tokens_per_source"] == {"python_stdlib": 4 * BATCH * SEQ}
    (tmp_path / "bad").mkdir()
    ctx = _context(inputs, tmp_path / "bad")
    ctx.settings["mixture"] = {"prose": {"weight": 1}}
    with pytest.raises(UserError, match="data.mixture.prose: no training blocks"):
        train.build(ctx)


def test_loss_curve_csv(trained):
    with open(trained / "loss_curve.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["step", "tokens", "train_loss", "val_loss", "learning_rate", "grad_norm", "tokens_per_second"]
    steps = [int(r["step"]) for r in rows]
    assert steps == [0, 1, 5, 10, 15, 20]
    assert all(int(r["tokens"]) == int(r["step"]) * BATCH * SEQ for r in rows)
    first, last = rows[0], rows[-1]
    assert first["val_loss"] and not first["train_loss"]  # measured before the first step
    assert all(last[c] for c in ("train_loss", "val_loss", "learning_rate", "grad_norm", "tokens_per_second"))
    assert [bool(r["val_loss"]) for r in rows] == [True, False, False, True, False, True]
    trained_rows = rows[1:]
    assert all(0 < float(r["grad_norm"]) < 100 and 0 < float(r["train_loss"]) < 10 for r in trained_rows)
    # Training throughput only (validation and saves left out): positive and within sight of the run's average.
    counts = json.loads((trained / "manifest.json").read_text())["counts"]
    tps = [float(r["tokens_per_second"]) for r in trained_rows]
    assert all(0 < x < 100 * counts["tokens_per_second"] for x in tps)
    # Warmup then cosine decay to learning_rate * min_lr_ratio.
    lrs = [float(r["learning_rate"]) for r in trained_rows]
    assert max(lrs) <= 0.01 and lrs[-1] == pytest.approx(0.01 * 0.1, rel=0.1)


def _schedule(**train_settings) -> list[float]:
    """The learning rate at every step, from the scheduler the Trainer builds from our arguments."""
    from transformers import get_scheduler

    s = lc.settings("trained_checkpoint", train={**SHORT, **train_settings})
    args = training_arguments(s, "/nonexistent", bf16=False, world=1, resume=False)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    sched = get_scheduler(args.lr_scheduler_type, opt, args.warmup_steps, args.max_steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = []
    for _ in range(args.max_steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs + [sched.get_last_lr()[0]]


def test_schedules_cosine_and_warmup_stable_decay():
    cos = _schedule(lr_scheduler="cosine", max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1)
    assert cos[0] == 0 and cos[10] == pytest.approx(1.0) and cos[5] == pytest.approx(0.5)
    assert cos[55] == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-3)  # half-way through the cosine
    assert cos[100] == pytest.approx(0.1)
    wsd = _schedule(lr_scheduler="wsd", max_steps=100, warmup_steps=10, learning_rate=1.0, min_lr_ratio=0.1, decay_fraction=0.2)
    assert wsd[5] == pytest.approx(0.5, abs=0.06) and wsd[10] == pytest.approx(1.0)
    assert all(x == pytest.approx(1.0) for x in wsd[10:80])  # stable until the last 20% of the steps
    assert wsd[90] == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-3) and wsd[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(wsd[80:], wsd[81:]))


def test_final_model_and_tokenizer_load(trained):
    m = AutoModelForCausalLM.from_pretrained(trained)
    tok = AutoTokenizer.from_pretrained(trained)
    assert (trained / "model.safetensors").exists() and m.dtype == torch.float32
    assert tok.eos_token_id == m.config.eos_token_id
    counts = json.loads((trained / "manifest.json").read_text())["counts"]
    assert common.count_parameters(m) == counts["parameters"]
    prompt = tok("import os\n", return_tensors="pt")
    out = m.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_tensorboard_events(trained):
    events = list((trained / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "train/learning_rate", "eval/loss", "train/tokens_per_second", "train/tokens_seen"} <= tags
    seen = [e.value for e in acc.Scalars("train/tokens_seen")]
    assert seen == sorted(seen) and seen[-1] == 20 * BATCH * SEQ


def test_trainer_checkpoints_stay_out_of_the_artifact(trained):
    assert not list(trained.rglob("checkpoint-*")) and not (trained / "training_args.bin").exists()


def test_non_finite_loss_stops_with_one_line_error_and_saves_nothing(inputs, tmp_path):
    ctx = _context(inputs, tmp_path, learning_rate=1e30, warmup_steps=0)
    with pytest.raises(TrainingDiverged, match=r"non-finite training loss (nan|inf|-inf) at step \d+: lower train.learning_rate") as exc:
        train.build(ctx)
    assert "\n" not in str(exc.value)
    assert not list(ctx.out.glob("*.safetensors")) and not (ctx.out / "config.json").exists()
    assert last_checkpoint(ctx.work / "trainer") is None
    # Through the runner no artifact appears at all.
    with pytest.raises(UserError, match="non-finite"):
        lc.run(train, "trained_checkpoint", ctx.settings, inputs, tmp_path / "art", threads=THREADS)
    assert not (tmp_path / "art" / "trained_checkpoint" / "test").exists()


def test_non_finite_model_is_never_saved_over_a_good_checkpoint(inputs, tmp_path, monkeypatch):
    """A weight poisoned after step 10's loss: the save at step 10 refuses it; checkpoint-5 stays the newest."""

    def poison(self, args, state, control, model=None, **kwargs):
        if state.global_step == 10:
            with torch.no_grad():
                model.model.norm.weight[0] = float("nan")
        if state.global_step >= state.max_steps:
            control.should_log = True

    monkeypatch.setattr(CurveCallback, "on_step_end", poison)
    ctx = _context(inputs, tmp_path, eval_steps=7, save_steps=5)  # no validation at step 10, which would catch it first
    with pytest.raises(TrainingDiverged, match=r"non-finite parameter model.norm.weight at step 10: not saved"):
        train.build(ctx)
    good = last_checkpoint(ctx.work / "trainer")
    assert good.name == "checkpoint-5" and not (ctx.work / "trainer" / "checkpoint-10").exists()
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(good / "model.safetensors").values())
    assert not list(ctx.out.iterdir())


def test_fewer_blocks_than_one_batch_is_a_user_error(inputs, tmp_path):
    ctx = _context(inputs, tmp_path, batch_size=1_000_000)
    with pytest.raises(UserError, match="train.batch_size"):
        train.build(ctx)


def test_a_mixture_too_small_for_one_step_names_data_mixture(inputs, tmp_path):
    """The shards have enough blocks; the mixture's epoch (3 blocks) has not: the error names
    data.mixture with both figures, not the shards."""
    ctx = _context(inputs, tmp_path)
    ctx.settings["mixture"] = {"python_stdlib": {"tokens": 3 * SEQ}}
    with pytest.raises(UserError) as err:
        train.build(ctx)
    assert str(err.value).startswith("config: data.mixture: gives 3 training blocks per epoch, but one step needs ")
    assert f"= {BATCH}" in str(err.value) and "\n" not in str(err.value)


def test_last_checkpoint_skips_incomplete_ones(tmp_path):
    for step, files in [(5, ["trainer_state.json", DATA_ORDER]), (10, ["trainer_state.json", DATA_ORDER]),
                        (15, ["model.safetensors", DATA_ORDER]), (20, [])]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        for name in files:
            (tmp_path / f"checkpoint-{step}" / name).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path).name == "checkpoint-10"
    assert last_checkpoint(tmp_path / "missing") is None


def test_data_order_is_seeded_and_checked_on_resume(tmp_path):
    order = BlockOrder(100, seed=42)
    assert list(order) == list(BlockOrder(100, seed=42)) and sorted(order) == list(range(100))
    assert list(order) != list(BlockOrder(100, seed=43))
    order.set_epoch(1)
    assert list(order) != list(BlockOrder(100, seed=42))
    (tmp_path / DATA_ORDER).write_text(json.dumps(BlockOrder(100, 42).state(0, 16)))
    check_resume(tmp_path, BlockOrder(100, 42))
    with pytest.raises(UserError, match="data order .* not this run's"):
        check_resume(tmp_path, BlockOrder(100, 7))


# The stage in a child process, as Snakemake's job would run it: the real runner, the real work folder.
# A 50 ms pause per step (no effect on the numbers) leaves time to kill it between checkpoints.
# "die" SIGKILLs the process itself at a point no outside watcher can hit reliably: the moment
# the Trainer has written the final checkpoint (trainer_state.json included, before lmbuild's
# after-save hook), or after training, as the runner starts to hash the artifact for its manifest.
CHILD = """
import json, os, signal, sys, time
from pathlib import Path
import transformers
from lmbuild.store import runner
from lmbuild.training import trained_checkpoint as train
from lmbuild.training.trainer import CurveCallback
spec = json.loads(sys.argv[1])
if spec["pause"]:
    step_end = CurveCallback.on_step_end
    def slow(self, *a, **k):
        time.sleep(spec["pause"])
        return step_end(self, *a, **k)
    CurveCallback.on_step_end = slow
if spec.get("die") == "final-checkpoint":
    save = transformers.Trainer._save_checkpoint
    def save_then_die(self, *a, **k):
        save(self, *a, **k)
        if self.state.global_step == self.args.max_steps:
            os.kill(os.getpid(), signal.SIGKILL)
    transformers.Trainer._save_checkpoint = save_then_die
if spec.get("die") == "before-manifest":
    runner.file_entries = lambda folder: os.kill(os.getpid(), signal.SIGKILL)
runner.run(train.build, stage="trained_checkpoint", key="test", settings=spec["settings"], lineage={},
           inputs={k: Path(v) for k, v in spec["inputs"].items()}, output=Path(spec["output"]), threads=1)
"""


def _child(inputs, output, pause, die=None):
    import subprocess
    import sys

    spec = {"settings": lc.settings("trained_checkpoint", train=SHORT), "inputs": {k: str(v) for k, v in inputs.items()}, "output": str(output), "pause": pause, "die": die}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_sigkill_then_rerun_gives_the_same_weights_as_no_kill(inputs, trained, tmp_path):
    """SIGKILL a training process once checkpoint-10 is complete; the rerun resumes there and ends bit-identical.

    Bit-identical (torch.equal) because on CPU with one thread every op runs in the same order, and
    the checkpoint restores weights, AdamW moments, scheduler, RNG and the data position exactly.
    """
    import signal
    import time

    output = tmp_path / "trained_checkpoint" / "test"
    work = tmp_path / "_work" / "trained_checkpoint" / "test" / "trainer"
    proc = _child(inputs, output, pause=0.05)
    deadline = time.time() + 300
    while last_checkpoint(work) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not output.exists()  # no half-written artifact
    newest = last_checkpoint(work)
    assert newest is not None and checkpoint_step(newest) < 20
    saved = json.loads((newest / DATA_ORDER).read_text())
    assert saved["seed"] == SHORT.get("seed", 42) and saved["blocks_consumed"] == checkpoint_step(newest) * BATCH
    # As if killed mid-save of a later checkpoint: weights written, trainer_state.json not yet.
    partial = work / f"checkpoint-{checkpoint_step(newest) + 5}"
    partial.mkdir()
    shutil.copy(newest / "model.safetensors", partial / "model.safetensors")

    proc = _child(inputs, output, pause=0)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    counts = json.loads((output / "manifest.json").read_text())["counts"]
    assert counts["resumed_from_step"] == checkpoint_step(newest) and counts["steps"] == 20
    resumed, uninterrupted = _weights(output), _weights(trained)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert not work.parent.exists()  # the work folder goes once the artifact is complete
    rows = list(csv.DictReader(open(output / "loss_curve.csv")))
    assert [int(r["step"]) for r in rows] == [0, 1, 5, 10, 15, 20]  # the killed attempt's log history came back too


@pytest.mark.parametrize("die", ["final-checkpoint", "before-manifest"])
def test_sigkill_after_the_final_checkpoint_reruns_to_exactly_max_steps(inputs, trained, tmp_path, die):
    """SIGKILL once checkpoint-20 of max_steps 20 is written, or as the artifact is hashed: the
    rerun trains nothing and gives the uninterrupted run's artifact (it used to train step 21)."""
    import signal

    output = tmp_path / "trained_checkpoint" / "test"
    work = tmp_path / "_work" / "trained_checkpoint" / "test" / "trainer"
    proc = _child(inputs, output, pause=0, die=die)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not output.exists() and checkpoint_step(last_checkpoint(work)) == 20

    proc = _child(inputs, output, pause=0)
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    counts, reference = _counts(output), _counts(trained)
    assert (counts["steps"], counts["steps_trained"], counts["resumed_from_step"]) == (20, 0, 20)
    assert counts["tokens_seen"] == reference["tokens_seen"] and counts["tokens_per_source"] == reference["tokens_per_source"]
    assert _same_files(output, trained)


def _same_files(a: Path, b: Path) -> bool:
    """Every file of two trained artifacts byte for byte, but the manifest, the TensorBoard events
    (wall-clock times) and the loss curve's throughput column."""
    def files(root):
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "manifest.json" and "tensorboard" not in p.parts}

    names = files(a)
    assert names == files(b), names ^ files(b)
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names if n != "loss_curve.csv") and _curve(a) == _curve(b)


@pytest.mark.parametrize("max_steps,save_steps,keep,mixture", [
    (20, 10, [], None),  # 1,693 steps per epoch: the Trainer's epoch loop would take step 21
    (10, 5, [], {"python_stdlib": {"tokens": 5 * BATCH * SEQ}}),  # 5 steps per epoch: max_steps ends an epoch
    (12, 6, [12], None),  # a kept step at max_steps, killed before its kept copy was made
])
def test_a_finished_checkpoint_is_the_artifact_whatever_the_epoch(inputs, tmp_path, max_steps, save_steps, keep, mixture):
    """The state a kill between the final checkpoint and the manifest leaves (the work folder with
    checkpoint-<max_steps>, no artifact), whether or not max_steps is a multiple of the epoch's
    steps (the two ways the Trainer's loop can end): the rerun equals the uninterrupted run."""
    settings = lc.settings("trained_checkpoint", train={**SHORT, "max_steps": max_steps, "save_steps": save_steps, "keep_steps": keep, "bf16": False},
                           data={"mixture": mixture or {}})
    work = tmp_path / "work"
    work.mkdir()

    def build(name):
        (tmp_path / name).mkdir()
        return train.build(StageContext("trained_checkpoint", "test", settings, inputs, tmp_path / name, work, threads=THREADS))

    first = build("uninterrupted")
    assert first["steps"] == max_steps and checkpoint_step(last_checkpoint(work / "trainer")) == max_steps
    shutil.rmtree(work / "kept", ignore_errors=True)  # as if killed before the kept copy
    again = build("rerun")
    assert (again["steps"], again["steps_trained"], again["resumed_from_step"]) == (max_steps, 0, max_steps)
    assert again["kept"] == first["kept"] and again["tokens_per_source"] == first["tokens_per_source"]
    assert again["final_val_loss"] == first["final_val_loss"] and again["final_train_loss"] == first["final_train_loss"]
    assert _same_files(tmp_path / "rerun", tmp_path / "uninterrupted")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_on_cpu_with_two_processes(inputs, trained_fp32, tmp_path, parallel):
    """torchrun --nproc_per_node 2 (gloo): each process gets half of each global batch of the same order.

    The result matches the one-process run up to float rounding: the averaged gradient of two
    half batches of equal-length blocks is the full batch's mean gradient (FSDP: the same
    update, with parameters and optimizer state sharded, gathered for the save). In fp32: under
    bf16 autocast (a CPU with avx512_bf16) two half batches round differently from one.
    """
    ctx = _context(inputs, tmp_path, parallel=parallel, bf16=False)
    counts = train.build(ctx, nproc=2)
    assert counts["processes"] == 2 and counts["nodes"] == 1 and counts["parallel"] == parallel and counts["steps"] == 20
    assert counts["tokens_seen"] == 20 * BATCH * SEQ
    ddp, single = _weights(ctx.out), _weights(trained_fp32)
    for k in single:
        assert torch.allclose(ddp[k], single[k], rtol=1e-3, atol=1e-4), k
    assert not (ctx.out / "training_args.bin").exists()
    assert AutoModelForCausalLM.from_pretrained(ctx.out) is not None
    # Killed after checkpoint-20, before the artifact: the rerun's processes train nothing.
    shutil.move(ctx.out, tmp_path / "first")
    ctx.out.mkdir()
    again = train.build(ctx, nproc=2)
    assert (again["steps"], again["steps_trained"], again["resumed_from_step"]) == (20, 0, 20)
    assert _same_weights(ctx.out, tmp_path / "first")


def test_torchrun_argv_is_a_list_without_a_shell(tmp_path):
    argv = torchrun_argv(4, tmp_path / "launch.json")
    assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=4" in argv
    assert argv[-1] == str(tmp_path / "launch.json")


def test_srun_torchrun_argv_is_one_agent_per_node_with_a_c10d_rendezvous(tmp_path):
    argv = srun_torchrun_argv(4, 8, tmp_path / "launch.json", host="gpu-017", port=rendezvous_port("123456"), job_id="123456")
    assert argv[:6] == ["srun", "--overlap", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = argv[argv.index("torch.distributed.run") - 2 :]
    assert torchrun[1:3] == ["-m", "torch.distributed.run"] and "--standalone" not in torchrun
    assert {"--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu-017:32956", "--rdzv_id=lmbuild-123456"} <= set(torchrun)
    assert argv[-1] == str(tmp_path / "launch.json")
    # Two agents on one node (how the tests run it on a one-node cluster).
    assert srun_torchrun_argv(2, 1, tmp_path / "l.json", host="h", port=1, job_id="1", srun_nodes=1)[2:5] == ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2"]


def test_more_than_one_node_outside_slurm_is_one_line_error(inputs, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    ctx = _context(inputs, tmp_path)
    ctx.nodes = 2
    with pytest.raises(UserError, match=r"^resources.trained_checkpoint.nodes > 1 needs a SLURM job"):
        train.build(ctx)
    assert not list((tmp_path / "out").iterdir())


@pytest.mark.e2e  # a real SLURM job: out of the fast lane
def test_two_torchrun_agents_as_two_nodes_under_slurm(cluster, inputs, trained_fp32, tmp_path):
    """Multi-node as far as one machine allows: a SLURM job whose step (as the SLURM plugin
    runs a job: ``srun -n1``) launches through srun two torchrun agents, each a "node" with one
    process, meeting at a c10d rendezvous on the first (only) host over gloo. The weights equal
    the one-process run's, as with torchrun on one node."""
    ctx = _context(inputs, tmp_path, bf16=False)
    ctx.nodes = 2
    call = tmp_path / "job.py"
    call.write_text(
        "import json, logging\nfrom pathlib import Path\nlogging.basicConfig(level=logging.INFO)\nfrom lmbuild.training.launch import launch\nfrom lmbuild.store.runner import StageContext\n"
        f"ctx = StageContext(**json.loads(Path({str(tmp_path / 'ctx.json')!r}).read_text()))\n"
        "ctx.inputs = {k: Path(v) for k, v in ctx.inputs.items()}; ctx.out, ctx.work = Path(ctx.out), Path(ctx.work)\n"
        "counts = launch(ctx, 1, 2, srun_nodes=1)\n"
        f"Path({str(tmp_path / 'counts.json')!r}).write_text(json.dumps(counts))\n"
    )
    (tmp_path / "ctx.json").write_text(json.dumps({**ctx.__dict__, "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out": str(ctx.out), "work": str(ctx.work)}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sbatch = ["sbatch", "--wait", "--parsable", "-p", cluster["partition"], "-A", cluster["account"], "--nodes=1", "--ntasks=2", "--cpus-per-task=1",
              "--mem=3000", "-t", "15", "-o", str(tmp_path / "slurm-%j.log"), "-D", str(tmp_path), "--wrap", f"srun -n1 {sys.executable} {call}"]
    proc = subprocess.run(["timeout", "-s", "KILL", "900", *sbatch], capture_output=True, text=True, env=env)
    logs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.log"))
    assert proc.returncode == 0, (proc.stderr, logs[-4000:])
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["processes"] == 2 and counts["nodes"] == 2 and counts["parallel"] == "ddp" and counts["steps"] == 20
    assert "--rdzv_backend=c10d" in logs and "--nnodes=2" in logs
    multi, single = _weights(ctx.out), _weights(trained_fp32)
    for k in single:
        assert torch.allclose(multi[k], single[k], rtol=1e-3, atol=1e-4), k


def test_batch_size_must_split_over_the_gpus():
    s = lc.settings("trained_checkpoint", train={**SHORT, "batch_size": 6})
    with pytest.raises(UserError, match="train.batch_size 6 is not divisible by the 4 processes"):
        training_arguments(s, "/nonexistent", bf16=False, world=4, resume=False)


def test_speed_settings_reach_the_trainer():
    s = lc.settings("trained_checkpoint", train={**SHORT, "compile": True, "compile_mode": "reduce-overhead"})
    args = training_arguments(s, "/nonexistent", bf16=False, world=1, resume=False, liger=True)
    assert args.torch_compile and args.torch_compile_mode == "reduce-overhead"
    assert args.use_liger_kernel and args.liger_kernel_config["fused_linear_cross_entropy"]
    plain = training_arguments(lc.settings("trained_checkpoint", train=SHORT), "/nonexistent", bf16=False, world=1, resume=False)
    assert not plain.torch_compile and not plain.use_liger_kernel and plain.torch_compile_mode is None


def test_kernels_auto_is_torch_and_sdpa_on_a_cpu(trained):
    counts = json.loads((trained / "manifest.json").read_text())["counts"]
    if not torch.cuda.is_available():
        assert counts["kernels"] == "torch" and counts["attention"] == "sdpa"


def test_fsdp_under_torchrun_with_one_process(inputs, trained, tmp_path):
    """The path bench/gpu_check.sh takes to measure FSDP's overhead on one GPU: torchrun, one process, FSDP."""
    ctx = _context(inputs, tmp_path, parallel="fsdp")
    counts = launch(ctx, 1)
    assert counts["processes"] == 1 and counts["parallel"] == "fsdp" and counts["steps"] == 20
    fsdp, single = _weights(ctx.out), _weights(trained)
    for k in single:
        assert torch.allclose(fsdp[k], single[k], rtol=1e-3, atol=1e-4), k


def test_bf16_setting():
    assert use_bf16(False) is False and use_bf16(True) is True
    assert use_bf16("auto") == bf16_available()


@pytest.mark.parametrize("n,k", [(10, 4), (3, 8), (350, 128), (128, 128)])
def test_validation_subset_is_spread_over_the_whole_set(n, k):
    idx = evenly_spaced(n, k)
    assert len(idx) == min(n, k) == len(set(idx))
    assert idx[0] == 0 and max(idx) < n
    assert max(idx) >= n - -(-n // min(n, k))  # reaches the last blocks, not only the first


# --------------------------------------------------------------------------- continue, keep, spikes

WSD = {**SHORT, "lr_scheduler": "wsd", "bf16": False, "eval_steps": 5}


def _run(inputs, root, **overrides) -> Path:
    """A trained_checkpoint artifact in the store ``root`` (its stable cache at root/_stable)."""
    return lc.run(train, "trained_checkpoint", lc.settings("trained_checkpoint", train={**WSD, **overrides}), inputs, root, key=f"k{len(list(root.glob('trained_checkpoint/*')))}", threads=THREADS)


def _counts(artifact: Path) -> dict:
    return json.loads((artifact / "manifest.json").read_text())["counts"]


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _curve(artifact: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_second"} for r in csv.DictReader(open(artifact / "loss_curve.csv"))]


def test_wsd_continues_from_the_stable_phase_bit_for_bit(inputs, tmp_path):
    """max_steps 12 (decay 2: stable to step 10), then 20 (decay 4) in the same store: the second
    run starts at the cached step 10, trains 10 steps, and equals a straight 20-step run; a
    decay branch (max_steps 14, decay_steps 4) also starts at step 10 and trains only its decay."""
    store, straight_store = tmp_path / "store", tmp_path / "straight"
    short = _run(inputs, store, max_steps=12, decay_steps=2, keep_steps=[5])
    c = _counts(short)
    assert c["stable"]["decay_start"] == 10 and c["stable"]["cached_steps"] == [5, 10] and c["stable"]["continued_from_step"] is None
    assert c["steps_trained"] == 12
    entry = store / "_stable" / c["stable"]["key"] / "step-10"
    assert json.loads((entry / STABLE_MARK).read_text())["step"] == 10 and (entry / "optimizer.pt").is_file()

    longer = _run(inputs, store, max_steps=20, decay_steps=4, keep_steps=[5, 18])
    c = _counts(longer)
    assert c["stable"]["key"] == _counts(short)["stable"]["key"]
    assert c["stable"]["continued_from_step"] == 10 and c["steps_trained"] == 10 and c["steps"] == 20
    assert c["stable"]["cached_steps"] == [16]

    straight = _run(inputs, straight_store, max_steps=20, decay_steps=4, keep_steps=[5, 18])
    s = _counts(straight)
    assert s["stable"]["continued_from_step"] is None and s["steps_trained"] == 20
    assert _same_weights(longer, straight)
    assert _curve(longer) == _curve(straight)  # the stable part's log history comes along
    for k in (5, 18):
        assert _same_weights(longer / "steps" / str(k), straight / "steps" / str(k))
    assert c["kept"] == s["kept"] == [{"step": 5, "tokens_seen": 5 * BATCH * SEQ, "path": "steps/5"}, {"step": 18, "tokens_seen": 18 * BATCH * SEQ, "path": "steps/18"}]

    branch = _run(inputs, store, max_steps=14, decay_steps=4)
    b = _counts(branch)
    assert b["stable"]["continued_from_step"] == 10 and b["steps_trained"] == 4
    lrs = [float(r["learning_rate"]) for r in csv.DictReader(open(branch / "loss_curve.csv")) if r["learning_rate"]]
    assert WSD["learning_rate"] * 0.1 <= lrs[-1] < WSD["learning_rate"] * 0.5  # decaying towards min_lr_ratio within its 4 steps


def test_a_cached_step_past_the_decay_start_is_not_used(inputs, tmp_path):
    """A shorter stable phase than the cached one (max_steps 12, decay 4: stable to 8) cannot use
    step 10, whose steps 9-10 ran at the peak rate: it trains from step 0."""
    store = tmp_path / "store"
    _run(inputs, store, max_steps=12, decay_steps=2)
    c = _counts(_run(inputs, store, max_steps=12, decay_steps=4))
    assert c["stable"]["continued_from_step"] is None and c["steps_trained"] == 12


def test_cosine_runs_train_from_scratch_and_cache_nothing(inputs, tmp_path):
    c = _counts(_run(inputs, tmp_path, lr_scheduler="cosine", max_steps=10, keep_steps=[4]))
    assert c["stable"] is None and c["steps_trained"] == 10 and not (tmp_path / "_stable").exists()
    kept = tmp_path / "trained_checkpoint" / "k0" / "steps" / "4"
    assert json.loads((kept / KEPT_MARK).read_text()) == {"step": 4, "tokens_seen": 4 * BATCH * SEQ}
    assert not any(p.suffix in (".pt", ".pth", ".bin") for p in kept.iterdir())  # a model folder, no trainer state
    assert AutoModelForCausalLM.from_pretrained(kept).config.num_hidden_layers == TINY["num_hidden_layers"]
    AutoTokenizer.from_pretrained(kept)


def test_stable_key_leaves_out_only_the_length():
    s = lc.settings("trained_checkpoint", train=WSD)
    key = lambda **o: stable_key({**s, **o}, {}, {"code_hash": "c"})  # noqa: E731
    assert key() == key(max_steps=999, decay_fraction=0.5, decay_steps=7, keep_steps=[3])
    assert key() != key(learning_rate=0.02) and key() != key(seed=1)
    assert stable_key(s, {}, {"code_hash": "other"}) != key()


def _inject(monkeypatch, at: set[int], factor=50.0, seen=None):
    """Multiply the training loss of the given steps by ``factor`` (once per step number), and
    record each step's first input block."""
    original = LMTrainer.compute_loss
    done = set()

    def spiky(self, model, inputs, *a, **k):
        out = original(self, model, inputs, *a, **k)
        if not model.training:  # validation
            return out
        step = self.state.global_step + 1
        if seen is not None:
            seen.append((step, inputs["input_ids"][0].tolist()))
        if step in at and step not in done:
            done.add(step)
            return out * factor if not isinstance(out, tuple) else (out[0] * factor, *out[1:])
        return out

    monkeypatch.setattr(LMTrainer, "compute_loss", spiky)


def test_spike_skip_makes_no_update_for_that_batch(inputs, tmp_path, monkeypatch):
    _inject(monkeypatch, {12})
    params = {}
    original = CurveCallback.on_step_end

    def record(self, args, state, control, **kwargs):
        params[state.global_step] = next(kwargs["model"].parameters()).detach().clone()
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(CurveCallback, "on_step_end", record)
    c = _counts(_run(inputs, tmp_path, lr_scheduler="cosine", spike={"action": "skip", "window": 8}))
    assert c["spikes"]["skipped_steps"] == [12] and c["spikes"]["skips"] == 1 and c["spikes"]["rollbacks"] == []
    assert torch.equal(params[12], params[11]) and not torch.equal(params[13], params[12])


def test_spike_rollback_skips_the_data_window(inputs, tmp_path, monkeypatch):
    """A spike at step 15 rolls back to checkpoint 10 and skips the 5 steps of data after it:
    the redone step 11 reads what step 16 read before."""
    seen: list = []
    _inject(monkeypatch, {15}, seen=seen)
    c = _counts(_run(inputs, tmp_path, lr_scheduler="cosine", spike={"action": "rollback", "window": 8}))
    assert c["steps"] == 20 and c["spikes"]["skips"] == 1
    assert [{k: r[k] for k in ("step", "to_step", "skipped_blocks")} for r in c["spikes"]["rollbacks"]] == [{"step": 15, "to_step": 10, "skipped_blocks": 5 * BATCH}]
    assert [step for step, _ in seen] == list(range(1, 16)) + list(range(11, 21))
    from lmbuild.tokens.blocks import training_blocks

    data = training_blocks(inputs["shards"], {}, 42)  # what training reads
    plain = list(BlockOrder(len(data), 42))
    block = lambda position: data[plain[position]]["input_ids"].tolist()  # noqa: E731
    assert seen[10][1] == block(10 * BATCH)  # step 11 before the rollback
    assert seen[15][1] == block(15 * BATCH)  # step 11 after it reads what step 16 would have
    skipped = BlockOrder(len(data), 42, [(10 * BATCH, 5 * BATCH)])
    assert list(skipped)[:10 * BATCH] == plain[:10 * BATCH] and list(skipped)[10 * BATCH:len(data) - 5 * BATCH] == plain[15 * BATCH:]


def test_spike_rule_waits_for_half_a_window_and_leaves_spikes_out_of_the_mean():
    rule = SpikeRule({"action": "skip", "factor": 2.0, "window": 4, "patience": 2})
    assert not rule.observe(100.0)  # no mean yet (window / 2 = 2 losses)
    rule.history.clear()
    assert [rule.observe(x) for x in (1.0, 1.0, 5.0, 5.0, 1.0, 5.0)] == [False, False, False, True, False, False]
    assert list(rule.history) == [1.0, 1.0, 1.0]


def test_spike_rule_under_torchrun_decides_as_one_process(inputs, tmp_path):
    """Two processes decide on the mean of their losses: the same steps are skipped as in one
    process (a factor just above 1 makes every rise of the loss a spike)."""
    rule = {"action": "skip", "factor": 1.02, "window": 4}
    one = train.build(_context(inputs, tmp_path / "one", bf16=False, spike=rule))
    two = train.build(_context(inputs, tmp_path / "two", bf16=False, spike=rule), nproc=2)
    assert one["spikes"]["skipped_steps"], "no step was skipped: the test tests nothing"
    assert two["spikes"]["skipped_steps"] == one["spikes"]["skipped_steps"]


def test_a_resumed_run_keeps_the_spike_rules_state(inputs, tmp_path, monkeypatch):
    """The running mean is in every checkpoint: resumed at step 10, the rule still has its
    history and skips the spike at step 12, as the uninterrupted run did (same weights)."""
    rule = {"action": "skip", "window": 8}
    _inject(monkeypatch, {12})
    first = train.build(_context(inputs, tmp_path, bf16=False, spike=rule))
    assert first["spikes"]["skipped_steps"] == [12]
    ckpt = tmp_path / "work" / "trainer" / "checkpoint-10"
    assert json.loads((ckpt / SPIKE_STATE).read_text())["history"]  # 8 losses kept, 10 seen
    shutil.rmtree(tmp_path / "work" / "trainer" / "checkpoint-20")
    shutil.move(tmp_path / "out", tmp_path / "uninterrupted")
    _inject(monkeypatch, {12})  # the spike again, in the resumed run
    again = train.build(_context(inputs, tmp_path, bf16=False, spike=rule))
    assert again["resumed_from_step"] == 10 and again["spikes"]["skipped_steps"] == [12]
    assert _same_weights(tmp_path / "out", tmp_path / "uninterrupted")
