"""The shards stage: document-level validation split, EOS-separated packing, .bin layout."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch


from transformers import AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
from lmbuild import pack, tokenizer  # noqa: E402
from lmbuild.errors import UserError  # noqa: E402

SEQ = 32
VAL = 0.1


@pytest.fixture(scope="module")
def docs():
    out = lc.stdlib_docs(limit=40)
    # A document that quotes the special token must not gain an extra boundary.
    out.append({"id": "zz/quotes-eos", "text": 'EOS = "<|endoftext|>"\n' * 3, "source": "test"})
    return out


@pytest.fixture(scope="module")
def tok_dir(docs, tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    dedup = lc.write_deduplicated(root / "dedup", docs)
    return lc.run(tokenizer, "tokenizer", lc.settings("tokenizer", tokenizer={"vocab_size": 512}), {"deduplicated": dedup}, root)


def _pack(docs, tok_dir, root, shards=3, **pack_settings):
    dedup = lc.write_deduplicated(root / "dedup", docs, shards)
    settings = lc.settings("shards", pack={"seq_len": SEQ, "val_fraction": VAL, **pack_settings})
    return lc.run(pack, "shards", settings, {"deduplicated": dedup, "tokenizer": tok_dir}, root)


@pytest.fixture(scope="module")
def shards(docs, tok_dir, tmp_path_factory):
    return _pack(docs, tok_dir, tmp_path_factory.mktemp("pack"))


def test_layout_and_meta(shards):
    meta = json.loads((shards / "meta.json").read_text())
    counts = json.loads((shards / "manifest.json").read_text())["counts"]
    assert meta["dtype"] == "uint16" and meta["seq_len"] == SEQ and meta["vocab_size"] == 512 and meta["eos_token_id"] == 0
    for split in ("train", "val"):
        assert meta[f"{split}_blocks"] > 0 and meta[f"{split}_documents"] > 0
        assert meta[f"{split}_tokens"] == meta[f"{split}_blocks"] * SEQ
        assert (shards / f"{split}.bin").stat().st_size == meta[f"{split}_tokens"] * 2
        assert counts[f"{split}_blocks"] == meta[f"{split}_blocks"]
    assert meta["train_documents"] + meta["val_documents"] == 41
    assert counts["tokens_per_second"] > 0

    data = pack.PackedBlocks(shards / "train.bin")
    assert len(data) == meta["train_blocks"]
    item = data[len(data) - 1]
    assert item["input_ids"].shape == (SEQ,) and item["input_ids"].dtype == torch.long
    assert torch.equal(item["input_ids"], item["labels"])
    raw = np.fromfile(shards / "train.bin", dtype="<u2").reshape(-1, SEQ)
    assert torch.equal(item["input_ids"], torch.from_numpy(raw[-1].astype(np.int64)))


def test_stream_is_documents_plus_eos_minus_tail(shards, docs, tok_dir):
    """Each split is exactly its documents' tokens, each followed by EOS, cut to whole blocks."""
    tok = AutoTokenizer.from_pretrained(tok_dir)
    val_ids = {json.loads(line)["id"] for line in (shards / "val_docs.jsonl").read_text().splitlines()}
    counts = json.loads((shards / "manifest.json").read_text())["counts"]
    for split in ("train", "val"):
        expected = []
        for d in sorted(docs, key=lambda d: d["id"]):
            if (d["id"] in val_ids) == (split == "val"):
                expected += tok(d["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"] + [tok.eos_token_id]
        got = np.fromfile(shards / f"{split}.bin", dtype="<u2")
        assert len(got) == len(expected) - counts[f"{split}_dropped_tokens"]
        assert 0 <= counts[f"{split}_dropped_tokens"] < SEQ
        assert got.tolist() == expected[: len(got)]
    # EOS appears once per document (the quoted special token stays text), and decodes back.
    train = np.fromfile(shards / "train.bin", dtype="<u2")
    n_docs = json.loads((shards / "meta.json").read_text())["train_documents"]
    assert (train == tok.eos_token_id).sum() in (n_docs, n_docs - 1)  # the last EOS may be in the tail
    assert "<|endoftext|>\n" in tok.decode(train.tolist())


def test_val_split_is_by_id_hash_and_independent_of_order(shards, docs, tok_dir, tmp_path):
    val = [json.loads(line) for line in (shards / "val_docs.jsonl").read_text().splitlines()]
    by_id = {d["id"]: d["text"] for d in docs}
    assert all(by_id[v["id"]] == v["text"] for v in val)
    assert {v["id"] for v in val} == {i for i in by_id if pack.hash_fraction(i) < VAL}

    # Same documents, shuffled into a different number of shards: same validation documents.
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    again = _pack(shuffled, tok_dir, tmp_path, shards=5)
    val_again = [json.loads(line)["id"] for line in (again / "val_docs.jsonl").read_text().splitlines()]
    assert sorted(val_again) == sorted(v["id"] for v in val)


def test_repeat_build_is_identical(shards, docs, tok_dir, tmp_path):
    again = _pack(docs, tok_dir, tmp_path)
    for name in ("train.bin", "val.bin", "meta.json", "val_docs.jsonl"):
        assert (again / name).read_bytes() == (shards / name).read_bytes()


def test_at_least_one_validation_document(docs, tok_dir, tmp_path):
    out = _pack(docs, tok_dir, tmp_path, val_fraction=1e-9)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["val_documents"] == 1 and meta["val_blocks"] > 0
    lowest = min((d["id"] for d in docs), key=pack.hash_fraction)
    assert json.loads((out / "val_docs.jsonl").read_text())["id"] == lowest


def test_corpus_too_small_for_seq_len(tok_dir, tmp_path):
    tiny = [{"id": f"d{i}", "text": "x = 1\n", "source": "test"} for i in range(20)]
    with pytest.raises(UserError, match="too small.*pack.seq_len"):
        _pack(tiny, tok_dir, tmp_path)
    assert not (tmp_path / "shards" / "test").exists()


def test_single_document_is_a_user_error(docs, tok_dir, tmp_path):
    with pytest.raises(UserError, match="at least 2"):
        _pack(docs[:1], tok_dir, tmp_path, shards=1)


def test_uint32_for_large_vocabularies(tmp_path):
    assert pack.token_dtype(65536) == np.dtype("<u2") and pack.token_dtype(65537) == np.dtype("<u4")
    ids = np.arange(70000, 70000 + 4 * 8, dtype="<u4")
    ids.tofile(tmp_path / "train.bin")
    data = pack.PackedBlocks(tmp_path / "train.bin", seq_len=8, dtype="uint32")
    assert len(data) == 4 and data[3]["input_ids"][-1].item() == 70000 + 31
