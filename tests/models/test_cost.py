"""lmbuild.models.plan (and the one FLOPs formula, lmbuild.models.common): the plan's counts against the
real model and PyTorch's FLOP counter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from lmbuild.build.config import validate
from lmbuild.build.stages import STAGES
from lmbuild.models import common, plan as cost
from lmbuild.errors import UserError

from conftest import ROOT


def smoke_config() -> dict:
    return validate(yaml.safe_load((ROOT / "tests" / "smoke.yaml").read_text()))


def llama(model: dict, vocab: int, attn: str = "eager") -> LlamaForCausalLM:
    """The model lmbuild.models.init_checkpoint builds for these settings (same LlamaConfig fields)."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=model["hidden_size"], intermediate_size=model["intermediate_size"],
        num_hidden_layers=model["num_hidden_layers"], num_attention_heads=model["num_attention_heads"],
        num_key_value_heads=model["num_key_value_heads"], max_position_embeddings=model["max_position_embeddings"],
        tie_word_embeddings=model["tie_word_embeddings"], attn_implementation=attn,
    ))


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_matches_the_model(tied):
    c = smoke_config()
    c["model"]["tie_word_embeddings"] = tied
    vocab = cost.vocab_size(c)
    model = llama(c["model"], vocab)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert common.parameters(c["model"], vocab)["total"] == sum(unique.values())
    assert common.parameters(c["model"], vocab)["matmul"] == common.matmul_parameters(model)  # both counts of N agree


@pytest.mark.parametrize("name", ["smoke", "default"])
def test_flops_match_pytorch_flop_counter(name):
    """Forward + backward of one batch, counted by torch.utils.flop_counter, against
    tokens x (6N + 12 L H s).

    Tolerance 0.1% (on torch 2.13 the counts are equal): the counter counts matmuls as the
    formula does (2 FLOPs per multiply-add forward, twice that backward), and the attention
    matmuls over the full s x s square; what both leave out are the elementwise ops (RMSNorm,
    RoPE, SiLU, softmax, the loss). Eager attention, because the counter has no formula for
    CPU's fused SDPA kernel (it counts 0 for it, so only the 6N part would match).
    """
    c = smoke_config() if name == "smoke" else validate({})
    vocab = cost.vocab_size(c)
    seq, batch = c["pack"]["seq_len"], 2
    model = llama(c["model"], vocab)
    ids = torch.randint(0, vocab, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    measured = counter.get_total_flops()
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    fpt = common.llama_flops_per_token(c["model"], vocab, seq)
    assert measured == pytest.approx(batch * seq * fpt["total"], rel=1e-3), (measured, by_op)
    # The split too: linear layers (aten.mm) are the 6N term, attention (aten.bmm) the rest.
    assert by_op["aten.mm"] == pytest.approx(batch * seq * fpt["dense"], rel=1e-3)
    assert by_op["aten.bmm"] == pytest.approx(batch * seq * fpt["attention"], rel=1e-3)


def test_plan_figures():
    c = validate({"plan": {"gpu": "a100", "mfu": 0.5, "gpus": [1, 4]}, "resources": {"trained_checkpoint": {"gpu": 2}}})
    est = cost.plan(STAGES["plan"].settings(c))  # the stage's settings: plan.gpus with the resources' count
    t = c["train"]
    assert est["tokens"] == t["max_steps"] * t["batch_size"] * t["gradient_accumulation_steps"] * c["pack"]["seq_len"]
    assert est["training_flops"] == est["tokens"] * est["flops_per_token"]["total"]
    assert [r["gpus"] for r in est["runs"]] == [1, 2, 4]  # the resources' GPU count is priced too
    one = est["runs"][0]
    assert one["seconds"] == pytest.approx(est["training_flops"] / (312e12 * 0.5))
    assert one["usd"] == pytest.approx(one["hours"] * 1.79)
    assert est["runs"][2]["seconds"] == pytest.approx(one["seconds"] / 4)
    assert est["runs"][2]["usd"] == pytest.approx(one["usd"])  # ideal data parallel: same GPU-hours
    m = est["memory_bytes"]
    assert m["weights"] == 4 * est["parameters"]["total"] and m["adamw_states"] == 2 * m["weights"]
    assert m["total"] == sum(v for k, v in m.items() if k != "total")
    text = cost.table(est)
    assert "A100" in text and f"{est['tokens']:,}" in text


def test_unknown_gpu_is_a_user_error():
    with pytest.raises(UserError, match=r"plan\.gpu"):
        cost.plan(STAGES["plan"].settings(validate({"plan": {"gpu": "tpu9"}})))


def test_plan_target_is_quick_and_trains_nothing(tmp_path):
    """`snakemake plan` builds artifacts/plan/<key> only, prints the table, and reruns nothing."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(ROOT / "tests" / "smoke.yaml"),
           "--cores", "1", "plan"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "training FLOPs" in out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir() if not p.name.startswith("_")) == ["plan"]
    (folder,) = (tmp_path / "artifacts" / "plan").iterdir()
    est = json.loads((folder / "plan.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"] == folder.name and manifest["counts"]["tokens"] == est["tokens"]
    dry = subprocess.run([*cmd, "-n"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "build_plan" not in dry.stdout
