"""Stage ``init_checkpoint``: the model that training starts from, saved with its tokenizer.

``model.init`` picks how: ``random`` (below), or ``pretrained``, ``downscale`` and ``upscale``,
which copy layers of a source checkpoint (``lmbuild.models.surgery``).
An encoder (``model.objective: masked``) is built by ``lmbuild.models.modernbert.build_init``
instead, from its own entry (scripts/init_checkpoint_masked.py): no encoder code is in this key.

For ``random``, the config comes from the ``model`` settings; vocab size and bos/eos/pad ids come from the
tokenizer (``len(tokenizer)``, so added tokens have rows). Weights are initialised by
transformers' own Llama init (normal(0, initializer_range), zero biases, unit norms) after
``transformers.set_seed(seed)``: the same settings give the same weights. Saved in fp32
safetensors, so ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``
load the artifact.

This stage does not train, and does not know the training sequence length (that is
``pack.seq_len``; the config check keeps it within ``max_position_embeddings``).
"""

from __future__ import annotations

import logging

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, set_seed

from lmbuild.errors import UserError
from lmbuild.models.common import model_counts
from lmbuild.models.surgery import from_source
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)


def make_config(settings: dict, tokenizer) -> LlamaConfig:
    s = settings
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"],
        max_position_embeddings=s["max_position_embeddings"],
        # transformers 5 reads rope_theta from rope_parameters, not from a top-level field.
        rope_parameters={"rope_type": "default", "rope_theta": float(s["rope_theta"])},
        tie_word_embeddings=s["tie_word_embeddings"],
        initializer_range=s["initializer_range"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        dtype="float32",
    )


def init_model(settings: dict, tokenizer) -> LlamaForCausalLM:
    """A fresh fp32 Llama for ``tokenizer``, initialised from ``settings['seed']``."""
    set_seed(settings["seed"])
    return LlamaForCausalLM(make_config(settings, tokenizer)).float()


def build(ctx: StageContext) -> dict:
    if ctx.settings.get("objective") == "masked":
        raise UserError("an encoder (model.objective masked) is built by scripts/init_checkpoint_masked.py")
    torch.set_num_threads(ctx.threads)
    tokenizer = AutoTokenizer.from_pretrained(ctx.inputs["tokenizer"])
    extra = {"init": "random"}
    if ctx.settings.get("init", "random") == "random":
        model = init_model(ctx.settings, tokenizer)
    else:
        model, extra = from_source(ctx.settings, tokenizer, ctx.inputs.get("source"))
    model.save_pretrained(ctx.out)  # safetensors
    tokenizer.save_pretrained(ctx.out)
    counts = {**model_counts(model), **extra}
    log.info("init_checkpoint: %s", counts)
    return counts
