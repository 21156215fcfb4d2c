"""pseudo_box_quality: a run's pseudo-boxes and mined regions scored against the boxes it never saw."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vision.benchmarks.pseudo_boxes import pseudo_box_quality
from vision.labels.types import BoxLabels
from vision.tasks.detection import DetectionTask, TorchvisionDetector

KEPT = [4.0, 4.0, 24.0, 24.0]
MISSING = [[36.0, 36.0, 60.0, 60.0], [36.0, 2.0, 60.0, 20.0]]  # class 1, class 0


class OneImage:
    """The datamodule surface pseudo_box_quality reads: one 64 x 64 training image, one of 3 boxes kept."""

    def __init__(self):
        self.weak = {"a": BoxLabels([KEPT], [1], complete=False)}
        self.record = SimpleNamespace(image_id="a")

    def setup(self, stage):
        pass

    def dataset(self, split):
        return SimpleNamespace(images=[self.record])

    def images(self, split):
        return [{"image": torch.rand(3, 64, 64), "boxes": torch.tensor([KEPT, *MISSING]),
                 "labels": torch.tensor([1, 1, 0]), "scale": torch.tensor([1.0, 1.0])}]


def task_with(thresholds: str, detections: dict, candidates: tuple) -> DetectionTask:
    torch.manual_seed(0)
    detector = TorchvisionDetector("fcos", num_classes=2, min_size=64, max_size=64, fpn_channels=64)
    task = DetectionTask(detector, num_classes=2, thresholds=thresholds, merge_score=0.5, mining_score=0.5)
    task.teacher.forward = lambda images: [detections]
    task.teacher.model.objectness_candidates = lambda images: [candidates]
    return task


def test_counts_correct_pseudo_boxes_and_mined_regions():
    detections = {"boxes": torch.tensor([MISSING[0], [2.0, 40.0, 20.0, 60.0]]),  # right; nothing there
                  "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 0])}
    candidates = (torch.tensor([MISSING[1], KEPT, [40.0, 40.0, 58.0, 58.0]]),  # missing; labelled; on a pseudo-box
                  torch.tensor([0.95, 0.99, 0.9]))
    scores = pseudo_box_quality(task_with("fixed", detections, candidates), OneImage())
    assert (scores["images"], scores["missing"], scores["pseudo"], scores["pseudo_correct"]) == (1, 2, 2, 1)
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5
    assert (scores["mined"], scores["mined_precision"]) == (1, 1.0)
    assert scores["merge_thresholds"] == [0.5, 0.5] and scores["mining_threshold"] == 0.5


def test_scoring_leaves_the_calibrated_thresholds_as_they_were():
    detections = {"boxes": torch.tensor([[4.0, 4.0, 23.0, 24.0], MISSING[0]]), "scores": torch.tensor([0.3, 0.45]),
                  "labels": torch.tensor([1, 1])}
    task = task_with("calibrated", detections, (torch.zeros(0, 4), torch.zeros(0)))
    before = task.merge_calibration.thresholds().tolist()
    scores = pseudo_box_quality(task, OneImage())
    assert scores["merge_thresholds"] == pytest.approx([0.5, 0.375])  # class 1 hit at 0.3: 1.25 x 0.3, capped 0.5
    assert scores["pseudo_correct"] == 1 and scores["precision"] == 1.0
    assert task.merge_calibration.thresholds().tolist() == before
