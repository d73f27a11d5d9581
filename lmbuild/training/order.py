"""The order in which training reads its blocks: a seeded permutation per epoch.

What this module does not do: read blocks (:mod:`lmbuild.tokens.blocks`), write or check a
checkpoint's ``data_order.json`` (:mod:`lmbuild.training.trainer`,
:func:`lmbuild.training.checkpoints.check_resume`), or shard between processes.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Sampler


class BlockOrder(Sampler[int]):
    """The training blocks in a seeded random order, a fresh permutation each epoch.

    The permutation is a function of (seed, epoch, number of blocks) alone, so it can be
    recorded in a checkpoint (:meth:`state`) and checked on resume. It does NOT shard: under
    DDP accelerate splits each global batch of this order between the processes.

    ``skips``: ``(at, length)`` pairs from spike rollbacks: from position ``at`` of the stream
    the Trainer reads (epochs laid end to end), the order jumps ``length`` blocks ahead, so the
    data window that caused a spike is never read again. Each epoch still yields ``n`` blocks,
    so the Trainer's step and epoch counting is unchanged.
    """

    def __init__(self, n: int, seed: int, skips=()):
        self.n, self.seed, self.epoch = n, seed, 0
        self.skips = sorted({(int(a), int(b)) for a, b in skips})

    def source(self, position: int) -> int:
        """Where stream ``position`` reads in the unskipped order."""
        return position + sum(length for at, length in self.skips if at <= position)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, epoch: int | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + (self.epoch if epoch is None else epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        if not self.skips:
            return iter(self.permutation().tolist())
        perms: dict[int, list[int]] = {}

        def block(position: int) -> int:
            q = self.source(position)
            if q // self.n not in perms:
                perms[q // self.n] = self.permutation(q // self.n).tolist()
            return perms[q // self.n][q % self.n]

        return (block(self.epoch * self.n + i) for i in range(self.n))

    def __len__(self) -> int:
        return self.n

    def state(self, epoch: int, blocks_consumed: int) -> dict:
        """What a checkpoint records of the order (``data_order.json``) after ``blocks_consumed``."""
        perm = self.permutation(epoch)
        return {
            "sampler": "torch.randperm(blocks, generator=manual_seed(seed * 1000003 + epoch))",
            "seed": self.seed,
            "epoch": epoch,
            "blocks": self.n,
            "blocks_consumed": blocks_consumed,
            "permutation_sha256": hashlib.sha256(perm.numpy().tobytes()).hexdigest(),
            "first_blocks": perm[:8].tolist(),
            "skips": [list(w) for w in self.skips],
        }
