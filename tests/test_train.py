"""The trained_checkpoint stage: a short real training run, its outputs, and its failure modes."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild import model, pack, tokenizer, train  # noqa: E402
from lmbuild.errors import UserError  # noqa: E402
from lmbuild.runner import StageContext  # noqa: E402

SEQ, BATCH = 32, 8
# One torch thread: a tiny model gains nothing from two, and on a busy machine two OpenMP
# threads wait on each other at every op (measured 15x slower under a load of 5 on 2 cores).
THREADS = 1
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": SEQ}
SHORT = {"max_steps": 20, "warmup_steps": 2, "learning_rate": 0.01, "batch_size": BATCH, "eval_steps": 10, "eval_batches": 4, "logging_steps": 5}


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


def _context(inputs, tmp_path, **overrides) -> StageContext:
    (tmp_path / "out").mkdir()
    (tmp_path / "work").mkdir(exist_ok=True)
    settings = lc.settings("trained_checkpoint", train={**SHORT, **overrides})
    return StageContext("trained_checkpoint", "test", settings, inputs, tmp_path / "out", tmp_path / "work", threads=THREADS)


def test_validation_loss_falls(trained):
    counts = json.loads((trained / "manifest.json").read_text())["counts"]
    assert counts["steps"] == 20 and counts["tokens_seen"] == 20 * BATCH * SEQ
    assert counts["final_val_loss"] < counts["initial_val_loss"] - 0.3
    assert counts["initial_val_loss"] == pytest.approx(torch.log(torch.tensor(512.0)).item(), abs=0.3)  # near-uniform at init
    assert counts["bf16"] == train.use_bf16("auto") and counts["tokens_per_second"] > 0


def test_loss_curve_csv(trained):
    with open(trained / "loss_curve.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["step", "tokens", "train_loss", "val_loss", "learning_rate", "grad_norm"]
    steps = [int(r["step"]) for r in rows]
    assert steps == [0, 1, 5, 10, 15, 20]
    assert all(int(r["tokens"]) == int(r["step"]) * BATCH * SEQ for r in rows)
    first, last = rows[0], rows[-1]
    assert first["val_loss"] and not first["train_loss"]  # measured before the first step
    assert all(last[c] for c in ("train_loss", "val_loss", "learning_rate", "grad_norm"))
    assert [bool(r["val_loss"]) for r in rows] == [True, False, False, True, False, True]
    # Warmup then cosine decay to learning_rate * min_lr_ratio.
    lrs = [float(r["learning_rate"]) for r in rows[1:]]
    assert max(lrs) <= 0.01 and lrs[-1] == pytest.approx(0.01 * 0.1, rel=0.1)


def test_final_model_and_tokenizer_load(trained):
    m = AutoModelForCausalLM.from_pretrained(trained)
    tok = AutoTokenizer.from_pretrained(trained)
    assert (trained / "model.safetensors").exists() and m.dtype == torch.float32
    assert tok.eos_token_id == m.config.eos_token_id
    counts = json.loads((trained / "manifest.json").read_text())["counts"]
    assert model.count_parameters(m) == counts["parameters"]
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
    assert {"train/loss", "train/grad_norm", "train/learning_rate", "eval/loss"} <= tags


def test_trainer_checkpoints_stay_out_of_the_artifact(trained):
    assert not list(trained.rglob("checkpoint-*")) and not (trained / "training_args.bin").exists()


def test_non_finite_loss_raises_and_saves_nothing(inputs, tmp_path):
    ctx = _context(inputs, tmp_path, learning_rate=1e30, warmup_steps=0)
    with pytest.raises(RuntimeError, match="non-finite .* at step"):
        train.build(ctx)
    assert not list(ctx.out.glob("*.safetensors")) and not (ctx.out / "config.json").exists()
    # Through the runner no artifact appears at all.
    with pytest.raises(RuntimeError, match="non-finite"):
        lc.run(train, "trained_checkpoint", ctx.settings, inputs, tmp_path / "art", threads=THREADS)
    assert not (tmp_path / "art" / "trained_checkpoint" / "test").exists()


def test_fewer_blocks_than_one_batch_is_a_user_error(inputs, tmp_path):
    ctx = _context(inputs, tmp_path, batch_size=1_000_000)
    with pytest.raises(UserError, match="train.batch_size"):
        train.build(ctx)


def test_resumes_from_the_newest_complete_checkpoint(inputs, trained, tmp_path, monkeypatch):
    """A crash after step 15 leaves checkpoint-10 in the work folder; the rerun resumes there."""

    def crash(self, args, state, control, **kwargs):
        if state.global_step == 15:
            raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(train.CurveCallback, "on_step_end", crash)
        with pytest.raises(KeyboardInterrupt):
            train.build(_context(inputs, tmp_path))
    assert train.last_checkpoint(tmp_path / "work" / "trainer").name == "checkpoint-10"
    (tmp_path / "work" / "trainer" / "checkpoint-20").mkdir()  # incomplete: no trainer_state.json
    assert train.last_checkpoint(tmp_path / "work" / "trainer").name == "checkpoint-10"

    (tmp_path / "work" / "trainer" / "checkpoint-20").rmdir()
    shutil.rmtree(tmp_path / "out")  # the runner gives each attempt an empty out
    counts = train.build(_context(inputs, tmp_path))
    assert counts["resumed_from_step"] == 10 and counts["steps"] == 20
    # Model, optimizer, scheduler, RNG and data order all come back: the same result as no crash.
    uninterrupted = json.loads((trained / "manifest.json").read_text())["counts"]
    assert counts["final_val_loss"] == pytest.approx(uninterrupted["final_val_loss"], abs=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "out" / "loss_curve.csv")))
    assert [int(r["step"]) for r in rows][0] == 0 and int(rows[-1]["step"]) == 20
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out") is not None


def test_bf16_setting():
    assert train.use_bf16(False) is False and train.use_bf16(True) is True
    assert train.use_bf16("auto") == train.bf16_available()


@pytest.mark.parametrize("n,k", [(10, 4), (3, 8), (350, 128), (128, 128)])
def test_validation_subset_is_spread_over_the_whole_set(n, k):
    idx = train.evenly_spaced(n, k)
    assert len(idx) == min(n, k) == len(set(idx))
    assert idx[0] == 0 and max(idx) < n
    assert max(idx) >= n - -(-n // min(n, k))  # reaches the last blocks, not only the first
