"""Encoders (``model.objective: masked``): a ModernBERT masked LM and its ``init_checkpoint``
(:func:`build_init`, run by the encoder's own entry, scripts/init_checkpoint_masked.py, so that
no causal build's key holds this module; training is ``lmbuild.training.trained_checkpoint_masked``).

Why ModernBERT (Warner et al. 2024, arXiv:2412.13663) and not BERT/RoBERTa: it is in
transformers itself (no remote code), runs on CPU with PyTorch's SDPA attention, uses RoPE
instead of learned positions, pre-norm and GeGLU like the Llama decoder beside it, and takes
any tokenizer: our byte-level BPE plus one added mask token. Its layers live under
``model.layers.<i>.`` as the Llama's do, so ``lmbuild.models.surgery.remap_layers`` removes layers for
``downscale`` unchanged.

The config comes from ``model.*`` (``make_config``): layers, width, MLP width (GeGLU's), heads,
context length, ``rope_theta`` (the global-attention layers' RoPE base), tied embeddings,
init range; vocabulary from the tokenizer. ModernBERT's own pattern stays: every third
layer attends globally, the others within a 128-token window, local RoPE base 10,000.

The tokenizer: masked-LM training needs a mask token; where the tokenizer has none (our
BPE's only special token is ``<|endoftext|>``), ``init_checkpoint`` adds ``<|mask|>`` as a
new id at the end of the vocabulary and saves that tokenizer in the checkpoint. The
``tokenizer`` and ``shards`` artifacts are untouched (the shards never contain the mask id),
so a causal and a masked model of one build share them.

What this module does not do: upscale an encoder, grouped-query attention, or train.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, ModernBertConfig, ModernBertForMaskedLM, set_seed

from lmbuild.errors import UserError
from lmbuild.models.common import model_counts
from lmbuild.models.layer_plan import layer_plan
from lmbuild.models.surgery import remap_layers, resolve_source
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)

MASK_TOKEN = "<|mask|>"
MODEL_TYPE = "modernbert"
# model.* that must equal an encoder source's config (rope_theta is checked on its own).
ARCHITECTURE = ("hidden_size", "intermediate_size", "num_attention_heads", "max_position_embeddings", "tie_word_embeddings")


def with_mask_token(tokenizer):
    """The tokenizer, with ``<|mask|>`` added as a special token if it has no mask token."""
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    return tokenizer


def make_config(settings: dict, tokenizer) -> ModernBertConfig:
    """A ModernBERT config from the ``model`` settings and the (mask-token) tokenizer."""
    s = settings
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        max_position_embeddings=s["max_position_embeddings"],
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": float(s["rope_theta"])},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        },
        tie_word_embeddings=s["tie_word_embeddings"],
        initializer_range=s["initializer_range"],
        # No [CLS]/[SEP] in packed pretraining blocks: the document separator stands for both.
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        cls_token_id=eos,
        sep_token_id=eos,
        dtype="float32",
    )


def init_model(settings: dict, tokenizer) -> ModernBertForMaskedLM:
    """A fresh fp32 ModernBERT masked LM for ``tokenizer``, initialised from ``settings['seed']``."""
    set_seed(settings["seed"])
    return ModernBertForMaskedLM(make_config(settings, tokenizer)).float()


def load_encoder(folder: Path):
    """(config, fp32 state dict) of a ModernBERT checkpoint folder; safetensors only."""
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: no config.json (not a Hugging Face model folder)")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    if config.model_type != MODEL_TYPE:
        raise UserError(f"{folder}/config.json: model_type {config.model_type!r} is not an encoder of model.objective masked ({MODEL_TYPE})")
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    if not all((folder / f).is_file() for f in files):
        raise UserError(f"{folder}: no safetensors weights (pickled weights are not loaded)")
    state = {}
    for f in files:
        state.update(load_file(folder / f, device="cpu"))
    return config, {k: v.float() for k, v in state.items()}


def from_source(settings: dict, tokenizer, artifact: Path | None = None) -> tuple[ModernBertForMaskedLM, dict]:
    """An encoder from a source encoder: all its layers (pretrained) or fewer (downscale)."""
    folder = resolve_source(settings, artifact)
    source, state = load_encoder(folder)
    n = source.num_hidden_layers
    plan = layer_plan(settings, n)
    where = folder / "config.json"
    if source.vocab_size != len(tokenizer):
        raise UserError(f"model.source: the source's vocabulary has {source.vocab_size} tokens ({where}) but this build's tokenizer, with its mask token, has {len(tokenizer)}")
    for key in ARCHITECTURE:
        if settings[key] != getattr(source, key):
            raise UserError(f"model.{key}: {settings[key]} does not match the source's {getattr(source, key)} ({where}); model.* must describe the new model")
    theta = (source.rope_parameters or {}).get("full_attention", {}).get("rope_theta")
    if theta is not None and float(settings["rope_theta"]) != float(theta):
        raise UserError(f"model.rope_theta: {settings['rope_theta']} does not match the source's {theta} ({where})")
    if settings["num_hidden_layers"] != len(plan):
        raise UserError(f"model.num_hidden_layers: {settings['num_hidden_layers']}, but model.init {settings['init']} of the {n}-layer source gives {len(plan)} layers (plan {plan})")
    config = copy.deepcopy(source)
    config.num_hidden_layers = len(plan)
    config.layer_types = [source.layer_types[i] for i in plan]  # each layer keeps its attention kind
    config.dtype = "float32"
    model = ModernBertForMaskedLM(config).float()
    result = model.load_state_dict(remap_layers(state, plan), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ()) if config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        missing = sorted(set(result.missing_keys) - tied)
        raise UserError(f"{folder}: weights do not fit its config.json (missing {missing[:3]}, unexpected {sorted(result.unexpected_keys)[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    src = {"artifact": str(artifact)} if artifact is not None else {k: v for k, v in settings["source"].items() if v is not None}
    log.info("init %s encoder from %s: %d -> %d layers, plan %s", settings["init"], folder, n, len(plan), plan)
    return model, {"init": settings["init"], "source": src, "source_layers": n, "layer_plan": plan}


def build_init(ctx: StageContext) -> dict:
    """Stage ``init_checkpoint`` for an encoder: the model and the tokenizer with its mask token."""
    torch.set_num_threads(ctx.threads)
    tokenizer = with_mask_token(AutoTokenizer.from_pretrained(ctx.inputs["tokenizer"]))
    if ctx.settings["init"] == "random":
        model, extra = init_model(ctx.settings, tokenizer), {"init": "random"}
    else:
        model, extra = from_source(ctx.settings, tokenizer, ctx.inputs.get("source"))
    model.save_pretrained(ctx.out)
    tokenizer.save_pretrained(ctx.out)
    counts = {
        "objective": "masked",
        "model_type": MODEL_TYPE,
        **model_counts(model),
        "layer_types": list(model.config.layer_types),
        "mask_token": tokenizer.mask_token,
        "mask_token_id": tokenizer.mask_token_id,
        **extra,
    }
    log.info("init_checkpoint (encoder): %s", counts)
    return counts
