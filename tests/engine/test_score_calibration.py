"""LabelledScoreCalibration: thresholds follow the teacher's scores on the labelled boxes it finds."""

from __future__ import annotations

import math

import pytest
import torch

from vision.engine.score_calibration import LabelledScoreCalibration, best_hit_scores

BOX = torch.tensor([[0.0, 0.0, 10.0, 10.0]])


def detections(*rows):
    """rows of (x1, y1, x2, y2, score, label) -> (boxes, scores, labels)."""
    t = torch.tensor(rows, dtype=torch.float32)
    return t[:, :4], t[:, 4], t[:, 5].long()


def test_best_hit_needs_overlap_and_the_same_class():
    boxes, scores, labels = detections((0, 0, 10, 10, 0.3, 1), (0, 0, 10, 9, 0.6, 0), (40, 40, 50, 50, 0.9, 1))
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [60.0, 60.0, 70.0, 70.0]])
    same_class = best_hit_scores(boxes, scores, gt, 0.5, labels, torch.tensor([1, 1]))
    assert same_class[0].item() == pytest.approx(0.3) and math.isnan(same_class[1].item())
    any_class = best_hit_scores(boxes, scores, gt, 0.5)
    assert any_class[0].item() == pytest.approx(0.6)
    assert best_hit_scores(boxes[:0], scores[:0], gt).isnan().all()


def test_unseen_classes_keep_the_cap_and_hits_pull_the_threshold_down():
    calibration = LabelledScoreCalibration(num_classes=3, cap=0.9, ratio=1.0, min_score=0.2, momentum=0.5)
    assert calibration.thresholds().tolist() == pytest.approx([0.9, 0.9, 0.9])
    calibration.update([detections((0, 0, 10, 10, 0.4, 1))], [(BOX, torch.tensor([1]))])
    assert calibration.thresholds().tolist() == pytest.approx([0.9, 0.4, 0.9])  # first hit: taken as is
    calibration.update([detections((0, 0, 10, 10, 0.6, 1))], [(BOX, torch.tensor([1]))])
    assert calibration.thresholds()[1].item() == pytest.approx(0.5)  # EMA, momentum 0.5
    calibration.update([detections((0, 0, 10, 10, 0.05, 2))], [(BOX, torch.tensor([2]))])
    assert calibration.thresholds()[2].item() == pytest.approx(0.2)  # never below min_score
    assert calibration.threshold_for(torch.tensor([2, 1, 0])).tolist() == pytest.approx([0.2, 0.5, 0.9])


def test_a_confident_teacher_gets_the_papers_fixed_threshold():
    calibration = LabelledScoreCalibration(num_classes=1, cap=0.9, ratio=1.0)
    calibration.update([detections((0, 0, 10, 10, 0.99, 0))], [(BOX, torch.tensor([0]))])
    assert calibration.thresholds().item() == pytest.approx(0.9)


def test_misses_lower_the_recall_but_not_the_threshold():
    calibration = LabelledScoreCalibration(num_classes=1, cap=0.8, ratio=0.75, momentum=0.0, class_agnostic=True)
    far = detections((50, 50, 60, 60, 0.7, 0))
    calibration.update([(far[0], far[1], None)], [(BOX, torch.tensor([0]))])
    assert calibration.recall.item() == 0.0 and calibration.threshold_for().item() == pytest.approx(0.8)
    hit = detections((0, 0, 10, 10, 0.4, 0))
    calibration.update([(hit[0], hit[1], None)], [(BOX, torch.tensor([0]))])
    assert calibration.recall.item() == 1.0 and calibration.threshold_for().item() == pytest.approx(0.3)


def test_state_travels_in_the_state_dict():
    calibration = LabelledScoreCalibration(num_classes=2, cap=0.9)
    calibration.update([detections((0, 0, 10, 10, 0.5, 0))], [(BOX, torch.tensor([0]))])
    restored = LabelledScoreCalibration(num_classes=2, cap=0.9)
    restored.load_state_dict(calibration.state_dict())
    assert restored.thresholds().tolist() == pytest.approx([0.5, 0.9])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_score"):
        LabelledScoreCalibration(num_classes=2, cap=0.5, min_score=-0.1)
    with pytest.raises(ValueError, match="labels"):
        LabelledScoreCalibration(num_classes=2, cap=0.9).threshold_for()


def test_a_cap_below_min_score_is_the_threshold():
    calibration = LabelledScoreCalibration(num_classes=1, cap=0.0, min_score=0.2)  # "mine everything"
    calibration.update([detections((0, 0, 10, 10, 0.5, 0))], [(BOX, torch.tensor([0]))])
    assert calibration.thresholds().tolist() == [0.0]
