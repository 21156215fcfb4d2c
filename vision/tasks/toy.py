"""A tiny per-point classifier, to exercise the CLI, checkpoints and loggers before any real task.

Pairs with :class:`datamodules.toy.ToyPointDataModule`; see ``tests/configs/tiny.yaml``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassJaccardIndex

from vision.labels.types import IGNORE_INDEX


class ToyPointSegmenter(L.LightningModule):
    """Per-point MLP on ``points: (B, N, 2)`` giving ``logits: (B, C, N)``.

    Trains with cross-entropy on ``target`` (``IGNORE_INDEX`` where unlabelled) and scores
    ``val/miou`` / ``test/miou`` against the full ``labels``.
    """

    def __init__(self, num_classes: int = 3, hidden: int = 32, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))
        self.val_miou = MulticlassJaccardIndex(num_classes, average="macro")
        self.test_miou = MulticlassJaccardIndex(num_classes, average="macro")

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.net(points).transpose(1, 2)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["points"])
        loss = nn.functional.cross_entropy(logits, batch["target"], ignore_index=IGNORE_INDEX)
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def _score(self, batch: dict, metric: MulticlassJaccardIndex, key: str) -> None:
        metric.update(self(batch["points"]).argmax(1), batch["labels"])
        self.log(key, metric, prog_bar=True, batch_size=batch["points"].shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score(batch, self.val_miou, "val/miou")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._score(batch, self.test_miou, "test/miou")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        probs = self(batch["points"]).softmax(1)
        confidence, label = probs.max(1)
        return {"sample_id": batch["sample_id"], "label": label, "confidence": confidence}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
