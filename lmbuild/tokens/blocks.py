"""The packed blocks of a ``shards`` artifact as training datasets, and ``data.mixture``.

:class:`ShardedBlocks` reads every token file of one split (``index.json``, written by
:mod:`lmbuild.tokens.shards`) as one dataset, memory-mapped, in index order; the trainer draws a seeded
global order over it (``lmbuild.training.order.BlockOrder``). :func:`mixture_index` turns
``data.mixture`` into the list of block numbers one training epoch visits, so that the
mixture is applied when training samples blocks and nothing upstream is rebuilt for it.

Mixture kinds (one kind for all sources of a mixture; ``lmbuild.build.config`` checks it):

- ``epochs``: a source contributes ``round(epochs * blocks)`` blocks per training epoch.
- ``tokens``: a source contributes ``ceil(tokens / seq_len)`` blocks.
- ``weight``: sources share an epoch as large as the named sources' blocks together, each in
  proportion to its weight (Dolma/OLMo-style sampling proportions).

A source's blocks are taken in a permutation seeded by (seed, source name): whole passes
while more are wanted than it has (upsampling), then a prefix of a fresh permutation
(downsampling). Sources not named in a non-empty mixture are not trained on. Validation
always uses every validation block: the mixture changes what the model trains on, not what
it is measured on.

What this does not do: change the mixture during training (curricula), or weight by
documents rather than blocks.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from lmbuild.errors import UserError

INDEX = "index.json"
META = "meta.json"


def _memmap(path: Path, seq_len: int, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype).newbyteorder("<")
    if path.stat().st_size == 0:  # np.memmap refuses an empty file
        return np.zeros((0, seq_len), dtype=dt)
    return np.memmap(path, dtype=dt, mode="r").reshape(-1, seq_len)


def _example(row: np.ndarray) -> dict[str, torch.Tensor]:
    ids = torch.from_numpy(row.astype(np.int64))
    return {"input_ids": ids, "labels": ids.clone()}


class PackedBlocks(torch.utils.data.Dataset):
    """The blocks of one packed ``.bin`` file as causal-LM examples.

    Items are {"input_ids", "labels"}: the same LongTensor of ``seq_len`` ids (the model shifts
    labels itself). The file is memory-mapped, not read into memory.
    """

    def __init__(self, path: str | Path, seq_len: int, dtype: str):
        self.seq_len = seq_len
        self.blocks = _memmap(Path(path), seq_len, dtype)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return _example(self.blocks[i])


class ShardedBlocks(torch.utils.data.Dataset):
    """Every token file of ``split`` in a ``shards`` artifact as one dataset (index order).

    ``sources`` names the sources; ``source_ids[i]`` is block i's source (a position in it).
    """

    def __init__(self, artifact: str | Path, split: str = "train"):
        artifact = Path(artifact)
        index = json.loads((artifact / INDEX).read_text())
        self.seq_len, self.dtype = index["seq_len"], index["dtype"]
        entries = [e for e in index["files"] if e["split"] == split and e["blocks"] > 0]
        self.files = [_memmap(artifact / e["path"], self.seq_len, self.dtype) for e in entries]
        for e, m in zip(entries, self.files):
            if len(m) != e["blocks"]:
                raise UserError(f"{artifact / e['path']}: {len(m)} blocks, the index says {e['blocks']}")
        self.starts = np.cumsum([0] + [len(m) for m in self.files])
        self.sources = sorted({e["source"] for e in entries})
        ids = {s: i for i, s in enumerate(self.sources)}
        self.source_ids = np.repeat(np.array([ids[e["source"]] for e in entries], np.int64), [e["blocks"] for e in entries])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        f = int(np.searchsorted(self.starts, i, side="right")) - 1
        return _example(self.files[f][i - self.starts[f]])

    def source_blocks(self, source: str) -> np.ndarray:
        return np.flatnonzero(self.source_ids == self.sources.index(source))


class MixedBlocks(torch.utils.data.Dataset):
    """``base`` seen through a list of block numbers (:func:`mixture_index`)."""

    def __init__(self, base: ShardedBlocks, index: np.ndarray):
        self.base, self.index = base, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.base[int(self.index[i])]

    @property
    def source_ids(self) -> np.ndarray:
        return self.base.source_ids[self.index]


def _source_seed(seed: int, source: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{source}".encode()).digest()[:8], "big") >> 1


def mixture_counts(blocks: ShardedBlocks, mixture: dict) -> dict[str, int]:
    """Blocks per source in one training epoch under ``mixture`` (data.mixture)."""
    have = {s: int((blocks.source_ids == i).sum()) for i, s in enumerate(blocks.sources)}
    if not mixture:
        return have
    unknown = sorted(set(mixture) - set(have))
    if unknown:
        raise UserError(f"config: data.mixture.{unknown[0]}: no training blocks of this source (sources: {', '.join(blocks.sources)})")
    kinds = {next(iter(v)) for v in mixture.values()}
    if len(kinds) > 1:
        raise UserError(f"config: data.mixture: one kind for every source (got {', '.join(sorted(kinds))})")
    kind = kinds.pop()
    if kind == "epochs":
        return {s: round(v["epochs"] * have[s]) for s, v in mixture.items()}
    if kind == "tokens":
        return {s: math.ceil(v["tokens"] / blocks.seq_len) for s, v in mixture.items()}
    total, weights = sum(have[s] for s in mixture), {s: v["weight"] for s, v in mixture.items()}
    wsum = sum(weights.values())
    if wsum <= 0:
        raise UserError("config: data.mixture: the weights sum to 0")
    return {s: round(w / wsum * total) for s, w in weights.items()}


def mixture_index(blocks: ShardedBlocks, mixture: dict, seed: int) -> np.ndarray:
    """The block numbers one training epoch visits, grouped by source (the trainer shuffles)."""
    counts = mixture_counts(blocks, mixture)
    parts = []
    for source in sorted(counts):
        own, want = blocks.source_blocks(source), counts[source]
        g = np.random.default_rng(_source_seed(seed, source))
        passes = [own[g.permutation(len(own))] for _ in range(-(-want // len(own)))] if want else []
        parts.append(np.concatenate(passes)[:want] if passes else np.zeros(0, np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def training_blocks(artifact: str | Path, mixture: dict, seed: int) -> ShardedBlocks | MixedBlocks:
    """The training dataset: every training block, or the mixture's epoch of them."""
    base = ShardedBlocks(artifact, "train")
    return MixedBlocks(base, mixture_index(base, mixture, seed)) if mixture else base


def tokens_per_source(data: ShardedBlocks | MixedBlocks, order, blocks_consumed: int) -> dict[str, int]:
    """Tokens each source contributed to the first ``blocks_consumed`` blocks of ``order``
    (a ``BlockOrder``: a permutation of the dataset per epoch)."""
    sources = data.base.sources if isinstance(data, MixedBlocks) else data.sources
    ids = data.source_ids
    n = len(ids)
    whole, rest = divmod(blocks_consumed, n) if n else (0, 0)
    counts = np.bincount(ids, minlength=len(sources)) * whole
    if rest:
        counts = counts + np.bincount(ids[order.permutation(whole).numpy()[:rest]], minlength=len(sources))
    seq_len = (data.base if isinstance(data, MixedBlocks) else data).seq_len
    return {s: int(c) * seq_len for s, c in zip(sources, counts)}
