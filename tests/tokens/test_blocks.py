"""Training datasets over a shards artifact: every token file as one dataset, and data.mixture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmbuild.tokens import blocks

from lmbuild.build import config
from lmbuild.errors import UserError

SEQ = 4


def make_shards(root, per_file):
    """A shards artifact whose block i of source s holds s's number and i: [(shard, source, blocks)]."""
    files = []
    (root / "tokens").mkdir(parents=True)
    for n, (shard, source, k) in enumerate(per_file):
        path = f"tokens/{shard}.train.{n}.bin"
        code = {"a": 1, "b": 2, "c": 3}[source]
        rows = np.array([[code, i, n, 0] for i in range(k)], dtype="<u2")
        rows.tofile(root / path)
        files.append({"path": path, "split": "train", "source": source, "blocks": k, "tokens": k * SEQ, "documents": k, "dropped_tokens": 0})
    (root / "index.json").write_text(json.dumps({"dtype": "uint16", "seq_len": SEQ, "files": files}))
    return root


@pytest.fixture
def art(tmp_path):
    return make_shards(tmp_path / "shards", [("shard-00000", "a", 6), ("shard-00000", "b", 2), ("shard-00001", "a", 4), ("shard-00001", "c", 0)])


def sources_of(data):
    return [int(data[i]["input_ids"][0]) for i in range(len(data))]


def test_every_file_is_one_dataset(art):
    data = blocks.ShardedBlocks(art)
    assert len(data) == 12 and data.sources == ["a", "b"]  # c has no blocks
    assert sources_of(data) == [1] * 6 + [2] * 2 + [1] * 4
    assert data[8]["input_ids"].tolist() == [1, 0, 2, 0]  # the first block of the third file
    assert [data.sources[i] for i in data.source_ids] == ["a"] * 6 + ["b"] * 2 + ["a"] * 4


def test_no_mixture_is_every_block_once(art):
    data = blocks.training_blocks(art, {}, seed=0)
    assert isinstance(data, blocks.ShardedBlocks) and len(data) == 12


@pytest.mark.parametrize(
    "mixture, want",
    [
        ({"a": {"epochs": 0.5}, "b": {"epochs": 3}}, {"a": 5, "b": 6}),
        ({"a": {"tokens": 9}, "b": {"tokens": 8}}, {"a": 3, "b": 2}),
        ({"a": {"weight": 1}, "b": {"weight": 1}}, {"a": 6, "b": 6}),  # an epoch of 12 = a + b
        ({"b": {"weight": 2}}, {"b": 2}),  # a source not named is not trained on
    ],
)
def test_mixture_counts(art, mixture, want):
    data = blocks.training_blocks(art, mixture, seed=0)
    assert blocks.mixture_counts(data.base, mixture) == want
    got = sources_of(data)
    assert {s: got.count(code) for s, code in (("a", 1), ("b", 2)) if s in want} == want
    assert len(data) == sum(want.values())


def test_upsampling_repeats_whole_passes_and_is_seeded(art):
    mix = {"b": {"epochs": 2.5}}  # 2 blocks -> 5: two whole passes, then one more block
    data = blocks.training_blocks(art, mix, seed=0)
    picked = [int(data[i]["input_ids"][1]) for i in range(len(data))]
    assert sorted(picked[:2]) == sorted(picked[2:4]) == [0, 1]
    again = blocks.training_blocks(art, mix, seed=0)
    assert np.array_equal(data.index, again.index)
    # Downsampling a larger source picks a seed-dependent subset.
    subsets = {tuple(sorted(blocks.training_blocks(art, {"a": {"epochs": 0.3}}, seed=s).index)) for s in range(8)}
    assert len(subsets) > 1


def test_unknown_source_and_mixed_kinds_are_config_errors(art):
    with pytest.raises(UserError, match="data.mixture.typo: no training blocks"):
        blocks.training_blocks(art, {"typo": {"weight": 1}}, seed=0)
    with pytest.raises(UserError, match="data.mixture: one kind"):
        config.validate({"data": {"mixture": {"a": {"weight": 1}, "b": {"epochs": 1}}}})
    with pytest.raises(UserError, match="data.mixture"):
        config.validate({"data": {"mixture": {"a": {"weight": 1, "epochs": 2}}}})
    with pytest.raises(UserError, match="data.mixture"):
        config.validate({"data": {"mixture": {"a": {"weight": 0}}}})


class Order:
    """BlockOrder's interface: a permutation of n per epoch (here: identity, then reversed)."""

    def __init__(self, n):
        self.n = n

    def permutation(self, epoch):
        import torch

        return torch.arange(self.n).flip(0) if epoch % 2 else torch.arange(self.n)


def test_tokens_per_source(art):
    data = blocks.ShardedBlocks(art)
    # One whole epoch (10 a, 2 b), then the first 3 blocks of the reversed order (all a).
    assert blocks.tokens_per_source(data, Order(12), 12 + 3) == {"a": (10 + 3) * SEQ, "b": 2 * SEQ}
    # Its first 9 blocks of epoch 0: positions 0-8 are a a a a a a b b a.
    assert blocks.tokens_per_source(data, Order(12), 9) == {"a": 7 * SEQ, "b": 2 * SEQ}
    mixed = blocks.training_blocks(art, {"b": {"epochs": 2}}, seed=0)
    assert blocks.tokens_per_source(mixed, Order(len(mixed)), 6) == {"a": 0, "b": 6 * SEQ}
