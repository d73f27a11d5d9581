"""Stage ``shards``: tokenize the deduplicated corpus and pack it into fixed-length blocks.

Documents are split into training and validation by a hash of their id (blake2b), so the
split is stable and does not depend on shard order or on the other documents. Each
document's tokens are followed by the eos token; documents are concatenated and cut into
blocks of ``seq_len`` tokens, and the final partial block of each split is dropped. Blocks
cross document boundaries (the usual pretraining packing: no padding, no attention mask).

The artifact:
  train.bin, val.bin   raw little-endian uint16 (uint32 for vocabularies over 65,536) arrays
                       of shape [blocks, seq_len], for ``np.memmap`` (see :class:`PackedBlocks`)
  meta.json            dtype, seq_len, vocab_size, eos_token_id, block/token/document counts
  val_docs.jsonl       the validation documents as {"id", "text"}, for evaluation

Shards are streamed one record batch at a time and blocks are written as they fill, so
memory does not grow with the corpus. This stage does not shuffle: training samples blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from lmbuild.artifact import parquet_shards, write_json
from lmbuild.errors import UserError
from lmbuild.runner import StageContext
from lmbuild.tokenizer import iter_batches, use_threads

log = logging.getLogger(__name__)

META = "meta.json"
VAL_DOCS = "val_docs.jsonl"
BATCH_DOCS = 256  # documents per encode_batch call


def hash_fraction(doc_id: str) -> float:
    """A stable number in [0, 1) for a document id."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") / 2**64


def validation_ids(paths: list[Path], val_fraction: float) -> set[str]:
    """Ids whose hash falls under ``val_fraction``; the lowest-hash id if none does.

    Reads only the id column. UserError if the corpus has fewer than two documents.
    """
    val, n, lowest = set(), 0, (2.0, None)
    for batch in iter_batches(paths, ["id"], batch_size=65536):
        for doc_id in batch["id"]:
            n += 1
            h = hash_fraction(doc_id)
            if h < val_fraction:
                val.add(doc_id)
            lowest = min(lowest, (h, doc_id))
    if n < 2:
        raise UserError(f"{paths[0].parent}: {n} document(s); need at least 2 to hold one out for validation")
    return val or {lowest[1]}


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


class BlockWriter:
    """Appends token ids to a .bin file in whole blocks of ``seq_len``; keeps the remainder."""

    def __init__(self, path: Path, seq_len: int, dtype: np.dtype, flush_tokens: int = 1 << 20):
        self.file = open(path, "wb")
        self.seq_len, self.dtype, self.flush_tokens = seq_len, dtype, flush_tokens
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.blocks = 0
        self.documents = 0

    def add(self, ids: np.ndarray, documents: int) -> None:
        self.pending.append(ids)
        self.n_pending += len(ids)
        self.documents += documents
        if self.n_pending >= self.flush_tokens:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        ids = np.concatenate(self.pending)
        k = len(ids) // self.seq_len
        self.file.write(ids[: k * self.seq_len].astype(self.dtype).tobytes())
        self.blocks += k
        rest = ids[k * self.seq_len :]
        self.pending, self.n_pending = [rest], len(rest)

    def close(self) -> int:
        """Write every whole block; return the number of tail tokens dropped."""
        self._flush()
        self.file.close()
        return self.n_pending


def build(ctx: StageContext) -> dict:
    s = ctx.settings
    seq_len = s["seq_len"]
    torch.set_num_threads(ctx.threads)
    use_threads(ctx.threads)
    started = time.time()

    tok = AutoTokenizer.from_pretrained(ctx.inputs["tokenizer"])
    eos = tok.eos_token_id
    if eos is None:
        raise UserError(f"{ctx.inputs['tokenizer']}: tokenizer has no eos token")
    # Special-token text inside a document ("<|endoftext|>" in a file about tokenizers) is
    # encoded as plain text, so only the eos appended below marks a document boundary.
    tok.backend_tokenizer.encode_special_tokens = True
    vocab_size = len(tok)
    dtype = token_dtype(vocab_size)
    paths = parquet_shards(ctx.inputs["deduplicated"], "deduplicated")
    val_ids = validation_ids(paths, s["val_fraction"])

    writers = {split: BlockWriter(ctx.out / f"{split}.bin", seq_len, dtype) for split in ("train", "val")}
    n_tokens = 0
    with open(ctx.out / VAL_DOCS, "w", encoding="utf-8") as val_docs:
        for batch in iter_batches(paths, ["id", "text"], batch_size=BATCH_DOCS):
            # The backend's batch encode runs on the Rust thread pool; no bos or other specials.
            encodings = tok.backend_tokenizer.encode_batch_fast(batch["text"], add_special_tokens=False)
            flat = {"train": [], "val": []}
            docs = {"train": 0, "val": 0}
            for doc_id, text, enc in zip(batch["id"], batch["text"], encodings):
                split = "val" if doc_id in val_ids else "train"
                flat[split] += enc.ids
                flat[split].append(eos)
                docs[split] += 1
                if split == "val":
                    val_docs.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
            for split, ids in flat.items():
                if ids:
                    n_tokens += len(ids)
                    writers[split].add(np.array(ids, dtype=np.int64), docs[split])
    dropped = {split: w.close() for split, w in writers.items()}
    seconds = time.time() - started

    meta = {"dtype": dtype.name, "seq_len": seq_len, "vocab_size": vocab_size, "eos_token_id": eos}
    for split, w in writers.items():
        meta.update({f"{split}_blocks": w.blocks, f"{split}_tokens": w.blocks * seq_len, f"{split}_documents": w.documents})
    for split in ("train", "val"):
        if meta[f"{split}_blocks"] == 0:
            raise UserError(
                f"{ctx.inputs['deduplicated']}: {meta[f'{split}_documents']} {split} document(s) hold "
                f"{dropped[split]} tokens, less than one block of pack.seq_len={seq_len}: the corpus is too small "
                f"(or lower pack.seq_len{', raise pack.val_fraction' if split == 'val' else ''})"
            )
    write_json(ctx.out / META, meta)
    counts = {
        **meta,
        "train_dropped_tokens": dropped["train"],
        "val_dropped_tokens": dropped["val"],
        "tokens_per_second": round(n_tokens / seconds),
        "seconds": round(seconds, 3),
    }
    log.info("shards: %s", counts)
    return counts


class PackedBlocks(torch.utils.data.Dataset):
    """The blocks of a packed ``train.bin``/``val.bin`` as causal-LM examples.

    Items are {"input_ids", "labels"}: the same LongTensor of ``seq_len`` ids (the model shifts
    labels itself). The file is memory-mapped, not read into memory. ``seq_len`` and ``dtype``
    default to those in the meta.json beside the file.
    """

    def __init__(self, path: str | Path, seq_len: int | None = None, dtype: str | None = None):
        path = Path(path)
        if seq_len is None or dtype is None:
            meta = json.loads((path.parent / META).read_text())
            seq_len, dtype = seq_len or meta["seq_len"], dtype or meta["dtype"]
        self.seq_len = seq_len
        if path.stat().st_size == 0:  # np.memmap refuses an empty file
            self.blocks = np.zeros((0, seq_len), dtype=np.dtype(dtype).newbyteorder("<"))
        else:
            self.blocks = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r").reshape(-1, seq_len)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(self.blocks[i].astype(np.int64))
        return {"input_ids": ids, "labels": ids.clone()}
