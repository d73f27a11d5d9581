"""model.init pretrained / downscale / upscale: every new layer is a copy of the source layer its plan names."""

from __future__ import annotations

import json

import pytest
import torch


from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.models import surgery as init, init_checkpoint as model  # noqa: E402
from lmbuild.tokens import tokenizer
from lmbuild.errors import UserError  # noqa: E402

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
N = 4  # source layers


def _tokenizer(root, docs, vocab=512):
    dedup = lc.write_deduplicated(root / "dedup", docs)
    return lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": vocab}), {"deduplicated": dedup}, root)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return _tokenizer(tmp_path_factory.mktemp("tok"), lc.stdlib_docs(limit=30))


def _settings(**model_settings):
    return lc.settings("init_checkpoint", model={**TINY, **model_settings}, pack={"seq_len": 32})


@pytest.fixture(scope="module")
def source(tok_dir, tmp_path_factory):
    """A 4-layer checkpoint whose layers differ in every tensor (norms scaled by layer), untied."""
    root = tmp_path_factory.mktemp("src")
    out = lc.run(model, "init_checkpoint", _settings(num_hidden_layers=N, tie_word_embeddings=False), {"tokenizer": tok_dir}, root, key="src", threads=1)
    state = load_file(out / "model.safetensors")
    for name in state:
        if name.startswith("model.layers.") and "norm" in name:
            state[name] = state[name] * (2 + int(name.split(".")[2]))
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return out


def _build(tok_dir, root, source_dir, key="new", **model_settings):
    settings = _settings(tie_word_embeddings=False, source={"path": str(source_dir)}, **model_settings)
    return lc.run(model, "init_checkpoint", settings, {"tokenizer": tok_dir}, root, key=key, threads=1)


CASES = [
    ({"init": "pretrained", "num_hidden_layers": 4}, [0, 1, 2, 3]),
    ({"init": "downscale", "downscale_keep": 1, "num_hidden_layers": 2}, [0, 3]),
    ({"init": "downscale", "layer_plan": [0, 2, 3], "num_hidden_layers": 3}, [0, 2, 3]),
    ({"init": "upscale", "upscale_drop": 1, "num_hidden_layers": 6}, [0, 1, 2, 1, 2, 3]),
    ({"init": "upscale", "layer_plan": [3, 2, 1, 0, 0, 1, 2], "num_hidden_layers": 7}, [3, 2, 1, 0, 0, 1, 2]),
]


@pytest.mark.parametrize("model_settings,plan", CASES, ids=[c[0]["init"] + "-" + "-".join(map(str, c[1])) for c in CASES])
def test_every_layer_is_a_copy_of_its_planned_source_layer(tok_dir, source, tmp_path, model_settings, plan):
    out = _build(tok_dir, tmp_path, source, **model_settings)
    src, new = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    # Every new layer equals the source layer its plan names, and no other source layer.
    for j, i in enumerate(plan):
        names = [k for k in src if k.startswith(f"model.layers.{i}.")]
        assert len(names) == 9
        for name in names:
            new_name = name.replace(f"model.layers.{i}.", f"model.layers.{j}.")
            assert torch.equal(new[new_name], src[name]), new_name
            for other in set(range(N)) - {i}:
                assert not torch.equal(new[new_name], src[name.replace(f".{i}.", f".{other}.", 1)])
    assert {k for k in new if not k.startswith("model.layers.")} == {k for k in src if not k.startswith("model.layers.")}
    assert all(torch.equal(new[k], src[k]) for k in new if not k.startswith("model.layers."))
    assert len(new) == len(src) - 9 * N + 9 * len(plan)

    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == len(plan)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["layer_plan"] == plan and counts["source_layers"] == N and counts["layers"] == len(plan)
    assert counts["init"] == model_settings["init"] and counts["source"] == {"path": str(source)}

    m = AutoModelForCausalLM.from_pretrained(out)
    assert [layer.self_attn.layer_idx for layer in m.model.layers] == list(range(len(plan)))
    # Duplicated layers are distinct tensors (no shared storage), also in the built model.
    pointers = [p.data_ptr() for p in m.parameters()]
    assert len(set(pointers)) == len(pointers)
    tok = AutoTokenizer.from_pretrained(out)
    prompt = tok("def main():", return_tensors="pt")
    gen = m.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] == prompt["input_ids"].shape[1] + 6


