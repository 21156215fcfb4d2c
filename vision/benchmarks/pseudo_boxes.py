"""How good are a trained detection run's pseudo-boxes and mined regions? Scored against the hidden boxes.

Only a benchmark may do this: it reads the FULL boxes of the training images, which never reach training.
For each incomplete training image (unaugmented, as the model sees it at evaluation), the task's own
:meth:`~vision.tasks.detection.DetectionTask.teacher_pseudo_boxes` and
:meth:`~vision.tasks.detection.DetectionTask.mine_ignore_boxes` run with the thresholds the run ended
with (fixed or calibrated, see :mod:`vision.engine.score_calibration`), and each output is matched to the
*missing* boxes (full boxes that no kept box covers):

* a pseudo-box is correct when it has IoU >= 0.5 with a missing box of its class;
* a mined region is correct when it has IoU >= 0.5 with a missing box of any class (mining is
  class-agnostic);
* ``recall``: the share of missing boxes that some correct pseudo-box covers.

The calibration state is restored afterwards, so scoring does not change the run's thresholds.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torchvision.ops import box_iou

from vision.engine.score_calibration import box_matches

MATCH_IOU = 0.5


def _missing(full: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``(F,)`` bool: full boxes that no kept box reproduces (a kept box is a full box, so IoU ~ 1)."""
    if kept.numel() == 0:
        return torch.ones(full.shape[0], dtype=torch.bool)
    if full.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    return box_iou(full, kept).max(dim=1).values < 0.99


@torch.no_grad()
def pseudo_box_quality(task, datamodule, max_images: int = 100) -> dict:
    """Precision of the pseudo-boxes and mined regions on up to ``max_images`` incomplete training images.

    Args:
        task: a trained :class:`~vision.tasks.detection.DetectionTask` in ``boxes`` mode with a teacher.
        datamodule: its :class:`~datamodules.detection.DetectionDataModule` (weak labels set up).

    Returns:
        ``{"images", "missing", "pseudo", "pseudo_correct", "precision", "recall", "mined", "mined_correct",
        "mined_precision", "merge_thresholds", "mining_threshold"}``; precisions are None when nothing was
        produced.
    """
    datamodule.setup("fit")
    dataset, weak = datamodule.dataset("train"), datamodule.weak
    full_items = datamodule.images("train")  # unaugmented, full boxes, the model's pixels
    saved = {name: copy.deepcopy(getattr(task, name).state_dict())
             for name in ("merge_calibration", "mining_calibration") if getattr(task, name, None) is not None}
    totals = dict(images=0, missing=0, pseudo=0, pseudo_correct=0, covered=0, mined=0, mined_correct=0)
    try:
        for index, record in enumerate(dataset.images):
            if totals["images"] >= max_images:
                break
            kept = weak.get(record.image_id) if weak is not None else None
            if kept is None or getattr(kept, "complete", True) or not hasattr(kept, "boxes"):
                continue
            item = full_items[index]
            scale = item["scale"].repeat(2)
            kept_boxes = torch.as_tensor(np.asarray(kept.boxes, np.float32)).reshape(-1, 4) * scale
            kept_labels = torch.as_tensor(np.asarray(kept.class_id), dtype=torch.int64)
            missing = _missing(item["boxes"], kept_boxes)
            truth, truth_labels = item["boxes"][missing], item["labels"][missing]
            image = [item["image"].to(task.device)]
            boxes, labels = task.teacher_pseudo_boxes(image, [kept_boxes.to(task.device)], [False],
                                                      [kept_labels.to(task.device)])[0]
            labelled = torch.cat([kept_boxes, boxes.cpu()])
            mined = task.mine_ignore_boxes(image, [labelled.to(task.device)], [False],
                                           human=[kept_boxes.to(task.device)])[0].cpu()
            correct = box_matches(boxes.cpu(), truth, MATCH_IOU, labels.cpu(), truth_labels)
            totals["images"] += 1
            totals["missing"] += int(missing.sum())
            totals["pseudo"] += int(boxes.shape[0])
            totals["pseudo_correct"] += int(correct.any(dim=1).sum())
            totals["covered"] += int(correct.any(dim=0).sum())
            totals["mined"] += int(mined.shape[0])
            totals["mined_correct"] += int(box_matches(mined, truth, MATCH_IOU).any(dim=1).sum())
        result = dict(totals)
        result["precision"] = totals["pseudo_correct"] / totals["pseudo"] if totals["pseudo"] else None
        result["recall"] = totals["covered"] / totals["missing"] if totals["missing"] else None
        result["mined_precision"] = totals["mined_correct"] / totals["mined"] if totals["mined"] else None
        calibration = getattr(task, "merge_calibration", None)
        result["merge_thresholds"] = (calibration.thresholds().tolist() if calibration is not None
                                      else [float(task.hparams.merge_score)] * int(task.hparams.num_classes))
        result["mining_threshold"] = float(task.mining_threshold())
        return result
    finally:
        for name, state in saved.items():
            getattr(task, name).load_state_dict(state)
