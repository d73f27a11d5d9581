"""Stage ``shards``: tokenize the deduplicated corpus and pack it into fixed-length blocks.

Fanned out like ``cleaned``: one job per deduplicated shard (:func:`build_part`) tokenizes and
packs that shard alone; a gather (:func:`build`) hard-links the parts' files into the
artifact and writes its index. A single machine runs the same jobs side by side.

Documents are split into training and validation by a hash of their id (blake2b), so the
split is stable and does not depend on shard order or on the other documents (if no id in the
whole corpus hashes under ``val_fraction``, the lowest-hash id is held out). Each document's
tokens are followed by the eos token; the documents of one (shard, split, source) are
concatenated and cut into blocks of ``seq_len`` tokens, and the final partial block of each
is dropped. Blocks cross document boundaries (the usual pretraining packing: no padding, no
attention mask) but never sources, so that training can sample by source
(``data.mixture``, :mod:`lmbuild.tokens.blocks`).

The artifact:
  tokens/<shard>.<split>.<n>.bin  raw little-endian uint16 (uint32 for vocabularies over
                       65,536) arrays of shape [blocks, seq_len]: one per (shard, split, source)
  index.json           per file: shard, split, source, blocks, tokens, documents; per shard
                       and per source: blocks and tokens; the tokenizer's key
  meta.json            dtype, seq_len, vocab_size, eos_token_id, block/token/document counts
  val_docs.jsonl       the validation documents as {"id", "text"}, in shard order, for evaluation
  stats.json           per source: characters, words and tokens per document (lmbuild.data.statistics;
                       also ``stats`` in the counts)
  data_card.md         the data card: sources, sizes, the cleaning and dedup upstream (lmbuild.data.data_card)

A part streams its shard one record batch at a time and writes blocks as they fill, so its
memory does not grow with the shard. This stage does not shuffle: training samples blocks
(:mod:`lmbuild.tokens.blocks`), and the mixture is applied there, not here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from lmbuild.data import data_card, statistics
from lmbuild.errors import UserError
from lmbuild.build.keys import digest
from lmbuild.store.artifact import atomic_dir, file_entries, is_complete, link_or_copy, parquet_shards, read_manifest, write_json
from lmbuild.store.runner import StageContext

log = logging.getLogger(__name__)

META = "meta.json"
INDEX = "index.json"
TOKENS = "tokens"
VAL_DOCS = "val_docs.jsonl"
SPLITS = ("train", "val")
# One encode_batch call: up to BATCH_DOCS documents and BATCH_CHARS characters (the encodings
# hold ~100 bytes a token: ~50-100 MB for 2M characters), enough to keep the Rust pool busy.
BATCH_DOCS = 1024
BATCH_CHARS = 2 << 20


def hash_fraction(doc_id: str) -> float:
    """A stable number in [0, 1) for a document id."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") / 2**64


def fallback_validation_id(paths: list[Path], val_fraction: float) -> str | None:
    """None if some id of the corpus hashes under ``val_fraction`` (the usual case: the scan
    stops at the first such id); else the lowest-hash id, the one document held out.

    Reads only the id column. UserError if the corpus has fewer than two documents.
    """
    n, lowest = 0, (2.0, None)
    for path in paths:
        f = pq.ParquetFile(path)  # not pq.read_table: that imports pyarrow.dataset (~1 s a job)
        if "id" not in f.schema_arrow.names:
            raise UserError(f"{path}: missing column(s) ['id'] (not a deduplicated shard?)")
        for doc_id in chain.from_iterable(b.column("id").to_pylist() for b in f.iter_batches(batch_size=65536, columns=["id"])):
            n += 1
            h = hash_fraction(doc_id)
            if h < val_fraction and n >= 2:
                return None
            lowest = min(lowest, (h, doc_id))
    if n < 2:
        raise UserError(f"{paths[0].parent}: {n} document(s); need at least 2 to hold one out for validation")
    return None if lowest[0] < val_fraction else lowest[1]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


class BlockWriter:
    """Appends token ids to a .bin file in whole blocks of ``seq_len``; keeps the remainder."""

    def __init__(self, path: Path, seq_len: int, dtype: np.dtype, flush_tokens: int = 1 << 20):
        self.path = path
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
        ids = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        k = len(ids) // self.seq_len
        self.file.write(ids[: k * self.seq_len].astype(self.dtype, copy=False).tobytes())
        self.blocks += k
        rest = ids[k * self.seq_len :]
        self.pending, self.n_pending = [rest], len(rest)

    def close(self) -> int:
        """Write every whole block; return the number of tail tokens dropped."""
        self._flush()
        self.file.close()
        return self.n_pending


# Saved by transformers from a ``tokenizers`` tokenizer: tokenizer.json is the whole tokenizer.
PLAIN_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


