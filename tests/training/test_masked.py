"""model.objective masked: the ModernBERT encoder's init_checkpoint (random, downscale) and a short real training run."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForMaskedLM, AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.build import config as lmconfig  # noqa: E402
from lmbuild.models import modernbert as masked  # noqa: E402
from lmbuild.training import trained_checkpoint_masked as masked_train
from lmbuild.build import stages
from lmbuild.errors import UserError  # noqa: E402
from lmbuild.tokens.blocks import ShardedBlocks  # noqa: E402

from masked_inputs import SEQ, SHORT, THREADS, TINY, encoder_settings, inputs, run, trained  # noqa: E402, F401 (inputs, trained: fixtures)


def test_settings_name_the_objective_only_for_an_encoder():
    causal = lmconfig.validate({"model": {**TINY, "objective": "causal"}, "pack": {"seq_len": SEQ}})
    assert "objective" not in stages.STAGES["init_checkpoint"].settings(causal)
    assert "mlm_probability" not in stages.STAGES["trained_checkpoint"].settings(causal)
    assert "pseudo_perplexity_tokens" not in stages.STAGES["eval_report"].settings(causal)
    assert encoder_settings("init_checkpoint")["objective"] == "masked"
    t = encoder_settings("trained_checkpoint")
    assert t["objective"] == "masked" and t["mlm_probability"] == 0.15


def test_init_is_a_modernbert_with_an_added_mask_token(inputs):
    tok_dir, ckpt = inputs["tokenizer"], inputs["init_checkpoint"]
    base = AutoTokenizer.from_pretrained(tok_dir)
    assert base.mask_token is None  # the tokenizer artifact is the causal path's, unchanged
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert tok.mask_token == masked.MASK_TOKEN and tok.mask_token_id == len(base) == 512
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model_type"] == "modernbert" and config["vocab_size"] == 513
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (32, 2, 4)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["counts"]["objective"] == "masked" and manifest["counts"]["mask_token_id"] == 512
    # The same settings give the same weights.
    again = masked.init_model(encoder_settings("init_checkpoint", pack={"seq_len": SEQ}), tok)
    saved = load_file(ckpt / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in again.state_dict().items() if k in saved)


def test_downscale_keeps_the_first_and_last_layers(inputs, tmp_path):
    tok = inputs["tokenizer"]
    src = run(masked.build_init, "init_checkpoint", encoder_settings("init_checkpoint", model={**TINY, "num_hidden_layers": 4}, pack={"seq_len": SEQ}), {"tokenizer": tok}, tmp_path, key="src")
    settings = encoder_settings("init_checkpoint", model={**TINY, "num_hidden_layers": 2, "init": "downscale", "downscale_keep": 1, "source": {"path": str(src)}}, pack={"seq_len": SEQ})
    new = run(masked.build_init, "init_checkpoint", settings, {"tokenizer": tok}, tmp_path, key="new")
    a, b = load_file(src / "model.safetensors"), load_file(new / "model.safetensors")
    for j, i in enumerate([0, 3]):
        names = [n for n in a if n.startswith(f"model.layers.{i}.")]
        assert names
        for n in names:
            assert torch.equal(b[n.replace(f"layers.{i}.", f"layers.{j}.")], a[n]), n
    assert torch.equal(a["model.embeddings.tok_embeddings.weight"], b["model.embeddings.tok_embeddings.weight"])
    cfg_a, cfg_b = (json.loads((p / "config.json").read_text()) for p in (src, new))
    assert cfg_b["layer_types"] == [cfg_a["layer_types"][0], cfg_a["layer_types"][3]]
    assert json.loads((new / "manifest.json").read_text())["counts"]["layer_plan"] == [0, 3]


def test_pretrained_copies_every_layer_and_the_head(inputs, tmp_path):
    tok, src = inputs["tokenizer"], inputs["init_checkpoint"]
    settings = encoder_settings("init_checkpoint", model={**TINY, "init": "pretrained", "source": {"path": str(src)}}, pack={"seq_len": SEQ})
    new = run(masked.build_init, "init_checkpoint", settings, {"tokenizer": tok}, tmp_path, key="copy")
    a, b = load_file(src / "model.safetensors"), load_file(new / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert AutoTokenizer.from_pretrained(new).get_vocab() == AutoTokenizer.from_pretrained(src).get_vocab()


def test_downscale_refuses_a_causal_source(inputs, tmp_path):
    from lmbuild.models import init_checkpoint as causal_model

    causal = lc.run(causal_model, "init_checkpoint", lc.settings("init_checkpoint", model={**TINY, "objective": "causal", "num_hidden_layers": 4}, pack={"seq_len": SEQ}), {"tokenizer": inputs["tokenizer"]}, tmp_path, key="llama")
    settings = encoder_settings("init_checkpoint", model={**TINY, "init": "downscale", "downscale_keep": 1, "source": {"path": str(causal)}}, pack={"seq_len": SEQ})
    with pytest.raises(UserError, match="model_type 'llama' is not an encoder"):
        run(masked.build_init, "init_checkpoint", settings, {"tokenizer": inputs["tokenizer"]}, tmp_path, key="bad")
    assert not (tmp_path / "init_checkpoint" / "bad").exists()


def test_collator_masks_about_15_percent_seeded_and_never_the_separator(inputs):
    tok = AutoTokenizer.from_pretrained(inputs["init_checkpoint"])
    blocks = ShardedBlocks(inputs["shards"], "train")
    batch = [masked_train.InputIds(blocks)[i] for i in range(32)]
    a = masked_train.mlm_collator(tok, 0.15, 7)(batch)
    b = masked_train.mlm_collator(tok, 0.15, 7)(batch)
    c = masked_train.mlm_collator(tok, 0.15, 8)(batch)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(a["labels"], c["labels"])
    chosen = a["labels"] != -100
    assert 0.10 < chosen.float().mean().item() < 0.20
    ids = torch.stack([e["input_ids"] for e in batch])
    assert not chosen[ids == tok.eos_token_id].any()
    assert torch.equal(a["labels"][chosen], ids[chosen])
    # BERT's 80/10/10: most chosen positions show the mask token, some keep their token.
    shown = a["input_ids"][chosen]
    assert 0.7 < (shown == tok.mask_token_id).float().mean().item() < 0.9


def test_training_learns_and_saves_an_encoder(trained):
    rows = list(csv.DictReader((trained / "loss_curve.csv").open()))
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    # From ln(513) = 6.24 (uniform) down: 6.24 -> 5.86 in 20 steps here.
    assert len(val) >= 3 and val[-1] < val[0] - 0.25 and val == sorted(val, reverse=True), val
    manifest = json.loads((trained / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["objective"] == "masked" and counts["steps"] == SHORT["max_steps"]
    model = AutoModelForMaskedLM.from_pretrained(trained)
    assert model.config.model_type == "modernbert"
    assert AutoTokenizer.from_pretrained(trained).mask_token == masked.MASK_TOKEN
    assert not (trained / "training_args.bin").exists()


def test_a_finished_checkpoint_is_the_encoders_artifact(inputs, trained, tmp_path):
    """The state a kill after checkpoint-20 of max_steps 20 leaves (no artifact yet): the rerun
    trains nothing and equals the uninterrupted run byte for byte (it used to train step 21)."""
    from lmbuild.store.runner import StageContext

    settings = encoder_settings("trained_checkpoint", train=SHORT)
    ins = {k: inputs[k] for k in ("init_checkpoint", "shards")}
    (tmp_path / "out").mkdir()
    (tmp_path / "work").mkdir()
    ctx = StageContext("trained_checkpoint", "test", settings, ins, tmp_path / "out", tmp_path / "work", threads=THREADS)
    masked_train.build_train(ctx)
    shutil.rmtree(tmp_path / "out")
    (tmp_path / "out").mkdir()
    again = masked_train.build_train(ctx)
    assert again["steps"] == SHORT["max_steps"] and again["resumed_from_step"] == SHORT["max_steps"]
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (tmp_path / "out" / name).read_bytes() == (trained / name).read_bytes(), name
    curve = lambda art: [{k: v for k, v in r.items() if k != "tokens_per_second"} for r in csv.DictReader((art / "loss_curve.csv").open())]  # noqa: E731
    assert curve(tmp_path / "out") == curve(trained)


def test_the_validation_masks_are_fixed(inputs):
    tok = AutoTokenizer.from_pretrained(inputs["init_checkpoint"])
    blocks = ShardedBlocks(inputs["shards"], "val")
    fixed = masked_train.FixedMasking(blocks, tok, 0.15, 3)
    assert torch.equal(fixed[1]["labels"], fixed[1]["labels"]) and not torch.equal(fixed[0]["labels"], fixed[1]["labels"])


@pytest.mark.parametrize(
    "model_settings, message",
    [
        ({"num_key_value_heads": 2}, "no grouped-query attention: set model.num_key_value_heads"),
        ({"init": "upscale", "upscale_drop": 1, "source": {"path": "x"}, "num_hidden_layers": 2}, "not upscale"),
    ],
)
def test_config_refuses_what_an_encoder_cannot_be(model_settings, message):
    with pytest.raises(UserError, match=message):
        lmconfig.validate({"model": {**TINY, **model_settings}, "pack": {"seq_len": SEQ}})
