"""Hardware-dependent speed choices of training and evaluation: bf16, kernels, attention, eval dtype.

Each ``auto`` setting resolves to the fast path where the hardware (and the optional package)
is present, and to plain PyTorch elsewhere: that is the CPU fallback, so CI never needs a GPU.
An explicit fast choice the machine cannot run is a config error naming the key, never
silently replaced. The resolved choices go into the stage's counts and report.

What it does not do: install anything (liger-kernel is the ``gpu`` extra; flash-attn builds
against one CUDA/torch pair and is left to the user), or pick settings that change the model
(those are ``train``/``eval`` settings and enter the artifact keys).
"""

from __future__ import annotations

import importlib.util

import torch

from lmbuild.errors import UserError

# Liger's Llama kernels: the fused linear + cross-entropy computes the loss chunk by chunk
# from the last hidden states, so the fp32 logits (batch x seq x vocab) never exist.
LIGER_CONFIG = {"fused_linear_cross_entropy": True, "cross_entropy": False, "rms_norm": True, "swiglu": True, "rope": True}


def bf16_available() -> bool:
    """Whether the device does bf16 arithmetic natively (CPU: avx512_bf16 or AMX).

    Without those instructions CPU bf16 is emulated and slower than fp32.
    """
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def use_bf16(setting) -> bool:
    return bf16_available() if setting == "auto" else bool(setting)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def kernels(setting: str) -> str:
    """``train.kernels`` resolved: ``liger`` or ``torch``."""
    ready = torch.cuda.is_available() and _installed("liger_kernel")
    if setting == "auto":
        return "liger" if ready else "torch"
    if setting == "liger" and not ready:
        missing = "a GPU" if not torch.cuda.is_available() else "liger-kernel (pip install 'lmbuild[gpu]')"
        raise UserError(f"config: train.kernels: liger needs {missing}; use auto or torch")
    return setting


def attention(setting: str) -> str:
    """``train.attention`` resolved: a transformers ``attn_implementation``."""
    ready = torch.cuda.is_available() and _installed("flash_attn")
    if setting == "auto":
        return "flash_attention_2" if ready else "sdpa"
    if setting == "flash_attention_2" and not ready:
        missing = "a GPU" if not torch.cuda.is_available() else "the flash-attn package"
        raise UserError(f"config: train.attention: flash_attention_2 needs {missing}; use auto or sdpa")
    return setting


def eval_dtype(setting: str) -> str:
    """``eval.dtype`` resolved: ``bfloat16`` or ``float32``.

    auto is bf16 on a GPU with bf16 only. On a CPU fp32, also where the CPU has avx512_bf16
    (there bf16 scored ~1.8x faster, bench/README.md): a CPU run's scores then do not depend on
    which CPU ran it, and evaluation is not a CPU run's bottleneck; ``bfloat16`` opts in.
    """
    if setting == "auto":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    return setting