@dataclasses.dataclass
class Tok:
    """What packing needs of a tokenizer: its Rust backend, eos id and size (``len(tokenizer)``)."""

    backend: Tokenizer
    eos_token_id: int
    vocab_size: int


def load_tokenizer(path: Path) -> Tok:
    """The tokenizer artifact at ``path``, for packing.

    Read with ``tokenizers`` alone when transformers saved a plain ``tokenizers`` tokenizer
    (importing transformers costs each part job ~2.5 s of CPU); any other class through
    AutoTokenizer. Special-token text inside a document ("<|endoftext|>" in a file about
    tokenizers) is encoded as plain text, so only the appended eos marks a boundary.
    """
    path = Path(path)
    cfg_path, json_path = path / "tokenizer_config.json", path / "tokenizer.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    eos = cfg.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if cfg.get("tokenizer_class") in PLAIN_CLASSES and json_path.is_file() and eos:
        backend = Tokenizer.from_file(str(json_path))
        tok = Tok(backend, backend.token_to_id(eos), backend.get_vocab_size(with_added_tokens=True))
    else:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(path)
        tok = Tok(hf.backend_tokenizer, hf.eos_token_id, len(hf))
    if tok.eos_token_id is None:
        raise UserError(f"{path}: tokenizer has no eos token")
    tok.backend.encode_special_tokens = True
    return tok


def with_eos(encodings: list, eos: int) -> np.ndarray:
    """The documents' ids, each followed by eos, as one int64 array (no Python loop per token)."""
    lists = [e.ids for e in encodings]
    n = sum(map(len, lists)) + len(lists)
    return np.fromiter(chain.from_iterable(chain.from_iterable((ids, (eos,)) for ids in lists)), np.int64, n)


def batches(f: pq.ParquetFile):
    """(ids, texts, sources) of at most BATCH_DOCS documents and BATCH_CHARS characters (a longer
    document alone), read one record batch at a time."""
    for batch in f.iter_batches(batch_size=BATCH_DOCS, columns=["id", "text", "source"]):
        ids, texts, sources = (batch.column(c).to_pylist() for c in ("id", "text", "source"))
        start = size = 0
        for i, text in enumerate(texts):
            if size and size + len(text) > BATCH_CHARS:
                yield ids[start:i], texts[start:i], sources[start:i]
                start, size = i, 0
            size += len(text)
        yield ids[start:], texts[start:], sources[start:]


def pack_shard(path: Path, tok, settings: dict, fallback: str | None, out: Path) -> dict:
    """Tokenize and pack one deduplicated shard into ``out``; return its counts."""
    seq_len, frac = settings["seq_len"], settings["val_fraction"]
    eos, dtype = tok.eos_token_id, token_dtype(tok.vocab_size)
    backend = tok.backend
    stem = path.name.removesuffix(".parquet")
    (out / TOKENS).mkdir(parents=True, exist_ok=True)
    writers: dict[tuple[str, str], BlockWriter] = {}
    n_tokens, started = 0, time.time()
    stats = statistics.Stats()
    f = pq.ParquetFile(path)
    missing = {"id", "text", "source"} - set(f.schema_arrow.names)
    if missing:
        raise UserError(f"{path}: missing column(s) {sorted(missing)} (not a deduplicated shard?)")
    with open(out / VAL_DOCS, "w", encoding="utf-8") as val_docs:
        for ids, texts, sources in batches(f):
            # The backend's batch encode runs on the Rust thread pool; no bos or other specials.
            encodings = backend.encode_batch_fast(texts, add_special_tokens=False)
            groups: dict[tuple[str, str], list] = defaultdict(list)
            for doc_id, text, source, enc in zip(ids, texts, sources, encodings):
                split = "val" if hash_fraction(doc_id) < frac or doc_id == fallback else "train"
                groups[split, source or ""].append(enc)
                stats.add(source, chars=len(text), words=len(text.split()), tokens=len(enc.ids) + 1)  # + eos
                if split == "val":
                    val_docs.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
            for group, encs in groups.items():
                if group not in writers:
                    name = f"{stem}.{group[0]}.{sum(g[0] == group[0] for g in writers)}.bin"
                    writers[group] = BlockWriter(out / TOKENS / name, seq_len, dtype)
                flat = with_eos(encs, eos)
                n_tokens += len(flat)
                writers[group].add(flat, len(encs))
    files = []
    for (split, source), w in writers.items():
        dropped = w.close()
        files.append({"path": f"{TOKENS}/{w.path.name}", "split": split, "source": source, "blocks": w.blocks,
                      "tokens": w.blocks * seq_len, "documents": w.documents, "dropped_tokens": dropped})
    seconds = time.time() - started
    return {"shard": path.name, "files": sorted(files, key=lambda e: e["path"]), "tokens_in": n_tokens,
            "seconds": round(seconds, 3), "tokens_per_second": round(n_tokens / max(seconds, 1e-9)), "stats": stats.to_json()}


