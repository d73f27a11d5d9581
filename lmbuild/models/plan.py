"""Stage ``plan`` (the target ``snakemake plan``): what a run will cost, before anything trains.

From its settings alone (no data, no model weights; nothing depends on it), for the Llama that
``model.*`` describes:

* parameters, counted from the architecture (embedding, attention with grouped KV heads,
  SwiGLU MLP, RMSNorms, an untied output projection if any);
* training tokens = ``train.max_steps x batch_size x gradient_accumulation_steps x seq_len``;
* training FLOPs = tokens x (6 N + 12 L H s), the one formula of lmbuild.models.common (N the
  parameters that multiply activations; attention over the full s x s square);
* memory: fp32 weights, fp32 gradients and AdamW's two fp32 moments (16 bytes per parameter,
  as the trainer keeps them; ZeRO, Rajbhandari et al. 2020, counts the same 16 for mixed
  precision) plus activations of one micro-batch (Korthikanti et al. 2022, eq. 2:
  ``s b h (34 + 5 a s / h)`` bytes per layer in 16-bit, without recomputation, plus the fp32
  logits and their gradient);
* time and money on a named GPU at a stated model FLOPs utilisation (``plan.mfu``), for each
  GPU count in ``plan.gpus`` and the GPU count the config's resources give training.

What it does not do: measure anything, model communication, pipeline bubbles or data loading
(ideal data parallelism: G GPUs take 1/G of the time at the same MFU), or check that the model
fits a GPU beyond printing the estimate beside the GPU's memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmbuild.errors import UserError
from lmbuild.models.common import FLOPS_FORMULA, llama_flops_per_token, parameters

# Peak dense (no sparsity) bf16 tensor FLOP/s from the vendors' datasheets, memory, and an
# on-demand $/GPU-hour. Prices move; they are list prices of one public cloud each, as of
# 2025, not verified from this offline machine: set plan.price_per_gpu_hour for your own.
GPUS: dict[str, dict] = {
    "h100": {
        "name": "NVIDIA H100 SXM5 80GB", "bf16_flops": 989.4e12, "memory_gib": 80, "usd_per_hour": 2.99,
        "source": "NVIDIA H100 Tensor Core GPU datasheet (BF16 1,979 TFLOPS with sparsity = 989.4 dense); price: Lambda on-demand 8x H100 SXM, 2025",
    },
    "h200": {
        "name": "NVIDIA H200 SXM 141GB", "bf16_flops": 989.4e12, "memory_gib": 141, "usd_per_hour": 3.79,
        "source": "NVIDIA H200 datasheet (BF16 1,979 TFLOPS with sparsity); price: 2025 on-demand cloud list prices (approx.)",
    },
    "a100": {
        "name": "NVIDIA A100 SXM4 80GB", "bf16_flops": 312e12, "memory_gib": 80, "usd_per_hour": 1.79,
        "source": "NVIDIA A100 datasheet (BF16 312 TFLOPS dense); price: Lambda on-demand 8x A100 80GB SXM, 2025",
    },
    "l4": {
        "name": "NVIDIA L4 24GB", "bf16_flops": 121e12, "memory_gib": 24, "usd_per_hour": 0.71,
        "source": "NVIDIA L4 datasheet (BF16 242 TFLOPS with sparsity = 121 dense); price: Google Cloud g2-standard-4, us-central1, 2025 (approx.)",
    },
    "mi300x": {
        "name": "AMD Instinct MI300X 192GB", "bf16_flops": 1307.4e12, "memory_gib": 192, "usd_per_hour": 2.50,
        "source": "AMD Instinct MI300X datasheet (BF16 1,307.4 TFLOPS dense); price: 2025 on-demand cloud list prices (approx.)",
    },
}


def vocab_size(config: dict) -> int:
    """The vocabulary the model will have: tokenizer.vocab_size for a BPE to be trained
    (special tokens included), ``len(tokenizer)`` of a pretrained tokenizer folder."""
    tok = config["tokenizer"]
    if tok["type"] == "bpe":
        return int(tok["vocab_size"])
    from transformers import AutoTokenizer  # only here: ~2 s to import

    try:
        return len(AutoTokenizer.from_pretrained(tok["path"]))
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's path
        raise UserError(f"tokenizer.path: cannot load {tok['path']}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def memory_bytes(model: dict, vocab: int, seq_len: int, micro_batch: int, params_total: int) -> dict:
    """Training memory per GPU (no sharding), bytes."""
    h, L, a = model["hidden_size"], model["num_hidden_layers"], model["num_attention_heads"]
    s, b = seq_len, micro_batch
    activations = L * s * b * h * (34 + 5 * a * s / h) + 2 * 4 * s * b * vocab  # + fp32 logits and their grad
    out = {
        "weights": 4 * params_total,
        "gradients": 4 * params_total,
        "adamw_states": 8 * params_total,
        "activations": int(activations),
    }
    out["total"] = sum(out.values())
    return out


def plan(config: dict) -> dict:
    """The whole estimate as a JSON-able dict, from the plan stage's settings (the config's
    ``model``, ``pack``, ``train``, ``tokenizer`` and ``plan``, whose ``gpus`` holds every GPU
    count to price: lmbuild.build.stages puts the one resources give training there)."""
    p = config["plan"]
    if p["gpu"] not in GPUS:
        raise UserError(f"plan.gpu: unknown GPU {p['gpu']!r}; one of {', '.join(GPUS)}")
    gpu = GPUS[p["gpu"]]
    m, t = config["model"], config["train"]
    seq = config["pack"]["seq_len"]
    vocab = vocab_size(config)
    params = parameters(m, vocab)
    fpt = llama_flops_per_token(m, vocab, seq)
    tokens_per_step = t["batch_size"] * t["gradient_accumulation_steps"] * seq
    tokens = t["max_steps"] * tokens_per_step
    total_flops = tokens * fpt["total"]
    mem = memory_bytes(m, vocab, seq, t["batch_size"], params["total"])
    price = p["price_per_gpu_hour"] if p["price_per_gpu_hour"] is not None else gpu["usd_per_hour"]
    per_gpu_rate = gpu["bf16_flops"] * p["mfu"]
    runs = []
    for g in sorted(set(p["gpus"])):
        seconds = total_flops / (g * per_gpu_rate)
        runs.append({"gpus": g, "seconds": seconds, "hours": seconds / 3600, "gpu_hours": g * seconds / 3600, "usd": g * seconds / 3600 * price})
    return {
        "parameters": params,
        "vocab_size": vocab,
        "seq_len": seq,
        "tokens_per_step": tokens_per_step,
        "steps": t["max_steps"],
        "tokens": tokens,
        "tokens_per_parameter": tokens / params["total"],
        "flops_per_token": fpt,
        "training_flops": total_flops,
        "flops_formula": FLOPS_FORMULA,
        "memory_bytes": mem,
        "gpu": {"id": p["gpu"], **gpu, "usd_per_hour": price, "mfu": p["mfu"], "fits": mem["total"] <= gpu["memory_gib"] * 2**30},
        "runs": runs,
    }


def _si(x: float, unit: str = "") -> str:
    for div, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 172800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"


def table(est: dict) -> str:
    """The estimate as a plain-text table (what ``snakemake plan`` prints)."""
    p, f, m, g = est["parameters"], est["flops_per_token"], est["memory_bytes"], est["gpu"]
    gib = 2**30
    rows = [
        ("parameters", f"{p['total']:,} ({p['non_embedding']:,} non-embedding, {p['matmul']:,} in matmuls)"),
        ("tokens", f"{est['tokens']:,} = {est['steps']:,} steps x {est['tokens_per_step']:,} tokens/step ({est['tokens_per_parameter']:.3g} per parameter)"),
        ("FLOPs per token", f"{f['total']:,} (6N {f['dense']:,} + attention {f['attention']:,})"),
        ("training FLOPs", f"{est['training_flops']:.4g} ({_si(est['training_flops'], 'FLOP')})"),
        ("memory per GPU", f"{m['total'] / gib:.3g} GiB: weights {m['weights'] / gib:.3g}, grads {m['gradients'] / gib:.3g}, "
                           f"AdamW {m['adamw_states'] / gib:.3g}, activations {m['activations'] / gib:.3g}"
                           + ("" if g["fits"] else f" (more than the {g['memory_gib']} GiB of one {g['id']})")),
        ("GPU", f"{g['name']}: {_si(g['bf16_flops'], 'FLOP/s')} bf16 peak x MFU {g['mfu']:g}, ${g['usd_per_hour']:.2f}/GPU-hour"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += ["", f"{'GPUs':>5}  {'time':>12}  {'GPU-hours':>10}  {'cost (USD)':>11}"]
    for r in est["runs"]:
        lines.append(f"{r['gpus']:>5}  {_duration(r['seconds']):>12}  {r['gpu_hours']:>10.4g}  {r['usd']:>11.4g}")
    lines += ["", f"FLOPs: {est['flops_formula']}.", f"Source: {g['source']}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the artifact


def build(ctx) -> dict:
    """Write plan.json and plan.txt; the runner adds the manifest."""
    est = plan(ctx.settings)
    (Path(ctx.out) / "plan.json").write_text(json.dumps(est, indent=2, sort_keys=True) + "\n")
    text = table(est)
    (Path(ctx.out) / "plan.txt").write_text(text)
    return {
        "parameters": est["parameters"]["total"],
        "tokens": est["tokens"],
        "training_flops": est["training_flops"],
        "memory_gib": round(est["memory_bytes"]["total"] / 2**30, 4),
        "gpu": est["gpu"]["id"],
        **{f"hours_on_{r['gpus']}": round(r["hours"], 6) for r in est["runs"]},
        **{f"usd_on_{r['gpus']}": round(r["usd"], 4) for r in est["runs"]},
    }
