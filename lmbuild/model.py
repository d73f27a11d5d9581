"""Stage ``init_checkpoint``: the model that training starts from, saved with its tokenizer.

``model.init`` picks how: ``random`` (below), or ``pretrained``, ``downscale`` and ``upscale``,
which copy layers of a source checkpoint (``lmbuild.init``).
An encoder (``model.objective: masked``) is built by ``lmbuild.masked.build_init`` instead.

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

from lmbuild.init import from_source
from lmbuild.runner import StageContext

log = logging.getLogger(__name__)


def count_parameters(model: torch.nn.Module, non_embedding: bool = False) -> int:
    """Trainable parameters, each shared tensor once (tied embeddings count once).

    ``non_embedding`` leaves out the token embedding and an untied output projection
    (Kaplan et al. 2020's N).
    """
    params = {id(p): p for p in model.parameters()}
    if non_embedding:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                params.pop(id(module.weight), None)
    return sum(p.numel() for p in params.values())


def flops_per_token(config: LlamaConfig, non_embedding_parameters: int, seq_len: int) -> int:
    """Training FLOPs per token: 6 * (matmul parameters) + 12 * layers * hidden * seq_len.

    The first term is the 6N rule (forward 2N, backward 4N) with N = non-embedding parameters
    plus the output projection (vocab x hidden: a matmul even when tied, unlike the embedding
    lookup). The second is attention scores and their weighted sum (PaLM, Chowdhery et al. 2022,
    appendix B), counted over the full ``seq_len`` without halving for the causal mask.
    """
    n = non_embedding_parameters + config.vocab_size * config.hidden_size
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len


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
        # An encoder (ModernBERT): imported only here, so a causal build never runs its code.
        from lmbuild.masked import build_init

        return build_init(ctx)
    torch.set_num_threads(ctx.threads)
    tokenizer = AutoTokenizer.from_pretrained(ctx.inputs["tokenizer"])
    extra = {"init": "random"}
    if ctx.settings.get("init", "random") == "random":
        model = init_model(ctx.settings, tokenizer)
    else:
        model, extra = from_source(ctx.settings, tokenizer, ctx.inputs.get("source"))
    model.save_pretrained(ctx.out)  # safetensors
    tokenizer.save_pretrained(ctx.out)
    c = model.config
    non_embedding = count_parameters(model, non_embedding=True)
    counts = {
        "parameters": count_parameters(model),
        "non_embedding_parameters": non_embedding,
        "layers": c.num_hidden_layers,
        "hidden": c.hidden_size,
        "vocab_size": c.vocab_size,
        "flops_per_token": flops_per_token(c, non_embedding, c.max_position_embeddings),
        "flops_per_token_formula": "6*(non_embedding_parameters + vocab*hidden) + 12*layers*hidden*max_position_embeddings",
        **extra,
    }
    log.info("init_checkpoint: %s", counts)
    return counts
