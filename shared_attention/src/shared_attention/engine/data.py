"""A resumable, rank-aware sampler: the order of epoch ``e`` depends only on (seed, e), and iteration can
start in the middle of an epoch, so a resumed run sees exactly the batches an uninterrupted run would."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Shuffles (or not) per epoch from ``seed + epoch``, shards across ranks like ``DistributedSampler``,
    and skips the first ``start_index`` samples of this rank's share (set by the engine on resume).

    Args:
        data: the dataset (only its length is used).
        shuffle: shuffle each epoch.
        seed: base seed.
        rank: this rank. world_size: number of ranks.
        drop_last: drop the tail that does not divide evenly across ranks instead of padding by repetition.
    """

    def __init__(
        self,
        data: Sized,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n = len(data)
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_index = 0
        if drop_last:
            self.per_rank = self.n // world_size
        else:
            self.per_rank = -(-self.n // world_size)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Selects the epoch's order and where in this rank's share to start."""
        self.epoch = epoch
        self.start_index = start_index

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        if total > len(order):
            order += (order * (total // max(len(order), 1) + 1))[: total - len(order)]
        order = order[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start_index :])

    def __len__(self) -> int:
        return max(self.per_rank - self.start_index, 0)
