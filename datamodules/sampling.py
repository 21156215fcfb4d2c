"""The training sampler every DataModule uses: global indices ``epoch * length + i``.

A dataset receiving global index ``g`` knows both the epoch (``g // length``) and the item, so its
augmentation can be seeded from ``(seed, epoch, item)`` alone. Lightning calls :meth:`set_epoch`
before each epoch; a resumed run therefore sees the same batches as an uninterrupted one, on any
number of dataloader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

from torch.utils.data import Sampler

from vision.labels.seeding import sample_rng


class EpochSampler(Sampler[int]):
    """Global indices of one epoch, in order, or shuffled by ``(seed, epoch)`` when ``seed`` is given.

    >>> sampler = EpochSampler(3)
    >>> sampler.set_epoch(2)
    >>> list(sampler)
    [6, 7, 8]
    """

    def __init__(self, length: int, seed: Optional[int] = None) -> None:
        self.length, self.seed, self.epoch = int(length), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if self.seed is None:
            return iter(range(self.epoch * self.length, (self.epoch + 1) * self.length))
        order = sample_rng(int(self.seed), f"order-epoch-{self.epoch}").permutation(self.length)
        return iter((self.epoch * self.length + order).tolist())

    def __len__(self) -> int:
        return self.length
