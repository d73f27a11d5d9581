"""Stage export through the runner, from a tiny Llama's trained_checkpoint (made here: a random
init with two kept steps), eval_report and shards: the HF folder, the GGUF checked against it, the
card; a kept step or the mean of the last ones; bad input in one line and no artifact."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import lm_corpus as lc
from lmbuild.errors import UserError
from lmbuild.models import init_checkpoint
from lmbuild.ship import export
from lmbuild.store import runner
from lmbuild.tokens import tokenizer

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "initializer_range": 0.2}


def fake(stage, root, key, write, counts=None):
    """An artifact of ``stage`` whose files ``write(out)`` makes, through the real runner."""
    def build(ctx):
        write(ctx.out)
        return counts or {}

    out = root / stage / key
    runner.run(build, stage=stage, key=key, settings={}, lineage={}, inputs={}, output=out)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    docs = lc.stdlib_docs(limit=30)
    tok = lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 512}), {"deduplicated": lc.write_deduplicated(root / "dedup", docs)}, root)
    init = lc.run(init_checkpoint, "init_checkpoint", lc.settings("init_checkpoint", model=TINY, pack={"seq_len": 64}), {"tokenizer": tok}, root, threads=1)

    def trained(out):  # the init's files, and steps 10 and 20 with their weights scaled by 0.5 and 1.5
        for f in init.iterdir():
            if f.is_file() and f.name != "manifest.json":
                shutil.copy(f, out / f.name)
        w = load_file(str(init / "model.safetensors"))
        for step, scale in ((10, 0.5), (20, 1.5)):
            d = out / "steps" / str(step)
            d.mkdir(parents=True)
            save_file({k: v * scale for k, v in w.items()}, str(d / "model.safetensors"))
            shutil.copy(init / "config.json", d / "config.json")
        (out / "loss_curve.csv").write_text("step,loss\n")

    kept = [{"step": s, "tokens_seen": 640 * s, "path": f"steps/{s}"} for s in (10, 20)]
    ckpt = fake("trained_checkpoint", root, "t1", trained, {"kept": kept, "tokens_seen": 25600})
    report = {"key": "e1", "checkpoints": [
        {"label": "trained_checkpoint@step-10", "headline": {"heldout_bits_per_byte": 3.0}, "extra_tasks": {}},
        {"label": "trained_checkpoint", "headline": {"heldout_bits_per_byte": 2.0, "heldout_word_perplexity": 50.0}, "extra_tasks": {}},
    ], "lineage": {}}
    ev = fake("eval_report", root, "e1", lambda out: (out / "report.json").write_text(json.dumps(report)))
    val = "".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in lc.stdlib_docs(limit=40)[30:])
    shards = fake("shards", root, "s1", lambda out: (out / "val_docs.jsonl").write_text(val))
    return {"trained_checkpoint": ckpt, "eval_report": ev, "shards": shards}


def settings(**kw):
    return lc.settings("export", export=kw, train={"keep_steps": [10, 20]})


def run(inputs, tmp_path, **kw):
    return lc.run(export, "export", settings(**kw), inputs, tmp_path, threads=1)


def test_the_trained_model_its_gguf_and_card(inputs, tmp_path):
    out = run(inputs, tmp_path, name="tiny")
    m = json.loads((out / "manifest.json").read_text())["counts"]
    assert m["files"] == sorted(["README.md", "config.json", "generation_config.json", "model.safetensors", "tiny-f16.gguf",
                                 "tokenizer.json", "tokenizer_config.json"])
    assert set(m["files"]) | {"manifest.json"} == {p.name for p in out.iterdir()}  # no loss curve, no steps/
    g = m["gguf"]
    print(f"f16 export of a random tiny Llama: agreement {g['agreement']} over {g['positions']} held-out positions")
    assert g["agreement"] >= 0.99 and g["positions"] > 100 and g["tokenizer_agrees"]
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(hf.model.embed_tokens.weight, load_file(str(inputs["trained_checkpoint"] / "model.safetensors"))["model.embed_tokens.weight"])
    card = ModelCard((out / "README.md").read_text()).data.to_dict()
    assert card["model-index"][0]["results"][0]["metrics"][0] == {"type": "bits_per_byte", "name": "held-out bits per byte", "value": 2.0}
    assert card["lmbuild"]["keys"]["trained_checkpoint"] == "t1" and card["lmbuild"]["keys"]["export"] == "test"


def test_a_kept_step_and_the_mean_of_the_last_kept_steps(inputs, tmp_path):
    step = run(inputs, tmp_path / "s", checkpoint="step-10", gguf_type="q8_0")
    c = json.loads((step / "manifest.json").read_text())["counts"]
    assert c["checkpoint"] == "step-10" and c["tokens_seen"] == 6400 and c["evaluated_as"] == "trained_checkpoint@step-10"
    assert c["gguf"]["quantized"] > 0 and c["gguf"]["agreement"] >= 0.9
    w0 = load_file(str(inputs["trained_checkpoint"] / "model.safetensors"))
    avg = run(inputs, tmp_path / "a", checkpoint="average", average_last=2, gguf=False)
    c = json.loads((avg / "manifest.json").read_text())["counts"]
    assert c["steps"] == [10, 20] and c["gguf"] is None and c["evaluated_as"] is None  # the report has no average
    w = load_file(str(avg / "model.safetensors"))
    torch.testing.assert_close(w["model.norm.weight"], w0["model.norm.weight"])  # (0.5 + 1.5) / 2 = 1
    assert "eval.average_last: 2" in (avg / "README.md").read_text()


def test_bad_input_is_one_line_and_no_artifact(inputs, tmp_path):
    enc = tmp_path / "enc"
    shutil.copytree(inputs["trained_checkpoint"], enc)
    cfg = json.loads((enc / "config.json").read_text())
    (enc / "config.json").write_text(json.dumps({**cfg, "architectures": ["ModernBertForMaskedLM"], "model_type": "modernbert"}))
    manifest = json.loads((enc / "manifest.json").read_text())
    manifest["files"].pop("config.json")  # the size changed; this test is not about damage
    (enc / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"export: .*config.json: the GGUF writer supports LlamaForCausalLM, not ModernBertForMaskedLM \(an encoder, model.objective: masked\)"):
        lc.run(export, "export", settings(), {**inputs, "trained_checkpoint": enc}, tmp_path / "e", threads=1)
    with pytest.raises(UserError, match=r"^export.average_last: 3 asks for the mean of the last 3 kept checkpoints, but the run kept 2"):
        lc.run(export, "export", {**settings(checkpoint="average"), "average_last": 3}, inputs, tmp_path / "e", threads=1)
    assert not (tmp_path / "e" / "export" / "test").exists()
