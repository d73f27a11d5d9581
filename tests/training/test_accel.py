"""lmbuild.training.accel: the auto choices fall back to plain PyTorch without a GPU; explicit fast choices the machine cannot run are config errors."""

from __future__ import annotations

import pytest
import torch

from lmbuild.training import accel
from lmbuild.errors import UserError


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_cpu_fallbacks(no_gpu, monkeypatch):
    monkeypatch.setattr(accel, "_installed", lambda name: True)  # installed, but no GPU
    assert accel.kernels("auto") == "torch" and accel.kernels("torch") == "torch"
    assert accel.attention("auto") == "sdpa" and accel.attention("eager") == "eager"
    assert accel.eval_dtype("auto") == "float32" and accel.eval_dtype("bfloat16") == "bfloat16"


def test_gpu_choices_follow_what_is_installed(gpu, monkeypatch):
    monkeypatch.setattr(accel, "_installed", lambda name: name == "liger_kernel")
    assert accel.kernels("auto") == "liger" and accel.attention("auto") == "sdpa"
    assert accel.eval_dtype("auto") == "bfloat16" and accel.eval_dtype("float32") == "float32"
    with pytest.raises(UserError, match=r"^config: train.attention: flash_attention_2 needs the flash-attn package"):
        accel.attention("flash_attention_2")


def test_explicit_fast_choices_without_a_gpu_are_config_errors(no_gpu):
    with pytest.raises(UserError, match=r"^config: train.kernels: liger needs a GPU"):
        accel.kernels("liger")
    with pytest.raises(UserError, match=r"^config: train.attention: flash_attention_2 needs a GPU"):
        accel.attention("flash_attention_2")


def test_liger_config_fuses_the_loss_without_the_plain_cross_entropy():
    assert accel.LIGER_CONFIG["fused_linear_cross_entropy"] and not accel.LIGER_CONFIG["cross_entropy"]
