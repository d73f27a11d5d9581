"""An encoder's inputs and its short training run, shared by the masked-objective tests of
training (test_masked.py) and of evaluation (test_masked_eval.py): tokenizer, shards and a
ModernBERT init_checkpoint on 40 stdlib modules, and 20 steps of masked-LM training. Fixtures
(module scope: each importing module builds its own); not a test module."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_corpus as lc  # noqa: E402
from lmbuild.build import config as lmconfig, stages  # noqa: E402
from lmbuild.models import modernbert as masked  # noqa: E402
from lmbuild.store import runner  # noqa: E402
from lmbuild.tokens import shards as pack, tokenizer  # noqa: E402
from lmbuild.training import trained_checkpoint_masked as masked_train  # noqa: E402

SEQ, BATCH, THREADS = 32, 8, 1
TINY = {"objective": "masked", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": SEQ}
SHORT = {"max_steps": 20, "warmup_steps": 2, "learning_rate": 0.01, "batch_size": BATCH, "eval_steps": 10, "eval_batches": 4, "logging_steps": 5, "save_steps": 10}


def encoder_settings(stage: str, **sections) -> dict:
    """The settings the plan gives an encoder's artifact (Stage.settings_of)."""
    sections.setdefault("model", TINY)
    sections.setdefault("pack", {"seq_len": SEQ})
    return stages.STAGES[stage].settings_of(True)(lmconfig.validate(sections))


def run(build, stage, settings, inputs, root, key="test"):
    out = root / stage / key
    runner.run(build, stage=stage, key=key, settings=settings, lineage={}, inputs=inputs, output=out, threads=THREADS)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """tokenizer -> shards and an encoder's init_checkpoint, on 40 stdlib modules."""
    root = tmp_path_factory.mktemp("inputs")
    dedup = lc.write_deduplicated(root / "dedup", lc.stdlib_docs(limit=40))
    tok = lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 512}), {"deduplicated": dedup}, root)
    shards = lc.run(pack, "shards", lc.settings("shards", pack={"seq_len": SEQ, "val_fraction": 0.1}), {"deduplicated": dedup, "tokenizer": tok}, root)
    init = run(masked.build_init, "init_checkpoint", encoder_settings("init_checkpoint", pack={"seq_len": SEQ}), {"tokenizer": tok}, root)
    return {"tokenizer": tok, "init_checkpoint": init, "shards": shards}


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    ins = {k: inputs[k] for k in ("init_checkpoint", "shards")}
    return run(masked_train.build_train, "trained_checkpoint", encoder_settings("trained_checkpoint", train=SHORT), ins, tmp_path_factory.mktemp("trained"))