def use_threads(threads: int) -> None:
    """The ``tokenizers`` Rust pool on ``threads`` cores (the runner turns it off for every job,
    since forked DataLoader workers deadlock on it; this stage forks nothing). As
    lmbuild.tokens.tokenizer.use_threads, which this module does not import: it imports transformers."""
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))


def _part_setup(ctx: StageContext):
    use_threads(ctx.threads)
    tok = load_tokenizer(ctx.inputs["tokenizer"])
    paths = parquet_shards(ctx.inputs["deduplicated"], "deduplicated")
    return tok, paths, fallback_validation_id(paths, ctx.settings["val_fraction"])


def _tokenizer_info(ctx: StageContext, tok) -> dict:
    path = Path(ctx.inputs["tokenizer"])
    try:
        key = read_manifest(path).get("key")
    except (OSError, ValueError):
        key = None
    return {"tokenizer": key, "vocab_size": tok.vocab_size, "eos_token_id": tok.eos_token_id, "dtype": token_dtype(tok.vocab_size).name}


def reuse_key(ctx: StageContext, path: Path, fallback: str | None) -> str | None:
    """The address of a part's output by what it is made of: the deduplicated shard's bytes
    (its SHA-256 in the input's manifest), the tokenizer's key, ``pack``, this stage's code and
    the corpus-wide validation fallback; not the shard's name, which moves when an earlier source
    grows (:func:`_renamed`). A shard whose surviving documents did not change keeps it under a
    new deduplicated key. None where an input has no manifest."""
    try:
        entry = read_manifest(ctx.inputs["deduplicated"])["files"][path.name]
        tokenizer = read_manifest(ctx.inputs["tokenizer"])["key"]
    except (OSError, ValueError, KeyError):
        return None
    material = {"sha256": entry["sha256"], "tokenizer": tokenizer, "settings": ctx.settings, "code": ctx.lineage.get("code_hash"), "fallback": fallback}
    return digest(material)[:16]


def _stem(shard: str) -> str:
    return shard.removesuffix(".parquet")


def _rename(rel: str, old: str, new: str) -> str:
    """A token file's path for the shard's new name (``tokens/<shard>.<split>.<n>.bin``)."""
    prefix = f"{TOKENS}/{old}."
    return f"{TOKENS}/{new}." + rel[len(prefix):] if rel.startswith(prefix) else rel


def _renamed(counts: dict, shard: str) -> dict:
    """A stored part's counts for the same bytes under another shard name: the shards of a later
    source are renumbered when an earlier one grows, and their token files follow the name."""
    old, new = _stem(counts["shard"]), _stem(shard)
    return {**counts, "shard": shard, "files": [{**e, "path": _rename(e["path"], old, new)} for e in counts["files"]]}


def build_part(ctx: StageContext, part: int) -> dict:
    """One fan-out job: tokenize and pack deduplicated shard number ``part`` into ``ctx.out``.

    Reused when the store holds a part of the same :func:`reuse_key` (``_parts/shards/<key>``,
    kept by gc while a kept shards artifact lists it in ``part_keys``): its files are linked,
    nothing is tokenized. Else packed, and linked into the store under that key."""
    paths = parquet_shards(ctx.inputs["deduplicated"], "deduplicated")
    if part >= len(paths):
        raise UserError(f"{ctx.inputs['deduplicated']}: no shard number {part} ({len(paths)} shards)")
    fallback = fallback_validation_id(paths, ctx.settings["val_fraction"])
    key = reuse_key(ctx, paths[part], fallback)
    cache = Path(ctx.inputs["deduplicated"]).parent.parent / "_parts" / "shards" / key if key else None
    if cache is not None and is_complete(cache):
        stored = read_manifest(cache)
        counts = _renamed(stored["counts"], paths[part].name)
        old, new = _stem(stored["counts"]["shard"]), _stem(paths[part].name)
        for rel in stored["files"]:
            link_or_copy(cache / rel, ctx.out / _rename(rel, old, new))
        log.info("%s: reused %s", paths[part].name, cache)
        return {**counts, "part_key": key, "reused": True}
    use_threads(ctx.threads)
    tok = load_tokenizer(ctx.inputs["tokenizer"])
    counts = {**pack_shard(paths[part], tok, ctx.settings, fallback, ctx.out), **_tokenizer_info(ctx, tok)}
    if cache is not None:
        with atomic_dir(cache) as tmp:
            for rel in file_entries(ctx.out):
                link_or_copy(ctx.out / rel, tmp / rel)
            write_json(tmp / "manifest.json", {"stage": "shards_part", "key": key, "counts": counts, "files": file_entries(tmp)})
    return {**counts, "part_key": key, "reused": False}


