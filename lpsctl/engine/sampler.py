"""Iteration-based, resumable data order: sample position p of the run maps to one image and one augmentation seed.

The order depends only on (seed, p), so resuming at iteration k replays exactly what a straight run would have seen,
with any number of DataLoader workers and any world size that divides the global batch the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[int]):
    """Yields global sample positions for this rank: global batch i holds positions [i·B·W, (i+1)·B·W), rank r takes
    its B consecutive positions. Infinite; starts at `start_iteration`."""

    def __init__(self, *, batch_size: int, world_size: int = 1, rank: int = 0, start_iteration: int = 0) -> None:
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.start_iteration = start_iteration

    def __iter__(self) -> Iterator[int]:
        iteration = self.start_iteration
        global_batch = self.batch_size * self.world_size
        while True:
            first = iteration * global_batch + self.rank * self.batch_size
            yield from range(first, first + self.batch_size)
            iteration += 1


class PositionDataset(Dataset):
    """Maps a global sample position to (image index, augmentation seed) and loads that sample.

    Epoch e is a permutation of the images drawn from `seed + e`; the augmentation seed is a hash of (seed, p).
    The wrapped dataset must offer `load(index, seed)`.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._permutations: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def index_of(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.dataset))
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutations = {epoch: torch.randperm(len(self.dataset), generator=generator)}
        return int(self._permutations[epoch][offset])

    def __getitem__(self, position: int) -> Any:
        augmentation_seed = (self.seed * 2_654_435_761 + position * 40_503) % (2**31 - 1)
        return self.dataset.load(self.index_of(position), seed=augmentation_seed)
