"""Multi-process pieces shared by every DataModule: an evaluation sampler and a weak-label check.

Under DDP, Lightning replaces the sampler of a validation / test loader with a ``DistributedSampler``
that *pads* the split with repeated samples so that every rank gets as many batches. Those repeats
enter the metrics (a scene or image counted twice), so a 2-process test would not equal a
1-process test. :func:`evaluation_sampler` gives each rank a disjoint share of the split instead,
every sample exactly once, using Lightning's own ``UnrepeatedDistributedSampler`` (the sampler it
uses for ``predict``). Lightning keeps a loader's sampler when it is already a ``DistributedSampler``,
so the DataModules only pass ``sampler=evaluation_sampler(dataset, self.trainer)``; torchmetrics then
sums the per-rank states (confusion matrices, detections) into the single-process result.

Training loaders are left to Lightning: it wraps the :class:`~datamodules.sampling.EpochSampler` in a
``DistributedSamplerWrapper`` (same seed on every rank, ``set_epoch`` forwarded), so each rank trains on
its own share of the epoch's global indices.

:class:`WeakLabelRankCheck` hashes the weak labels each rank trains on and stops the run if any two
ranks differ (e.g. nodes without a shared cache drawing with different protocol options).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Optional

import numpy as np
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset

#: The label arrays of PointLabels / BoxLabels that define what a run trains on.
_LABEL_FIELDS = ("index", "xy", "boxes", "class_id", "source", "confidence")


def _replicas(trainer) -> Optional[tuple[int, int]]:
    """``(num_replicas, rank)`` of a distributed run, or None for a single process."""
    kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
    if kwargs:
        return int(kwargs["num_replicas"]), int(kwargs["rank"])
    if trainer is None and dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return None


def evaluation_sampler(dataset: Dataset, trainer=None) -> Optional[UnrepeatedDistributedSampler]:
    """A sampler giving this rank items ``rank, rank + W, ...`` of ``dataset`` (no padding), or None.

    None (the DataLoader's default sequential order) when the run is not distributed. ``trainer`` is
    the DataModule's ``self.trainer``; without one, an initialised ``torch.distributed`` decides.

    Raises:
        ValueError: the split has fewer samples than ranks; an idle rank would hang the others at the
            first collective call (DDP's buffer broadcast, the metric sync).

    >>> evaluation_sampler(list(range(5))) is None  # single process: plain sequential loader
    True
    >>> list(evaluation_sampler(list(range(5)), _FakeTrainer(num_replicas=2, rank=1)))
    [1, 3]
    """
    replicas = _replicas(trainer)
    if replicas is None or replicas[0] <= 1:
        return None
    num_replicas, rank = replicas
    if 0 < len(dataset) < num_replicas:
        raise ValueError(f"an evaluation split of {len(dataset)} samples cannot be shared by {num_replicas} "
                         "processes without repeats: use fewer devices for validate/test")
    return UnrepeatedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)


class _FakeTrainer:
    """Stands in for a Trainer in doctests and unit tests: only ``distributed_sampler_kwargs``."""

    def __init__(self, num_replicas: int, rank: int) -> None:
        self.distributed_sampler_kwargs = {"num_replicas": num_replicas, "rank": rank}


def weak_label_digest(weak) -> str:
    """SHA-256 of a weak-label set's content (sorted sample ids and label arrays), or of ``None``.

    The header's protocol, seed and source hash are included; its ``created`` time is not, so two
    nodes that each drew the same labels into their own cache agree.
    """
    digest = hashlib.sha256()
    if weak is None:
        digest.update(b"full-supervision")
        return digest.hexdigest()
    for key in ("task", "protocol", "seed", "source_sha256"):
        digest.update(f"{key}={getattr(weak, key, None)!r};".encode())
    labels = getattr(weak, "labels", weak)
    for sample_id in sorted(labels):
        digest.update(f"sample={sample_id};".encode())
        for name in _LABEL_FIELDS:
            value = getattr(labels[sample_id], name, None)
            if value is not None:
                array = np.ascontiguousarray(value)
                digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
                digest.update(array.tobytes())
    return digest.hexdigest()


class WeakLabelRankCheck(Callback):
    """At the start of ``fit``, every rank hashes the weak labels it trains on; a mismatch stops the run.

    Each rank prints ``sparsevision: weak labels sha256 <digest> (rank R of W)`` to stderr. Add it with
    ``--trainer.callbacks+=datamodules.distributed.WeakLabelRankCheck``.
    """

    def __init__(self) -> None:
        self.digest: Optional[str] = None

    def on_fit_start(self, trainer, pl_module) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        self.digest = weak_label_digest(getattr(datamodule, "weak", None))
        print(f"sparsevision: weak labels sha256 {self.digest} (rank {trainer.global_rank} of {trainer.world_size})",
              file=sys.stderr, flush=True)
        reference = trainer.strategy.broadcast(self.digest, src=0)
        if not trainer.strategy.reduce_boolean_decision(self.digest == reference, all=True):
            raise RuntimeError(f"weak labels differ between ranks (rank {trainer.global_rank}: {self.digest}, "
                               f"rank 0: {reference}); every rank must train on the same weak-label file")
