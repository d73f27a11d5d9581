"""What every model stage counts the same way: parameters, and one formula for training FLOPs.

Training FLOPs per token = 6 N + 12 L H s: the 6N rule (Kaplan et al. 2020: forward 2N,
backward 4N per token) with N the *matmul parameters*, those that multiply activations (every
linear layer, the output projection included even when tied; not the embedding lookup, not the
norms), plus attention scores and their weighted sum (PaLM, Chowdhery et al. 2022, appendix B:
12 x layers x hidden x seq_len per token) counted over the full s x s square, as PyTorch's FLOP
counter counts ``scaled_dot_product_attention`` (no halving for the causal mask).

N comes either from a Llama's ``model.*`` settings (:func:`parameters`: the cost plan before any
weight exists, and the evaluation's figures) or from a built model's linear layers
(:func:`matmul_parameters`: the initial checkpoint, a Llama or an encoder); for a Llama both
give the same number (tests/models/test_model.py).

What this module does not do: import torch (it reads what a module gives it), or count
anything but dense layers (no mixture of experts, no sparsity).
"""

from __future__ import annotations

# The formula as report.json and plan.json state it, for a whole run (tokens x per token).
FLOPS_FORMULA = "6*N*tokens + 12*layers*hidden*seq_len*tokens (N = matmul parameters; attention over the full s x s square)"
# The same per token, at a model's full context: an initial checkpoint's manifest.
FLOPS_PER_TOKEN = "6*N + 12*layers*hidden*max_position_embeddings (N = matmul parameters)"


def count_parameters(model, non_embedding: bool = False) -> int:
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


def matmul_parameters(model) -> int:
    """The parameters of a built model's linear layers (weights and biases), each tensor once:
    N of the FLOPs formula, the output projection included when tied to the embedding."""
    params = {}
    for module in model.modules():
        if type(module).__name__ == "Linear":  # torch.nn.Linear, without importing torch here
            params.update((id(p), p.numel()) for p in module.parameters(recurse=False))
    return sum(params.values())


def parameters(model: dict, vocab: int) -> dict:
    """Parameter counts of a Llama with these ``model.*`` settings (transformers' layout)."""
    h, i, L = model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"]
    heads, kv = model["num_attention_heads"], model["num_key_value_heads"]
    kv_dim = kv * (h // heads)
    attn = h * h + 2 * h * kv_dim + h * h  # q, k, v, o (no biases)
    mlp = 3 * h * i  # gate, up, down
    per_layer = attn + mlp + 2 * h  # two RMSNorm weights
    embedding = vocab * h
    head = 0 if model["tie_word_embeddings"] else vocab * h
    total = embedding + L * per_layer + h + head
    return {
        "total": total,
        "embedding": embedding,
        "non_embedding": total - embedding - head,
        "per_layer": per_layer,
        # What multiplies activations: every linear layer and the output projection (tied or not).
        "matmul": L * (attn + mlp) + vocab * h,
    }


def flops_per_token(matmul: int, layers: int, hidden: int, seq_len: int) -> dict:
    """Training FLOPs per token (forward + backward), split into its two terms."""
    attention = 12 * layers * hidden * seq_len
    total = 6 * matmul + attention
    return {"dense": 6 * matmul, "attention": attention, "total": total, "forward": total // 3}


def model_counts(model) -> dict:
    """The manifest's figures of a built model (a Llama or an encoder): parameters, shape and
    training FLOPs per token at its full context."""
    c = model.config
    return {
        "parameters": count_parameters(model),
        "non_embedding_parameters": count_parameters(model, non_embedding=True),
        "layers": c.num_hidden_layers,
        "hidden": c.hidden_size,
        "vocab_size": c.vocab_size,
        "flops_per_token": flops_per_token(matmul_parameters(model), c.num_hidden_layers, c.hidden_size, c.max_position_embeddings)["total"],
        "flops_per_token_formula": FLOPS_PER_TOKEN,
    }


def llama_flops_per_token(model: dict, vocab: int, seq_len: int) -> dict:
    """:func:`flops_per_token` of a Llama with these ``model.*`` settings."""
    return flops_per_token(parameters(model, vocab)["matmul"], model["num_hidden_layers"], model["hidden_size"], seq_len)
