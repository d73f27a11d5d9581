"""The shards stage: document-level validation split, EOS-separated packing per shard and source, the index."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch


from transformers import AutoTokenizer  # noqa: E402

import lm_corpus as lc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from lmbuild.tokens import blocks, shards as pack, tokenizer  # noqa: E402
from lmbuild.store.runner import StageContext  # noqa: E402
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


def _index(art):
    return json.loads((art / "index.json").read_text())


def _bin(art, entry):
    return np.fromfile(art / entry["path"], dtype="<u2")


def test_layout_index_and_meta(shards):
    meta = json.loads((shards / "meta.json").read_text())
    index = _index(shards)
    counts = json.loads((shards / "manifest.json").read_text())["counts"]
    assert meta["dtype"] == "uint16" and meta["seq_len"] == SEQ and meta["vocab_size"] == 512 and meta["eos_token_id"] == 0
    assert index["tokenizer"] == "test" and index["seq_len"] == SEQ  # the tokenizer artifact's key
    assert [s["shard"] for s in index["shards"]] == [f"shard-{i:05d}.parquet" for i in range(3)]
    for split in ("train", "val"):
        files = [e for e in index["files"] if e["split"] == split]
        assert meta[f"{split}_blocks"] == sum(e["blocks"] for e in files) > 0
        assert meta[f"{split}_documents"] == sum(e["documents"] for e in files) > 0
        assert meta[f"{split}_tokens"] == meta[f"{split}_blocks"] * SEQ
        assert counts[f"{split}_blocks"] == meta[f"{split}_blocks"]
        for e in files:
            assert (shards / e["path"]).stat().st_size == e["tokens"] * 2 == e["blocks"] * SEQ * 2
    assert meta["train_documents"] + meta["val_documents"] == 41
    # Both sources are packed apart and counted in the index and the manifest.
    assert set(index["sources"]) == {"python_stdlib", "test"} == set(counts["tokens_per_source"])
    assert sum(r["blocks"] for r in index["shards"]) == meta["train_blocks"] + meta["val_blocks"]
    assert counts["tokens_per_second"] > 0 and counts["parts"] == 3
    # Per-source statistics: every document with its eos, and the data card over them.
    stats = json.loads((shards / "stats.json").read_text())
    assert stats == counts["stats"] and stats["*"]["documents"] == 41
    assert stats["*"]["tokens"]["total"] == sum(counts[f"{sp}_{k}"] for sp in ("train", "val") for k in ("tokens", "dropped_tokens"))
    assert stats["test"]["documents"] == 1 and stats["test"]["chars"]["total"] == len('EOS = "<|endoftext|>"\n' * 3)
    card = (shards / "data_card.md").read_text()
    assert card.startswith("# Data card: shards ") and "| python_stdlib | 40 |" in card


def test_training_reads_every_shard_as_one_dataset(shards):
    index = _index(shards)
    data = blocks.ShardedBlocks(shards, "train")
    train = [e for e in index["files"] if e["split"] == "train" and e["blocks"]]
    assert len(train) > 1 and len(data) == sum(e["blocks"] for e in train)
    whole = np.concatenate([_bin(shards, e).reshape(-1, SEQ) for e in train])
    for i in (0, len(data) // 2, len(data) - 1):
        item = data[i]
        assert item["input_ids"].shape == (SEQ,) and item["input_ids"].dtype == torch.long
        assert torch.equal(item["input_ids"], item["labels"])
        assert torch.equal(item["input_ids"], torch.from_numpy(whole[i].astype(np.int64)))
    with pytest.raises(IndexError):
        data[len(data)]
    assert [data.sources[k] for k in data.source_ids[data.starts[:-1]]] == [e["source"] for e in train]


def test_each_file_is_its_documents_plus_eos_minus_tail(shards, tok_dir):
    """A (shard, split, source) file is exactly its documents' tokens in shard order, each
    followed by EOS, cut to whole blocks: no block mixes sources."""
    tok = AutoTokenizer.from_pretrained(tok_dir)
    val_ids = {json.loads(line)["id"] for line in (shards / "val_docs.jsonl").read_text().splitlines()}
    dedup = shards.parent.parent / "dedup"
    for e in _index(shards)["files"]:
        shard = e["path"].split("/")[-1].split(".")[0] + ".parquet"
        rows = pq.read_table(dedup / shard).to_pylist()
        expected = []
        for d in rows:
            if d["source"] == e["source"] and (d["id"] in val_ids) == (e["split"] == "val"):
                expected += tok(d["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"] + [tok.eos_token_id]
        got = _bin(shards, e)
        assert len(got) == len(expected) - e["dropped_tokens"] and 0 <= e["dropped_tokens"] < SEQ
        assert got.tolist() == expected[: len(got)]
    # EOS appears once per document (the quoted special token stays text), and decodes back.
    quoted = [e for e in _index(shards)["files"] if e["source"] == "test"]
    assert len(quoted) == 1 and quoted[0]["blocks"] == 1  # 46 tokens: the EOS is in the dropped tail
    assert (_bin(shards, quoted[0]) == tok.eos_token_id).sum() == 0
    assert 'EOS = "<|endoftext|>"\n' in tok.decode(_bin(shards, quoted[0]).tolist())


def test_a_part_job_writes_what_the_gather_links(shards, tok_dir, tmp_path):
    dedup = shards.parent.parent / "dedup"
    ctx = StageContext("shards_part", "test/00001", lc.settings("shards", pack={"seq_len": SEQ, "val_fraction": VAL}),
                       {"deduplicated": dedup, "tokenizer": tok_dir}, tmp_path / "out", tmp_path / "work", threads=1)
    ctx.out.mkdir()
    counts = pack.build_part(ctx, 1)
    assert counts["shard"] == "shard-00001.parquet" and counts["files"]
    for e in counts["files"]:
        assert (ctx.out / e["path"]).read_bytes() == (shards / e["path"]).read_bytes()
    with pytest.raises(UserError, match="no shard number 3"):
        pack.build_part(ctx, 3)


def test_batch_sizes_do_not_change_the_output(shards, docs, tok_dir, tmp_path, monkeypatch):
    """Memory is bounded by the batch (documents and characters), and the batch is invisible."""
    monkeypatch.setattr(pack, "BATCH_DOCS", 3)
    monkeypatch.setattr(pack, "BATCH_CHARS", 5000)
    f = pq.ParquetFile(shards.parent.parent / "dedup" / "shard-00000.parquet")
    sizes = [(len(ids), sum(map(len, texts))) for ids, texts, _ in pack.batches(f)]
    assert sum(n for n, _ in sizes) == f.metadata.num_rows and all(n <= 3 and (c <= 5000 or n == 1) for n, c in sizes)
    again = _pack(docs, tok_dir, tmp_path)
    for name in ["index.json", "val_docs.jsonl"] + [e["path"] for e in _index(shards)["files"]]:
        assert (again / name).read_bytes() == (shards / name).read_bytes(), name


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
    names = ["index.json", "meta.json", "val_docs.jsonl", "stats.json", "data_card.md"] + [e["path"] for e in _index(shards)["files"]]
    for name in names:
        assert (again / name).read_bytes() == (shards / name).read_bytes(), name


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
    data = blocks.PackedBlocks(tmp_path / "train.bin", seq_len=8, dtype="uint32")
    assert len(data) == 4 and data[3]["input_ids"][-1].item() == 70000 + 31


def test_plain_load_is_what_transformers_loads(tok_dir, monkeypatch):
    """The tokenizers-only load (no transformers import in a part job) agrees with AutoTokenizer."""
    hf = AutoTokenizer.from_pretrained(tok_dir)
    plain = pack.load_tokenizer(tok_dir)
    monkeypatch.setattr(pack, "PLAIN_CLASSES", ())
    via_hf = pack.load_tokenizer(tok_dir)
    assert (plain.eos_token_id, plain.vocab_size) == (via_hf.eos_token_id, via_hf.vocab_size) == (hf.eos_token_id, len(hf))
    text = 'x = "<|endoftext|>"  # über'
    assert plain.backend.encode(text, add_special_tokens=False).ids == via_hf.backend.encode(text, add_special_tokens=False).ids


def test_with_eos_matches_the_python_loop(tok_dir):
    tok = pack.load_tokenizer(tok_dir)
    encs = tok.backend.encode_batch_fast(["a = 1", "", "def f(): pass"], add_special_tokens=False)
    expected = [t for e in encs for t in [*e.ids, 0]]
    assert pack.with_eos(encs, 0).tolist() == expected


def test_a_stored_part_is_renamed_for_its_shard():
    """A part reused under another shard number (an earlier source grew) names its token files
    after the new shard; other files keep their names."""
    counts = {"shard": "shard-00003.parquet", "tokens_in": 9,
              "files": [{"path": "tokens/shard-00003.train.0.bin", "split": "train"}, {"path": "tokens/shard-00003.val.0.bin", "split": "val"}]}
    moved = pack._renamed(counts, "shard-00004.parquet")
    assert moved["shard"] == "shard-00004.parquet" and moved["tokens_in"] == 9
    assert [e["path"] for e in moved["files"]] == ["tokens/shard-00004.train.0.bin", "tokens/shard-00004.val.0.bin"]
    assert counts["files"][0]["path"] == "tokens/shard-00003.train.0.bin"  # the stored counts stay as they are
    assert pack._rename("val_docs.jsonl", "shard-00003", "shard-00004") == "val_docs.jsonl"
    assert pack._rename("tokens/shard-000031.train.0.bin", "shard-00003", "shard-00004") == "tokens/shard-000031.train.0.bin"
