"""Semantic-segmentation scores from a torchmetrics confusion matrix: mIoU, accuracy, per-class IoU.

torchmetrics' ``MulticlassJaccardIndex(average="macro")`` averages over *all* classes, so a class that
is absent from both the labels and the predictions of a split counts as IoU 0 and drags the mean down.
The convention of S3DIS / ScanNet / DSEC benchmarks is to average over the classes that occur in the
labels; we keep torchmetrics' distributed confusion matrix and apply that convention on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from vision.labels.types import IGNORE_INDEX


def scores_from_confusion(confusion: torch.Tensor) -> dict:
    """``{"miou", "acc", "iou": (C,) with NaN for classes absent from the labels}`` from ``(C, C)`` counts.

    Rows are labels, columns predictions.

    >>> scores = scores_from_confusion(torch.tensor([[3, 1], [0, 0]]))
    >>> round(float(scores["miou"]), 2), round(float(scores["acc"]), 2), scores["iou"].tolist()[1]
    (0.75, 0.75, nan)
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    labelled = confusion.sum(1)
    union = labelled + confusion.sum(0) - true_positive
    iou = torch.where(labelled > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))
    present = labelled > 0
    miou = iou[present].mean() if present.any() else torch.tensor(float("nan"), dtype=torch.float64)
    acc = true_positive.sum() / labelled.sum().clamp(min=1)
    return {"miou": miou.float(), "acc": acc.float(), "iou": iou.float()}


class SegmentationScores(MulticlassConfusionMatrix):
    """Confusion matrix over labelled entries (``IGNORE_INDEX`` skipped) that computes :func:`scores_from_confusion`.

    ``update(preds, target)`` takes class ids of any matching shape.
    """

    def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None, **kwargs) -> None:
        super().__init__(num_classes=num_classes, ignore_index=IGNORE_INDEX, **kwargs)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]

    def compute(self) -> dict:  # type: ignore[override]
        return scores_from_confusion(super().compute())

    def log_dict(self, stage: str) -> dict[str, torch.Tensor]:
        """``{"<stage>/miou", "<stage>/acc", "<stage>/iou/<class>"}`` (CONVENTIONS.md metric keys)."""
        scores = self.compute()
        out = {f"{stage}/miou": scores["miou"], f"{stage}/acc": scores["acc"]}
        for name, value in zip(self.class_names, scores["iou"]):
            if not torch.isnan(value):
                out[f"{stage}/iou/{name}"] = value
        return out

    def log_to(self, module, stage: str) -> None:
        """Log :meth:`log_dict` from a LightningModule (``<stage>/miou`` on the progress bar), then reset."""
        scores = self.log_dict(stage)
        # compute() already summed every rank's confusion matrix: sync_dist averages equal values (and
        # tells Lightning the epoch value is global, which silences its DDP warning)
        module.log(f"{stage}/miou", scores.pop(f"{stage}/miou"), prog_bar=True, sync_dist=True)
        module.log_dict(scores, sync_dist=True)
        self.reset()
