"""The tokenizer stage: byte-level BPE trained on real text, and pretrained tokenizers copied."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest


from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild.tokens import tokenizer  # noqa: E402
from lmbuild.errors import UserError  # noqa: E402

# Code with tabs, trailing spaces, blank runs and non-ASCII; prose in several scripts.
UNSEEN = "\tdef f(x):  \r\n\t\treturn x  # naïve café\n\n\n  Ünïcödé: Καλημέρα, Здравствуйте, 你好, こんにちは 👋🏽 e\u0301\u00a0end\x00\x7f "


def _deduplicated(tmp_path_factory, docs, shards=2) -> Path:
    return lc.write_deduplicated(tmp_path_factory.mktemp("dedup"), docs, shards)


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory):
    return _deduplicated(tmp_path_factory, lc.stdlib_docs(limit=80), shards=3)


@pytest.fixture(scope="module")
def bpe(stdlib_corpus, tmp_path_factory):
    settings = lc.settings("tokenizer", tokenizer={"vocab_size": 512})
    return lc.run(tokenizer, "tokenizer", settings, {"deduplicated": stdlib_corpus}, tmp_path_factory.mktemp("art"))


def test_bpe_artifact_loads_with_autotokenizer(bpe):
    tok = AutoTokenizer.from_pretrained(bpe)
    assert len(tok) == 512
    assert tok.eos_token == tok.bos_token == tok.pad_token == tokenizer.EOS
    assert tok.eos_token_id == 0
    assert tok("x = 1")["input_ids"][-1] != tok.eos_token_id  # nothing is added on encode
    counts = json.loads((bpe / "manifest.json").read_text())["counts"]
    assert counts["vocab_size"] == 512 and counts["train_documents"] == 80
    assert counts["train_bytes"] > 100_000
    assert 0.1 < counts["tokens_per_byte"] < 1.0


def test_bpe_round_trips_real_code_exactly(bpe):
    tok = AutoTokenizer.from_pretrained(bpe)
    docs = lc.stdlib_docs()
    # Files it never saw, and every file with non-ASCII characters (shlex.py, zipfile.py, ...).
    texts = [d["text"] for i, d in enumerate(docs) if 80 <= i < 110 or not d["text"].isascii()]
    assert sum(not t.isascii() for t in texts) >= 5
    for text in texts + [UNSEEN, " leading space", "", "<|endoftext|> inside text"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text


def test_bpe_round_trips_prose(bpe):
    tok = AutoTokenizer.from_pretrained(bpe)
    for doc in lc.shakespeare_docs(chunk_lines=500)[:20]:
        assert tok.decode(tok(doc["text"])["input_ids"]) == doc["text"]


def test_bpe_compresses_what_it_was_trained_on(bpe):
    tok = AutoTokenizer.from_pretrained(bpe)
    text = lc.stdlib_docs(limit=1)[0]["text"]
    assert len(tok(text)["input_ids"]) < 0.7 * len(text.encode())  # 256 byte tokens would give 1.0


def test_max_train_docs(stdlib_corpus, tmp_path):
    settings = lc.settings("tokenizer", tokenizer={"vocab_size": 300, "max_train_docs": 5})
    out = lc.run(tokenizer, "tokenizer", settings, {"deduplicated": stdlib_corpus}, tmp_path)
    assert json.loads((out / "manifest.json").read_text())["counts"]["train_documents"] == 5


def test_missing_shards_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    lc.seal(tmp_path / "empty", {"stage": "deduplicated"})  # complete, but without shards
    with pytest.raises(UserError, match="shard-"):
        lc.run(tokenizer, "tokenizer", lc.settings("tokenizer"), {"deduplicated": tmp_path / "empty"}, tmp_path)
    assert not (tmp_path / "tokenizer" / "test").exists()


def test_pretrained_copies_a_local_folder(bpe, tmp_path):
    settings = lc.settings("tokenizer", tokenizer={"type": "pretrained", "path": str(bpe)})
    out = lc.run(tokenizer, "tokenizer", settings, {}, tmp_path)
    a, b = AutoTokenizer.from_pretrained(bpe), AutoTokenizer.from_pretrained(out)
    assert a.get_vocab() == b.get_vocab() and b.eos_token_id == a.eos_token_id
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["vocab_size"] == 512 and counts["tokens_per_byte"] is None


def test_pretrained_missing_path_names_the_key(tmp_path):
    settings = lc.settings("tokenizer", tokenizer={"type": "pretrained", "path": str(tmp_path / "nope")})
    with pytest.raises(UserError, match="tokenizer.path"):
        lc.run(tokenizer, "tokenizer", settings, {}, tmp_path)


def test_pretrained_without_eos_names_the_key(bpe, tmp_path):
    tok = AutoTokenizer.from_pretrained(bpe)
    no_eos = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer)
    assert no_eos.eos_token_id is None
    no_eos.save_pretrained(tmp_path / "no_eos")
    settings = lc.settings("tokenizer", tokenizer={"type": "pretrained", "path": str(tmp_path / "no_eos")})
    with pytest.raises(UserError, match="tokenizer.path.*no eos"):
        lc.run(tokenizer, "tokenizer", settings, {}, tmp_path)


def _mistral_tokenizer_model() -> Path | None:
    """mistral-common's bundled Llama SentencePiece model, found without importing the package."""
    if not all(importlib.util.find_spec(m) for m in ("sentencepiece", "google.protobuf")):
        return None
    spec = importlib.util.find_spec("mistral_common")
    if spec is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "tokenizer.model.v1"
    return path if path.exists() else None


@pytest.mark.skipif(_mistral_tokenizer_model() is None, reason="needs mistral-common (its bundled tokenizer.model.v1), sentencepiece and protobuf")
def test_pretrained_llama_sentencepiece(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    shutil.copy(_mistral_tokenizer_model(), folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    settings = lc.settings("tokenizer", tokenizer={"type": "pretrained", "path": str(folder)})
    out = lc.run(tokenizer, "tokenizer", settings, {}, tmp_path)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 32000 and tok.eos_token == "</s>"
    text = "ROMEO: But soft, what light through yonder window breaks?"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
