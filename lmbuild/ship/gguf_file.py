"""A Llama checkpoint and its byte-level BPE tokenizer as one GGUF file (llama.cpp's format),
written with the ``gguf`` package (llama.cpp's own writer).

The layout follows llama.cpp's ``convert_hf_to_gguf.py`` for ``LlamaForCausalLM``: llama tensor
names (``gguf.get_tensor_name_map(MODEL_ARCH.LLAMA, ...)``), the q and k projections permuted
as its ``LlamaModel.permute`` does (llama.cpp's rope pairs adjacent dimensions; transformers'
GGUF loader undoes it), 1-D tensors (norms) in float32, the rest in f16 or q8_0 (a tensor whose
rows are not a multiple of q8_0's block falls back to f16, as llama.cpp's converter does), and
the tokenizer as ``tokenizer.ggml.model: gpt2`` with its tokens, merges, token types and special
ids. A tied output head is left out: llama.cpp reuses ``token_embd`` then.

What it does not do: other architectures (an encoder, ``model.objective: masked``, is refused
with one line), sentencepiece or other non-byte-level tokenizers, rope scaling, or k-quants.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors import safe_open

from lmbuild.errors import UserError

# export.gguf_type -> (GGML type of a 2-D weight, llama.cpp's file type)
TYPES = {
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
ARCHITECTURES = ("LlamaForCausalLM",)


def check_model(config: dict, where: str) -> None:
    """UserError unless ``config`` (a config.json) is a model this writer supports."""
    arch = (config.get("architectures") or [config.get("model_type")])[0]
    if arch not in ARCHITECTURES:
        extra = " (an encoder, model.objective: masked)" if config.get("model_type") == "modernbert" else ""
        raise UserError(f"{where}: the GGUF writer supports {', '.join(ARCHITECTURES)}, not {arch}{extra}; export its HF folder instead (export.gguf: false)")
    if config.get("rope_scaling"):
        raise UserError(f"{where}: rope_scaling {config['rope_scaling']} is not written to GGUF here")


def permute(w: torch.Tensor, n_head: int, n_head_kv: int | None = None) -> torch.Tensor:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py): HF's rotate-half order of a
    q/k projection's rows to llama.cpp's interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(folder: Path):
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no safetensors weights")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name)


def _vocab(folder: Path, vocab_size: int) -> dict:
    """Tokens, merges and types from tokenizer.json; special ids from tokenizer_config.json."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{folder}: no tokenizer.json: the GGUF writer needs a byte-level BPE tokenizer saved by HF tokenizers")
    tj = json.loads(path.read_text())
    model = tj.get("model") or {}
    pre = json.dumps(tj.get("pre_tokenizer"))
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise UserError(f"{path}: a {model.get('type')} tokenizer ({'byte-level' if 'ByteLevel' in pre else 'not byte-level'}); the GGUF writer handles byte-level BPE only")
    tokens: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in tokens}
    for added in tj.get("added_tokens") or []:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    # The embedding may be larger than the vocabulary (padded): llama.cpp needs a token per row.
    for i in range(vocab_size):
        if i not in tokens:
            tokens[i], types[i] = f"[PAD{i}]", gguf.TokenType.UNUSED
    if max(tokens) >= vocab_size:
        raise UserError(f"{path}: token id {max(tokens)} is beyond the model's vocab_size {vocab_size}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    cfg_path = folder / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    by_text = {t: i for i, t in tokens.items()}

    def special(name):
        tok = tcfg.get(name)
        tok = tok.get("content") if isinstance(tok, dict) else tok
        return by_text.get(tok) if tok is not None else None

    return {
        "tokens": [tokens[i] for i in range(vocab_size)],
        "types": [int(types[i]) for i in range(vocab_size)],
        "merges": merges,
        "bos": special("bos_token"), "eos": special("eos_token"), "pad": special("pad_token"), "unk": special("unk_token"),
        "add_bos": bool(tcfg.get("add_bos_token", False)),
    }


def write_gguf(folder: Path, out: Path, gguf_type: str, name: str = "lmbuild") -> dict:
    """The HF folder ``folder`` (config.json, safetensors, tokenizer.json) as a GGUF at ``out``;
    returns counts (tensors, of which quantized, file type)."""
    if gguf_type not in TYPES:
        raise UserError(f"export.gguf_type: {gguf_type!r} is not a GGUF type written here (one of: {', '.join(TYPES)})")
    qtype, ftype = TYPES[gguf_type]
    cfg = json.loads((folder / "config.json").read_text())
    check_model(cfg, f"export: {folder / 'config.json'}")
    n_layer, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    rope = cfg.get("rope_parameters") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    vocab = _vocab(folder, cfg["vocab_size"])

    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    w.add_name(name)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(float(theta))
    w.add_file_type(ftype)
    w.add_tokenizer_model("gpt2")
    # llama.cpp's name of the GPT-2 split regex (ByteLevel(use_regex=True), lmbuild.tokens.tokenizer);
    # "gpt2" is refused by llama.cpp ("unknown pre-tokenizer type"), found by running it.
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id), ("unk", w.add_unk_token_id)):
        if vocab[key] is not None:
            add(vocab[key])
    w.add_add_bos_token(vocab["add_bos"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    tied = cfg.get("tie_word_embeddings", False)
    counts = {"tensors": 0, "quantized": 0, "f16_fallback": 0}
    for hf_name, t in _tensors(folder):
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise UserError(f"export: {folder}: tensor {hf_name} has no llama.cpp name")
        if hf_name.endswith("q_proj.weight"):
            t = permute(t, n_head, n_head)
        elif hf_name.endswith("k_proj.weight"):
            t = permute(t, n_head, n_kv)
        data = t.float().numpy()
        if data.ndim == 1:
            w.add_tensor(gname, data.astype(np.float32))
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0] == 0:
            w.add_tensor(gname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            counts["quantized"] += 1
        else:
            counts["f16_fallback"] += qtype != gguf.GGMLQuantizationType.F16
            w.add_tensor(gname, data.astype(np.float16))
        counts["tensors"] += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {**counts, "gguf_type": gguf_type, "tokens": len(vocab["tokens"]), "merges": len(vocab["merges"])}
