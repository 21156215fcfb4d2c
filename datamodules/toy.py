"""A tiny seeded point-segmentation dataset, for tests and CLI smoke runs (not a benchmark).

Each sample is ``num_points`` 2D points in ``[-1, 1]^2``; the class of a point is the ring it lies
in (distance from a per-sample centre), so a per-point MLP on ``(x, y)`` can learn it but a
constant prediction cannot. Weak labels work as in the real tasks: a protocol (``weak_labels``) or
a weak-label file (``weak_label_file``) replaces the training targets, keyed by point index.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.distributed import evaluation_sampler
from datamodules.sampling import EpochSampler, ResumableDataLoader
from vision.labels.protocols import WeakLabelProtocol
from vision.labels.resolve import resolve_weak_labels
from vision.labels.seeding import sample_rng
from vision.labels.types import IGNORE_INDEX, DenseLabels


def make_toy_sample(seed: int, sample_id: str, num_points: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(N, 2)`` float32 and labels ``(N,)`` int64 of one toy sample."""
    rng = sample_rng(seed, sample_id)
    points = rng.uniform(-1.0, 1.0, size=(num_points, 2)).astype(np.float32)
    centre = rng.uniform(-0.2, 0.2, size=2)
    radius = np.linalg.norm(points - centre, axis=1)
    labels = np.minimum((radius / 1.2 * num_classes).astype(np.int64), num_classes - 1)
    return points, labels


class ToyPointDataset(Dataset):
    """Items ``{"sample_id", "points" (N, 2), "target" (N,)}``, plus the full ``labels`` unless ``train``."""

    def __init__(self, sample_ids: list[str], seed: int, num_points: int, num_classes: int,
                 targets: Optional[dict[str, np.ndarray]] = None, train: bool = False) -> None:
        self.sample_ids, self.targets, self.train = sample_ids, targets, train
        self.seed, self.num_points, self.num_classes = seed, num_points, num_classes

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict:
        sample_id = self.sample_ids[int(i) % len(self.sample_ids)]  # training indices are global (EpochSampler)
        points, labels = make_toy_sample(self.seed, sample_id, self.num_points, self.num_classes)
        target = labels if self.targets is None else self.targets[sample_id]
        item = {"sample_id": sample_id, "points": torch.from_numpy(points), "target": torch.from_numpy(target)}
        if not self.train:  # full labels never reach a training batch
            item["labels"] = torch.from_numpy(labels)
        return item


class ToyPointDataModule(L.LightningDataModule):
    """Seeded toy splits ``train``, ``val``, ``test``; ``predict_split`` chooses what ``predict`` reads.

    Args:
        num_train, num_val, num_test: samples per split.
        num_points: points per sample.
        num_classes: number of rings.
        data_seed: seed of the generated data (independent of the training seed).
        batch_size: samples per batch.
        weak_labels, weak_label_seed, weak_label_file: sparse training labels (CONVENTIONS.md).
        predict_split: split used by ``predict`` (``train`` for self-training rounds).
    """

    def __init__(self, num_train: int = 16, num_val: int = 4, num_test: int = 4, num_points: int = 256,
                 num_classes: int = 3, data_seed: int = 0, batch_size: int = 4,
                 weak_labels: Optional[WeakLabelProtocol] = None, weak_label_seed: int = 0,
                 weak_label_file: Optional[str] = None, predict_split: str = "test") -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["weak_labels"])
        self.weak_labels = weak_labels
        self.num_classes = num_classes
        self.weak = None

    def sample_ids(self, split: str) -> list[str]:
        count = {"train": self.hparams.num_train, "val": self.hparams.num_val, "test": self.hparams.num_test}[split]
        return [f"{split}_{i:04d}" for i in range(count)]

    def full_labels(self, split: str = "train") -> Iterator[tuple[str, DenseLabels]]:
        for sample_id in self.sample_ids(split):
            _, labels = make_toy_sample(self.hparams.data_seed, sample_id, self.hparams.num_points, self.num_classes)
            yield sample_id, DenseLabels(labels)

    def weak_label_set(self):
        """The training split's weak labels (made once, cached), or None under full supervision."""
        return resolve_weak_labels(lambda: self.full_labels("train"), "pointcloud", self.weak_labels,
                                   self.hparams.weak_label_seed, self.hparams.weak_label_file)

    def prepare_data(self) -> None:
        if self.weak_labels is not None:
            self.weak_label_set()

    def setup(self, stage: Optional[str] = None) -> None:
        self.weak = self.weak_label_set()

    def _targets(self) -> Optional[dict[str, np.ndarray]]:
        if self.weak is None:
            return None
        targets = {}
        for sample_id in self.sample_ids("train"):
            target = np.full(self.hparams.num_points, IGNORE_INDEX, np.int64)
            labels = self.weak[sample_id]
            target[labels.index] = labels.class_id
            targets[sample_id] = target
        return targets

    def _dataset(self, split: str, train: bool = False) -> ToyPointDataset:
        return ToyPointDataset(self.sample_ids(split), self.hparams.data_seed, self.hparams.num_points,
                               self.num_classes, self._targets() if train else None, train=train)

    def train_dataloader(self) -> DataLoader:
        dataset = self._dataset("train", train=True)  # shuffled by (data_seed, epoch): resumable mid-epoch
        return ResumableDataLoader(dataset, batch_size=self.hparams.batch_size,
                                   sampler=EpochSampler(len(dataset), seed=self.hparams.data_seed))

    def _evaluation_loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)  # under DDP each rank scores its own share, no padded repeats
        return DataLoader(dataset, batch_size=self.hparams.batch_size, sampler=evaluation_sampler(dataset, self.trainer))

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(self.hparams.predict_split), batch_size=self.hparams.batch_size)