def test_duplicated_layers_are_independent_parameters(tok_dir, source):
    settings = _settings(tie_word_embeddings=False, source={"path": str(source)}, init="upscale", upscale_drop=1, num_hidden_layers=6)
    m, _ = init.from_source(settings, AutoTokenizer.from_pretrained(tok_dir))
    a, b = m.model.layers[1].mlp.up_proj.weight, m.model.layers[3].mlp.up_proj.weight  # both source layer 1
    assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    with torch.no_grad():
        a.add_(1.0)
    assert not torch.equal(a, b)
    assert [layer.self_attn.layer_idx for layer in m.model.layers] == list(range(6))


def test_tied_source_stays_tied(tok_dir, tmp_path):
    src = lc.run(model, "init_checkpoint", _settings(num_hidden_layers=2), {"tokenizer": tok_dir}, tmp_path, key="tied", threads=1)
    out = lc.run(model, "init_checkpoint", _settings(num_hidden_layers=4, init="upscale", upscale_drop=0, source={"path": str(src)}), {"tokenizer": tok_dir}, tmp_path, key="up", threads=1)
    m = AutoModelForCausalLM.from_pretrained(out)
    assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert torch.equal(m.model.embed_tokens.weight, load_file(src / "model.safetensors")["model.embed_tokens.weight"])


def _fails(tok_dir, root, source_dir, pattern, **model_settings):
    with pytest.raises(UserError, match=pattern):
        _build(tok_dir, root, source_dir, key="bad", **model_settings)
    assert not (root / "init_checkpoint" / "bad").exists()  # no artifact, not even half of one


def test_vocabulary_size_mismatch_stops(source, tmp_path):
    other = _tokenizer(tmp_path, lc.stdlib_docs(limit=30), vocab=400)
    _fails(other, tmp_path, source, r"^model.source: the source's vocabulary has 512 tokens .* this build's tokenizer has 400;", init="pretrained", num_hidden_layers=4)


def test_same_size_different_tokens_stops(source, tmp_path):
    other = _tokenizer(tmp_path, lc.stdlib_docs(limit=60)[30:], vocab=512)
    _fails(other, tmp_path, source, r"^model.source: the source's tokenizer .* differs from this build's \(token ", init="pretrained", num_hidden_layers=4)


def test_architecture_mismatch_stops(tok_dir, source, tmp_path):
    _fails(tok_dir, tmp_path, source, r"^model.hidden_size: 64 does not match the source's 32 \(.*config.json\)", init="pretrained", num_hidden_layers=4, hidden_size=64)
    _fails(tok_dir, tmp_path, source, r"^model.num_key_value_heads: 4 does not match", init="pretrained", num_hidden_layers=4, num_key_value_heads=4)
    _fails(tok_dir, tmp_path, source, r"^model.num_hidden_layers: 4, but model.init upscale of the 4-layer source gives 6 layers", init="upscale", upscale_drop=1, num_hidden_layers=4)


def test_pickles_and_missing_sources_are_refused(tok_dir, source, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((source / "config.json").read_text())
    torch.save(load_file(source / "model.safetensors"), pickled / "pytorch_model.bin")
    _fails(tok_dir, tmp_path, pickled, r"only pickled weights \(pytorch_model.bin\), which are not loaded", init="pretrained", num_hidden_layers=4)
    _fails(tok_dir, tmp_path, tmp_path / "nowhere", r"^model.source.path: .*nowhere: no such folder", init="pretrained", num_hidden_layers=4)


def test_hub_source_fails_clearly_offline(tok_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = _settings(init="pretrained", num_hidden_layers=4, source={"hub": "nobody/no-such-model", "revision": "main"})
    with pytest.raises(UserError, match=r"^model.source.hub: cannot fetch 'nobody/no-such-model'"):
        init.from_source(settings, AutoTokenizer.from_pretrained(tok_dir))
