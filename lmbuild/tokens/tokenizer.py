"""Stage ``tokenizer``: train a byte-level BPE on the deduplicated text, or copy a pretrained one.

``bpe`` trains with the ``tokenizers`` library on documents streamed from the
``deduplicated`` Parquet shards (one record batch in memory at a time). It is GPT-2 style:
a ByteLevel pre-tokenizer and decoder, so every string round-trips exactly
(``decode(encode(x)) == x``) with no unknown token, and no normalizer. One special token,
``<|endoftext|>`` (id 0), serves as eos, bos and pad; nothing is added automatically when
encoding: the ``shards`` stage appends it after each document itself. There is no unk token
because a byte-level vocabulary cannot miss a character.

``pretrained`` loads ``tokenizer.path`` with ``AutoTokenizer`` (never trusting remote code)
and saves it unchanged. Either way the artifact is a folder that
``AutoTokenizer.from_pretrained`` loads.

This stage does not decide how documents are split into training and validation data,
and does not tokenize the corpus (see ``lmbuild.tokens.shards``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmbuild.errors import UserError
from lmbuild.store.artifact import parquet_shards
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
SAMPLE_BYTES = 1_000_000  # text measured for tokens-per-byte


def use_threads(threads: int) -> None:
    """Let the ``tokenizers`` Rust pool use ``threads`` cores (read at each call).

    The runner turns that pool off for the whole process because forked DataLoader workers
    deadlock on it; the tokenizer and shards stages fork nothing, and run ~2x faster with it.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # only read when the pool starts


def iter_batches(paths: list[Path], columns: list[str], batch_size: int = 1024) -> Iterator[dict[str, list]]:
    """Record batches of the given columns from the shards, in shard order, as dicts of lists."""
    for path in paths:
        f = pq.ParquetFile(path)
        missing = set(columns) - set(f.schema_arrow.names)
        if missing:
            raise UserError(f"{path}: missing column(s) {sorted(missing)}")
        for batch in f.iter_batches(batch_size=batch_size, columns=columns):
            yield batch.to_pydict()


def iter_texts(paths: list[Path], max_docs: int | None = None) -> Iterator[str]:
    """Document texts in shard order, at most ``max_docs`` of them."""
    n = 0
    for batch in iter_batches(paths, ["text"]):
        for text in batch["text"]:
            if max_docs is not None and n >= max_docs:
                return
            n += 1
            yield text


def train_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it for transformers."""
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False keeps the round trip exact (a prefix space would be added on encode).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even unseen ones
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        clean_up_tokenization_spaces=False,  # would alter " ," and the like on decode
    )


def load_pretrained(path: str) -> PreTrainedTokenizerFast:
    """``AutoTokenizer.from_pretrained(path)`` with config-naming errors."""
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"tokenizer.path: cannot load a tokenizer from {path!r}: {str(exc).splitlines()[0]}") from None
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer.path: the tokenizer at {path!r} has no eos token")
    return tok


def tokens_per_byte(tok, texts: Iterator[str], limit: int = SAMPLE_BYTES) -> float | None:
    """Tokens per UTF-8 byte over the first ``limit`` bytes of ``texts`` (whole documents)."""
    sample, size = [], 0
    for text in texts:
        sample.append(text)
        size += len(text.encode())
        if size >= limit:
            break
    if not size:
        return None
    n = sum(len(e.ids) for e in tok.backend_tokenizer.encode_batch_fast(sample, add_special_tokens=False))
    return round(n / size, 4)


def build(ctx: StageContext) -> dict:
    s = ctx.settings
    started = time.time()
    use_threads(ctx.threads)
    counts: dict = {"type": s["type"]}
    if s["type"] == "bpe":
        paths = parquet_shards(ctx.inputs["deduplicated"], "deduplicated")
        docs = size = 0

        def counted():  # count what the trainer actually consumed
            nonlocal docs, size
            for text in iter_texts(paths, s["max_train_docs"]):
                docs += 1
                size += len(text.encode())
                yield text

        tok = train_bpe(counted(), s["vocab_size"], s["min_frequency"])
        if not docs:
            raise UserError(f"{ctx.inputs['deduplicated']}: no documents to train the tokenizer on")
        if len(tok) < s["vocab_size"]:
            log.warning("the corpus only supports %d of tokenizer.vocab_size=%d tokens", len(tok), s["vocab_size"])
        counts.update(train_documents=docs, train_bytes=size)
        sample = iter_texts(paths)
    else:
        tok = load_pretrained(s["path"])
        sample = iter(())  # no corpus input for a pretrained tokenizer
    tok.save_pretrained(ctx.out)
    counts.update(
        vocab_size=len(tok),
        eos_token=tok.eos_token,
        eos_token_id=tok.eos_token_id,
        seconds=round(time.time() - started, 3),
        tokens_per_byte=tokens_per_byte(tok, sample),
    )
    log.info("tokenizer: %s", counts)
    return counts
