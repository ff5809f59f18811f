"""Square-root frequency weighted sampling with replacement, deterministic per epoch and DDP-aware.

A frame's weight is the largest ``1 / sqrt(frequency)`` over its active labels (frequency = (count
+ 1) / frames), 1 for a frame with no label; weights are normalised to mean 1. Each epoch draws
``num_samples`` indices with replacement from a generator seeded by (seed, epoch), identical on
every rank, and rank ``r`` of ``w`` takes every ``w``-th index starting at ``r``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def sqrt_frequency_weights(labels: np.ndarray) -> np.ndarray:
    """Per-frame sampling weights (float64 [N], mean 1) from 0/1 labels [N, C]."""
    y = np.asarray(labels) > 0.5
    n = y.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    inv_sqrt = 1.0 / np.sqrt((y.sum(axis=0) + 1.0) / n)
    w = np.where(y, inv_sqrt[None, :], 0.0).max(axis=1)
    w[~y.any(axis=1)] = 1.0
    return w / w.sum() * n


class EpochSampler(Sampler[int]):
    """Indices for one rank: weighted with replacement (``weights``) or a uniform permutation.

    ``set_epoch(e)`` selects the draw; the same (seed, epoch) always gives the same indices, which
    makes resuming exact. ``num_samples`` defaults to the dataset size; each rank gets
    ``ceil(num_samples / world_size)`` indices (the global draw is padded by wrapping).
    """

    def __init__(
        self,
        n: int,
        weights: np.ndarray | None = None,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n = int(n)
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        self.num_samples = int(num_samples if num_samples is not None else n)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self.per_rank = -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_indices(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.per_rank * self.world_size
        if self.weights is not None:
            return torch.multinomial(self.weights, total, replacement=True, generator=g)
        perm = torch.randperm(self.n, generator=g)
        return perm.repeat(-(-total // max(self.n, 1)))[:total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
