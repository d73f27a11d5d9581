"""The GGUF writer: a tiny Llama and our byte-level BPE, read back by an independent reader
(transformers' GGUF loader), agree with the HF checkpoint on next-token choices."""

from __future__ import annotations

import json
import shutil

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lm_corpus as lc
import vendored
from lmbuild.errors import UserError
from lmbuild.models import init_checkpoint
from lmbuild.ship import gguf_file
from lmbuild.tokens import tokenizer

# Wide enough init (0.2) that next-token logits are not near-ties; rows a multiple of q8_0's 32.
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "initializer_range": 0.2}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    dedup = lc.write_deduplicated(root / "dedup", lc.stdlib_docs(limit=30))
    return lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 512}), {"deduplicated": dedup}, root)


def init(tok_dir, root, **model):
    settings = lc.settings("init_checkpoint", model={**TINY, **model}, pack={"seq_len": 128})
    return lc.run(init_checkpoint, "init_checkpoint", settings, {"tokenizer": tok_dir}, root, threads=1)


@pytest.fixture(scope="module")
def model_dir(tok_dir, tmp_path_factory):
    return init(tok_dir, tmp_path_factory.mktemp("gguf"))  # tied embeddings, the default


def heldout_ids(tok, n=4, length=96):
    """Token ids of held-out text the tokenizer never saw (WikiText-2's validation excerpt)."""
    text = vendored.text("wikitext2_valid_head.txt.gz")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[i * length:(i + 1) * length] for i in range(n)])


def stored(t, gguf_type):
    """A weight as the GGUF holds it: 1-D in f32, 2-D in f16 or q8_0 (blocks of 32 along a row)."""
    if t.ndim == 1:
        return t
    if gguf_type == "q8_0":
        q = gguf.GGMLQuantizationType.Q8_0
        return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(t.numpy(), q), q)).reshape(t.shape)
    return t.half().float()


def next_tokens(model, ids):
    with torch.no_grad():
        return model(ids).logits.argmax(-1)


@pytest.mark.parametrize("gguf_type, floor", [("f16", 0.99), ("q8_0", 0.9)])
def test_gguf_read_by_transformers_agrees_with_the_checkpoint(model_dir, tmp_path, gguf_type, floor):
    path = tmp_path / f"model-{gguf_type}.gguf"
    counts = gguf_file.write_gguf(model_dir, path, gguf_type)
    assert counts["tensors"] > 0 and (counts["quantized"] > 0) == (gguf_type == "q8_0")
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    back_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ids = heldout_ids(tok)
    text = vendored.text("wikitext2_valid_head.txt.gz")[:2000]
    assert back_tok(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert back_tok.eos_token == tok.eos_token
    agree = (next_tokens(hf, ids) == next_tokens(back, ids)).float().mean().item()
    print(f"{gguf_type}: next-token agreement {agree:.4f} over {ids.numel()} positions")
    assert agree >= floor
    # The same model exactly, once its weights are rounded as the file stores them: q/k unpermuted
    # right, nothing else lost (a random model's near-ties make argmax agreement alone a weak check).
    rounded = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rounded.load_state_dict({k: stored(v, gguf_type) for k, v in rounded.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, rounded(ids).logits, atol=1e-4, rtol=1e-4)


def test_gguf_metadata(model_dir, tmp_path):
    path = tmp_path / "m.gguf"
    gguf_file.write_gguf(model_dir, path, "f16")
    r = gguf.GGUFReader(str(path))
    keys = ("general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "llama.block_count", "tokenizer.ggml.eos_token_id")
    fields = {k: r.fields[k].contents() for k in keys}
    # "gpt-2": llama.cpp's name of the GPT-2 split (it refuses "gpt2"; bench/llamacpp_gguf.py runs it).
    assert fields == {"general.architecture": "llama", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "llama.block_count": 2,
                      "tokenizer.ggml.eos_token_id": 0}
    assert {t.name for t in r.tensors} >= {"token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output_norm.weight"}


def test_bad_input_is_one_line(model_dir, tmp_path):
    with pytest.raises(UserError, match=r"export.gguf_type: 'q4_k' is not a GGUF type written here \(one of: f16, q8_0\)"):
        gguf_file.write_gguf(model_dir, tmp_path / "m.gguf", "q4_k")
    enc = tmp_path / "enc"
    shutil.copytree(model_dir, enc)
    cfg = json.loads((enc / "config.json").read_text())
    (enc / "config.json").write_text(json.dumps({**cfg, "architectures": ["ModernBertForMaskedLM"], "model_type": "modernbert"}))
    with pytest.raises(UserError, match=r"supports LlamaForCausalLM, not ModernBertForMaskedLM \(an encoder, model.objective: masked\)"):
        gguf_file.write_gguf(enc, tmp_path / "m.gguf", "f16")
    assert not (tmp_path / "m.gguf").exists()


def test_an_untied_output_head_is_written_as_output(tok_dir, tmp_path):
    untied = init(tok_dir, tmp_path, tie_word_embeddings=False)
    path = tmp_path / "m.gguf"
    gguf_file.write_gguf(untied, path, "f16")
    assert "output.weight" in {t.name for t in gguf.GGUFReader(str(path)).tensors}
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32)
    rounded = AutoModelForCausalLM.from_pretrained(untied, dtype=torch.float32)
    rounded.load_state_dict({k: stored(v, "f16") for k, v in rounded.state_dict().items()})
    ids = heldout_ids(AutoTokenizer.from_pretrained(untied), n=2)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, rounded(ids).logits, atol=1e-4, rtol=1e-4)
