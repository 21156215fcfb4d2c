"""Resume an interrupted run exactly: the same batches and the same random draws as if never stopped.

Model, optimizer, scheduler, EMA teacher, second student, prototype queues and FreeMatch thresholds
are module state or Lightning state, so a checkpoint holds them. Two things are not:

* **Randomness inside training steps.** Dropout, ``torch.randperm`` pixel sampling
  (:class:`vision.tasks.events.EventSegmentation`), random negative boxes
  (:mod:`vision.models.detection.point_to_box`) and torchvision's detection samplers draw from
  torch's *global* generator, whose state Lightning does not save; a resumed process would reach
  batch ``k`` with another stream than a process that trained batches ``1 .. k-1``. So every
  training batch reseeds the global generators (torch on every device, numpy's legacy global one,
  Python's ``random``) from ``(seed, epoch, batch index)`` only, as the data side already draws
  from ``(seed, epoch, sample)`` (:mod:`datamodules.sampling`).
* **The position in the interrupted epoch**, when Lightning builds the training loader before it
  restores the checkpoint, which it does as soon as ``configure_optimizers`` asks for
  ``trainer.estimated_stepping_batches`` (every task's cosine schedule does): it then never hands
  the saved position to the loader. :class:`ExactResume` hands it over at ``on_train_start``, before
  the first batch is drawn (:class:`~datamodules.sampling.ResumableDataLoader` reads nothing earlier).

``sparsevision fit`` adds :class:`ExactResume` by default; Python users add it to ``Trainer(callbacks=[...])``.
A run killed after any checkpoint and resumed with ``--ckpt_path last`` then ends with the same weights
as one that was never interrupted (``tests/reliability/test_resume.py``).
"""

from __future__ import annotations

import os
import random
from typing import Any, Optional

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import CombinedLoader


def batch_seed(seed: int, epoch: int, batch_idx: int) -> int:
    """A 64-bit seed from ``(seed, epoch, batch_idx)`` (numpy's ``SeedSequence`` mixes the three).

    >>> batch_seed(0, 1, 2) == batch_seed(0, 1, 2), batch_seed(0, 1, 2) == batch_seed(0, 2, 1)
    (True, False)
    """
    words = np.random.SeedSequence([int(seed), int(epoch), int(batch_idx)]).generate_state(2, np.uint64)
    return int(words[0])


def seed_global_generators(value: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy's legacy global generator and Python's ``random``."""
    torch.manual_seed(value)
    np.random.seed(value % 2**32)  # noqa: NPY002 - the legacy global generator is what third-party code draws from
    random.seed(value)


class ExactResume(Callback):
    """Reseed training steps from ``(seed, epoch, batch)`` and restore the training loader's position.

    Args:
        seed: the run's seed; None uses the one ``seed_everything`` set (``PL_GLOBAL_SEED``, which
            LightningCLI's ``seed_everything`` sets), or 0.

    The callback stores nothing in checkpoints: its seeds are derived, and the loader position is
    the one Lightning saves with the fit loop (``loops.fit_loop.state_dict.combined_loader``).

    >>> callback = ExactResume(seed=3)
    >>> callback.on_train_batch_start(None, None, None, batch_idx=5)  # no trainer: epoch 0
    >>> first = torch.rand(2)
    >>> callback.on_train_batch_start(None, None, None, batch_idx=5)
    >>> bool(torch.equal(first, torch.rand(2)))
    True
    """

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed
        self._loader_states: list[dict[str, Any]] = []

    def _seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != "fit":  # validate / test / predict from a checkpoint: no training to resume
            self._loader_states = []
            return
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))

    def on_train_start(self, trainer, pl_module) -> None:
        from datamodules.sampling import ResumableDataLoader

        states, self._loader_states = self._loader_states, []
        if not states or trainer.train_dataloader is None:
            return
        # the same order as Lightning's own: the stateful loaders among the flattened training loaders
        loaders = CombinedLoader(trainer.train_dataloader).flattened
        stateful = [loader for loader in loaders if callable(getattr(loader, "load_state_dict", None))
                    and callable(getattr(loader, "state_dict", None))]
        if len(stateful) != len(states):
            return  # not the loaders of the checkpoint; Lightning warns about it itself
        for loader, state in zip(stateful, states):
            if isinstance(loader, ResumableDataLoader):  # idempotent, so no harm if Lightning did it too
                loader.load_state_dict(state)

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        epoch = trainer.current_epoch if trainer is not None else 0
        seed_global_generators(batch_seed(self._seed(), epoch, batch_idx))