def _gather(parts: list[Path], out: Path) -> list[dict]:
    """Link every part's token files into ``out`` and append its validation documents."""
    results = []
    (out / TOKENS).mkdir(parents=True, exist_ok=True)
    with open(out / VAL_DOCS, "wb") as val_docs:
        for part in parts:
            try:
                counts = read_manifest(part)["counts"]
            except (OSError, ValueError, KeyError):
                raise UserError(f"{part}: not a complete shards part (no manifest)") from None
            for entry in counts["files"]:
                link_or_copy(part / entry["path"], out / entry["path"])
            with open(part / VAL_DOCS, "rb") as f:
                shutil.copyfileobj(f, val_docs)
            results.append(counts)
    return results


def build(ctx: StageContext) -> dict:
    """The stage's artifact: gather the fan-out parts when given, else pack every shard here."""
    s = ctx.settings
    seq_len = s["seq_len"]
    started = time.time()
    parts = ctx.inputs.get("parts")
    if parts is None:  # called directly (tests, notebooks): the parts one after another
        tok, paths, fallback = _part_setup(ctx)
        parts = []
        for i, path in enumerate(paths):
            part = ctx.work / "parts" / f"{i:05d}"
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir(parents=True)
            counts = {**pack_shard(path, tok, s, fallback, part), **_tokenizer_info(ctx, tok)}
            write_json(part / "manifest.json", {"stage": "shards_part", "counts": counts})
            parts.append(part)
    results = _gather([Path(p) for p in parts], ctx.out)
    first = results[0]
    if len({(r["tokenizer"], r["vocab_size"], r["dtype"]) for r in results}) > 1:
        raise UserError(f"{parts[0]}: the parts were packed with different tokenizers")

    files = [e for r in results for e in r["files"]]
    totals = {f"{split}_{k}": sum(e[k] for e in files if e["split"] == split) for split in SPLITS for k in ("blocks", "tokens", "documents", "dropped_tokens")}
    for split in SPLITS:
        if totals[f"{split}_blocks"] == 0:
            raise UserError(
                f"{ctx.inputs['deduplicated']}: {totals[f'{split}_documents']} {split} document(s) hold "
                f"{totals[f'{split}_dropped_tokens']} tokens, less than one block of pack.seq_len={seq_len} per shard and source: "
                f"the corpus is too small (or lower pack.seq_len{', raise pack.val_fraction' if split == 'val' else ''})"
            )
    per_source: dict[str, dict] = {}
    for e in files:
        row = per_source.setdefault(e["source"], {f"{sp}_{k}": 0 for sp in SPLITS for k in ("blocks", "tokens", "documents")})
        for k in ("blocks", "tokens", "documents"):
            row[f"{e['split']}_{k}"] += e[k]
    per_shard = [{"shard": r["shard"], "blocks": sum(e["blocks"] for e in r["files"]), "tokens": sum(e["tokens"] for e in r["files"])} for r in results]
    head = {"dtype": first["dtype"], "seq_len": seq_len, "vocab_size": first["vocab_size"], "eos_token_id": first["eos_token_id"], "tokenizer": first["tokenizer"]}
    write_json(ctx.out / INDEX, {**head, "files": files, "shards": per_shard, "sources": dict(sorted(per_source.items()))})
    meta = {**head, **{k: v for k, v in totals.items() if not k.endswith("dropped_tokens")}}
    write_json(ctx.out / META, meta)
    stats = statistics.merge([r["stats"] for r in results])
    statistics.write(ctx.out, stats)
    data_card.write(ctx, meta, stats)
    n_tokens = sum(r["tokens_in"] for r in results)
    part_seconds = sum(r["seconds"] for r in results)
    counts = {
        **meta,
        "train_dropped_tokens": totals["train_dropped_tokens"],
        "val_dropped_tokens": totals["val_dropped_tokens"],
        "tokens_per_source": {src: row["train_tokens"] + row["val_tokens"] for src, row in sorted(per_source.items())},
        "parts": len(results),
        # The store entries of the parts (gc keeps them while this artifact is kept), and how
        # many a build of another key had made: their shard's survivors had not changed.
        "part_keys": [r["part_key"] for r in results if r.get("part_key")],
        "parts_reused": sum(bool(r.get("reused")) for r in results),
        # Per part job (its own time); the stage's rate on N cores is about N times this with N jobs.
        "tokens_per_second": round(n_tokens / max(part_seconds, 1e-9)),
        "part_seconds": round(part_seconds, 3),
        "seconds": round(time.time() - started, 3),
        "shards": [{**row, "tokens_per_second": r["tokens_per_second"]} for row, r in zip(per_shard, results)],
        "stats": stats,
    }
    log.info("shards: %s", {k: v for k, v in counts.items() if k != "shards"})
    return counts
