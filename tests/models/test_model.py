"""The init_checkpoint stage: Llama config from settings and tokenizer, seeded init, loadable output."""

from __future__ import annotations

import json

import pytest
import torch


from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.models import common, init_checkpoint as model  # noqa: E402
from lmbuild.tokens import tokenizer

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    dedup = lc.write_deduplicated(root / "dedup", lc.stdlib_docs(limit=30))
    return lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 512}), {"deduplicated": dedup}, root)


def _init(tok_dir, root, key="test", seed=42, **overrides):
    settings = lc.settings("init_checkpoint", model={**TINY, **overrides}, train={"seed": seed}, pack={"seq_len": 32})
    return lc.run(model, "init_checkpoint", settings, {"tokenizer": tok_dir}, root, key=key, threads=1)


def _expected_parameters(v, d, i, layers, heads, kv_heads, tied):
    head_dim = d // heads
    attention = 2 * d * d + 2 * d * kv_heads * head_dim  # q, o; k, v with grouped-query heads
    layer = attention + 3 * d * i + 2 * d  # gate/up/down projections; two RMSNorms
    body = layers * layer + d  # final norm
    return body + v * d * (1 if tied else 2), body


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_counts(tok_dir, tmp_path, tied):
    out = _init(tok_dir, tmp_path, tie_word_embeddings=tied)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    total, body = _expected_parameters(512, 32, 64, 2, 4, 2, tied)
    assert counts["parameters"] == total and counts["non_embedding_parameters"] == body
    assert counts["layers"] == 2 and counts["hidden"] == 32 and counts["vocab_size"] == 512
    # The one formula (lmbuild.models.common): 6 N + 12 L H s, N the matmul parameters (not the
    # norms), counted from the built model and from the settings alike.
    norms = 2 * 2 * 32 + 32
    assert counts["flops_per_token"] == 6 * (body - norms + 512 * 32) + 12 * 2 * 32 * 64
    m = AutoModelForCausalLM.from_pretrained(out)
    assert common.count_parameters(m) == total and common.count_parameters(m, non_embedding=True) == body
    arch = {**TINY, "tie_word_embeddings": tied}
    assert counts["flops_per_token"] == common.llama_flops_per_token(arch, 512, 64)["total"]


def test_config_comes_from_settings_and_tokenizer(tok_dir, tmp_path):
    out = _init(tok_dir, tmp_path, rope_theta=5000.0)
    config = json.loads((out / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(out)
    assert config["model_type"] == "llama" and config["dtype"] == "float32"
    assert config["vocab_size"] == len(tok) == 512
    assert config["eos_token_id"] == config["bos_token_id"] == config["pad_token_id"] == tok.eos_token_id
    assert config["rope_parameters"]["rope_theta"] == 5000.0
    assert config["num_key_value_heads"] == 2 and config["max_position_embeddings"] == 64
    assert (out / "model.safetensors").exists()
    assert all(t.dtype == torch.float32 for t in load_file(out / "model.safetensors").values())


def test_seeded_init_is_reproducible(tok_dir, tmp_path):
    a = load_file(_init(tok_dir, tmp_path, key="a", seed=1) / "model.safetensors")
    b = load_file(_init(tok_dir, tmp_path, key="b", seed=1) / "model.safetensors")
    c = load_file(_init(tok_dir, tmp_path, key="c", seed=2) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    w = "model.embed_tokens.weight"
    assert not torch.equal(a[w], c[w])
    assert abs(a[w].std().item() - 0.02) < 0.002  # initializer_range


def test_loads_and_generates(tok_dir, tmp_path):
    out = _init(tok_dir, tmp_path)
    m = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok("def main():", return_tensors="pt")
    torch.manual_seed(0)
    gen = m.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(tok.decode(gen[0]), str)
