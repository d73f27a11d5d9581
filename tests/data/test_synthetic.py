"""Synthetic sources: a tiny random-weight Llama (saved here, safetensors) writes documents from
prompts; the same seed gives the same bytes, another seed others; bad input is one line."""

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import vendored

from lmbuild.build.config import validate
from lmbuild.data import raw as ingest
from lmbuild.data.files import source_name
from lmbuild.data.sources import Problems
from lmbuild.data.synthetic import read_synthetic, with_teacher
from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A 1-layer Llama with random weights and a 300-token BPE trained on the KJV excerpt."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmbuild.tokens.tokenizer import train_bpe

    folder = tmp_path_factory.mktemp("teacher")
    tok = train_bpe(iter(vendored.text("kjv_head.txt.gz").splitlines()[:400]), 300, 2)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=48, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def source(folder, prompts="prompts.txt", **settings) -> dict:
    """A validated data.sources entry (defaults filled), teacher folder resolved as raw's job does."""
    src = {"type": "synthetic", "model": {"path": str(folder)}, "prompts": prompts, "max_new_tokens": 12, "batch_size": 2, **settings}
    return with_teacher(validate({"data": {"sources": [src]}})["data"]["sources"][0], 0, {})


def generated(src: dict, skipped: Counter | None = None) -> list:
    """The source's documents, as raw reads them."""
    return list(read_synthetic(src, 0, source_name(src), Problems(src, 0, skipped)))


@pytest.fixture
def prompts(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "prompts.txt"
    path.write_text("In the beginning\n\nAnd God said\nThe earth\n")
    return path


def test_documents_per_prompt_with_their_prompt_and_teacher(teacher, prompts):
    skipped = Counter()
    out = generated(source(teacher, per_prompt=2), skipped)
    assert len(out) + skipped["empty_generation"] == 6 and len(out) >= 4
    ids = [d[0] for d in out]
    assert set(ids) <= {f"synthetic:prompts.txt:prompts.txt:{line}:{j}" for line in (1, 3, 4) for j in (0, 1)}
    doc_id, text, meta = out[0]
    assert text.strip() and not text.startswith("In the beginning")  # the generation only
    assert meta["prompt"] == {1: "In the beginning", 3: "And God said", 4: "The earth"}[meta["prompt_line"]]
    assert meta["teacher"].startswith("sha256:") and len(meta["teacher"]) == 71
    assert meta["sampling"] == {"per_prompt": 2, "max_new_tokens": 12, "temperature": 1.0, "seed": 0, "batch_size": 2}
    assert 0 < meta["new_tokens"] <= 12


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(teacher, prompts):
    first = generated(source(teacher, per_prompt=2))
    assert generated(source(teacher, per_prompt=2)) == first
    assert [d[1] for d in generated(source(teacher, per_prompt=2, seed=1))] != [d[1] for d in first]
    # Greedy decoding (temperature 0) does not depend on the seed; two samples of a prompt are equal.
    greedy = [d[1] for d in generated(source(teacher, per_prompt=2, temperature=0))]
    assert greedy == [d[1] for d in generated(source(teacher, per_prompt=2, temperature=0, seed=7))]
    assert greedy[0] == greedy[1]


def test_raw_writes_the_documents_with_their_metadata(teacher, prompts, tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "work").mkdir()
    src = {"type": "synthetic", "name": "tutor", "model": {"path": str(teacher)}, "prompts": "prompts.txt", "max_new_tokens": 12}
    sources = [*validate({"data": {"sources": [{"type": "embedded", "parts": ["shakespeare"], "max_docs": 2}, src]}})["data"]["sources"]]
    ctx = StageContext("raw", "test", {"sources": sources, "shards": 2, "files_per_job": 8}, {}, tmp_path / "raw", tmp_path / "work")
    counts = ingest.build(ctx)
    rows = [r for p in sorted((tmp_path / "raw").glob("shard-*.parquet")) for r in pq.read_table(p).to_pylist() if r["source"] == "tutor"]
    assert counts["sources"][1]["documents"] == len(rows) > 0
    meta = json.loads(rows[0]["metadata"])
    assert meta["kind"] == "prose" and meta["prompt_file"] == "prompts.txt" and meta["teacher"].startswith("sha256:")


def test_bad_input_is_one_line_naming_the_key(teacher, prompts, tmp_path):
    prompts.write_text("\n  \n")
    with pytest.raises(UserError, match=r"^data.sources\[0\].prompts: prompts.txt: no prompts \(one prompt a line\)$"):
        generated(source(teacher))
    prompts.write_text("In the beginning\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"^data.sources\[0\].model: .*broken: does not load as a causal language model"):
        generated(source(broken))
    with pytest.raises(UserError, match=r"^data.sources\[0\].model.path: .*nowhere: no such folder$"):
        source(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"^data.sources\[0\].max_new_tokens: prompts.txt:1: .* exceed the teacher's 48 positions$"):
        generated(source(teacher, max_new_tokens=47))


def test_a_pickled_model_is_not_loaded(teacher, prompts, tmp_path):
    """safetensors only: a folder whose weights are a pickle (pytorch_model.bin) does not load."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = Path(shutil.copytree(teacher, tmp_path / "pickled"))
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="does not load"):
        generated(source(folder))
