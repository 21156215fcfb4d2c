"""The training sampler every DataModule uses, and the loader that lets a run resume mid-epoch.

:class:`EpochSampler` yields global indices ``epoch * length + i``: a dataset receiving global index
``g`` knows both the epoch (``g // length``) and the item, so its augmentation can be seeded from
``(seed, epoch, item)`` alone. Lightning calls :meth:`EpochSampler.set_epoch` before each epoch.

:class:`ResumableDataLoader` makes an interrupted epoch resumable: Lightning saves the
``state_dict()`` of a training loader that has one in every checkpoint (``"combined_loader"`` in the
fit loop's state) and hands it back to ``load_state_dict`` on ``fit(ckpt_path=...)``. Without it
Lightning restarts the interrupted epoch's data from its first batch (and warns "your dataloader is
not resumable"). With it, a run killed after batch ``k`` of epoch ``e`` and resumed sees exactly the
batches ``k+1 ...`` that the uninterrupted run saw, on any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

import numpy as np
from torch.utils.data import DataLoader, Sampler

from vision.labels.seeding import sample_rng


class EpochSampler(Sampler[int]):
    """Global indices of one epoch, in order, or shuffled by ``(seed, epoch)`` when ``seed`` is given.

    >>> sampler = EpochSampler(3)
    >>> sampler.set_epoch(2)
    >>> list(sampler)
    [6, 7, 8]
    >>> sampler.resume_at(epoch=2, position=1)  # the next pass over epoch 2 starts at its second index
    >>> list(sampler), list(sampler)
    ([7, 8], [6, 7, 8])
    """

    def __init__(self, length: int, seed: Optional[int] = None) -> None:
        self.length, self.seed, self.epoch = int(length), seed, 0
        self._resume: Optional[tuple[int, int]] = None  # (epoch, first position) of the next pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, position: int) -> None:
        """Make the next pass over ``epoch`` start at its ``position``-th index (an interrupted epoch).

        Also sets the current epoch: Lightning may create the loader's iterator (and workers draw
        indices from it) before it calls :meth:`set_epoch` on a resumed run.
        """
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(position))

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """``(length,)`` int64 global indices of ``epoch``, in the order they are yielded."""
        if self.seed is None:
            return np.arange(epoch * self.length, (epoch + 1) * self.length, dtype=np.int64)
        order = sample_rng(int(self.seed), f"order-epoch-{epoch}").permutation(self.length)
        return epoch * self.length + order.astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None  # only the first pass after resume_at starts late
        return iter(self.epoch_indices(self.epoch)[start:].tolist())

    def __len__(self) -> int:
        # the full epoch even when resuming: Lightning counts the epoch's batches (and the learning-rate
        # schedule's total steps) from it, and its progress counters already hold the batches done
        return self.length


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` whose position in the epoch is saved in checkpoints.

    Same arguments as ``DataLoader`` (Lightning re-creates it from them, e.g. to insert a distributed
    sampler). ``state_dict()`` is ``{"epoch": e, "batches": k}``: ``k`` batches of epoch ``e`` were
    handed out. ``load_state_dict`` makes the next pass over epoch ``e`` start at batch ``k + 1``:
    through :meth:`EpochSampler.resume_at` without reading the skipped samples, or, for other
    samplers (e.g. a distributed wrapper), by drawing and dropping ``k`` batches.

    Batches are counted when the loader yields them, which is when Lightning's training loop takes
    them (it prefetches nothing from a loader whose length is known), so a checkpoint written at the
    end of batch ``k`` holds ``k``. Lightning applies the saved state only if it builds the loader
    after restoring the checkpoint; a ``configure_optimizers`` that asks for
    ``trainer.estimated_stepping_batches`` builds it before, and then
    :class:`vision.engine.exact_resume.ExactResume` applies it.

    >>> loader = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochSampler(5))
    >>> batches = iter(loader)
    >>> _ = next(batches), next(batches)
    >>> state = loader.state_dict()
    >>> state
    {'epoch': 0, 'batches': 2}
    >>> resumed = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochSampler(5))
    >>> resumed.load_state_dict(state)
    >>> [batch.tolist() for batch in resumed]
    [[4]]
    """

    _position = 0  # batches handed out in the current pass (class attributes: __init__ is DataLoader's)
    _pending: Optional[tuple[int, int]] = None  # (epoch, batches) given to load_state_dict, not yet resumed
    _drop = False  # resume by drawing and dropping batches (samplers other than EpochSampler)

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch(), "batches": int(self._position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self._drop = not (isinstance(self.sampler, EpochSampler) and self.batch_size is not None)
        if not self._drop:
            # consecutive indices form a batch, so batch k + 1 starts at index k * batch_size
            self.sampler.resume_at(epoch, batches * self.batch_size)
        elif callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)
        self._pending = (epoch, batches)

    def __iter__(self):
        # a generator: nothing is read (and no worker draws an index) before the first batch is asked
        # for, so a position restored after Lightning created the iterator still applies
        pending, self._pending = self._pending, None
        start = pending[1] if pending is not None and pending[0] == self._epoch() else 0
        iterator = super().__iter__()
        if self._drop:
            for _ in range(start):
                next(iterator, None)
        self._position = start
        for batch in iterator:
            self._position += 1
            yield batch
