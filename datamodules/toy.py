"""A tiny seeded point-segmentation dataset, for tests and CLI smoke runs (not a benchmark).

Each sample is ``num_points`` 2D points in ``[-1, 1]^2``; the class of a point is the ring it lies
in (distance from a per-sample centre), so a per-point MLP on ``(x, y)`` can learn it but a
constant prediction cannot.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vision.labels.seeding import sample_rng


def make_toy_sample(seed: int, sample_id: str, num_points: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(N, 2)`` float32 and labels ``(N,)`` int64 of one toy sample."""
    rng = sample_rng(seed, sample_id)
    points = rng.uniform(-1.0, 1.0, size=(num_points, 2)).astype(np.float32)
    centre = rng.uniform(-0.2, 0.2, size=2)
    radius = np.linalg.norm(points - centre, axis=1)
    labels = np.minimum((radius / 1.2 * num_classes).astype(np.int64), num_classes - 1)
    return points, labels


class ToyPointDataset(Dataset):
    def __init__(self, sample_ids: list[str], seed: int, num_points: int, num_classes: int) -> None:
        self.sample_ids = sample_ids
        self.seed, self.num_points, self.num_classes = seed, num_points, num_classes

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> dict:
        points, labels = make_toy_sample(self.seed, self.sample_ids[i], self.num_points, self.num_classes)
        return {"sample_id": self.sample_ids[i], "points": torch.from_numpy(points),
                "target": torch.from_numpy(labels), "labels": torch.from_numpy(labels)}


class ToyPointDataModule(L.LightningDataModule):
    """Seeded toy splits: ``train``, ``val``, ``test`` and ``predict`` (= train) samples.

    Args:
        num_train, num_val, num_test: samples per split.
        num_points: points per sample.
        num_classes: number of rings.
        data_seed: seed of the generated data (independent of the training seed).
        batch_size: samples per batch.
    """

    def __init__(self, num_train: int = 16, num_val: int = 4, num_test: int = 4, num_points: int = 256,
                 num_classes: int = 3, data_seed: int = 0, batch_size: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_classes = num_classes

    def _split(self, name: str, count: int) -> ToyPointDataset:
        ids = [f"{name}_{i:04d}" for i in range(count)]
        return ToyPointDataset(ids, self.hparams.data_seed, self.hparams.num_points, self.num_classes)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.data_seed)
        return DataLoader(self._split("train", self.hparams.num_train), batch_size=self.hparams.batch_size,
                          shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._split("val", self.hparams.num_val), batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._split("test", self.hparams.num_test), batch_size=self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self._split("train", self.hparams.num_train), batch_size=self.hparams.batch_size)
