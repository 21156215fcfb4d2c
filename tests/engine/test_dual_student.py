"""DualStudent (EV-WSSS, Jeong et al. ECCV 2024): cross pseudo-labels and feature distillation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vision.engine import DualStudent
from vision.labels.types import IGNORE_INDEX

IGN = IGNORE_INDEX


def logits_from_probs(rows: list[list[float]]) -> torch.Tensor:
    """(N, C) probabilities -> (1, C, N) logits whose softmax gives back those probabilities."""
    return torch.tensor(rows).log().T.unsqueeze(0)


def test_each_student_gets_the_other_students_confident_classes():
    logits_a = logits_from_probs([[0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.45, 0.1, 0.45]])
    logits_b = logits_from_probs([[0.8, 0.1, 0.1], [0.4, 0.3, 0.3], [0.1, 0.2, 0.7]])

    targets_for_a, targets_for_b = DualStudent.cross_pseudo_labels(logits_a, logits_b, threshold=0.5)

    assert targets_for_a.tolist() == [[0, IGN, 2]]  # from student b
    assert targets_for_b.tolist() == [[1, 2, IGN]]  # from student a
    assert targets_for_a.dtype == torch.int64


def test_only_classes_present_in_the_point_labels_become_targets():
    probs = [[0.4, 0.5, 0.1], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]
    logits = torch.cat([logits_from_probs(probs), logits_from_probs(probs)])  # (2, 3, 3)
    present = torch.tensor([[True, False, True],     # frame 0: points of classes 0 and 2 only
                            [False, False, False]])  # frame 1: no point labels at all

    unrestricted, _ = DualStudent.cross_pseudo_labels(logits, logits, threshold=0.5)
    restricted, _ = DualStudent.cross_pseudo_labels(logits, logits, threshold=0.5, present_classes=present)

    assert unrestricted[0].tolist() == [IGN, 1, 2]
    # over {0, 2}: [0.4, 0.1] -> [0.8, 0.2]; [0.2, 0.2] -> [0.5, 0.5] (not > 0.5); [0.1, 0.8] -> 8/9
    assert restricted[0].tolist() == [0, IGN, 2]
    assert restricted[1].tolist() == [IGN, IGN, IGN]
    assert not (restricted == 1).any()


def test_pseudo_labels_carry_no_gradient_into_the_other_student():
    logits_a = torch.randn(2, 4, 5, 6, requires_grad=True)  # event frames: (B, C, H, W)
    logits_b = (3 * torch.randn(2, 4, 5, 6)).requires_grad_(True)

    targets_for_a, _ = DualStudent.cross_pseudo_labels(logits_a, logits_b, threshold=0.3)
    assert targets_for_a.shape == (2, 5, 6) and not targets_for_a.requires_grad
    assert (targets_for_a != IGN).any()
    F.cross_entropy(logits_a, targets_for_a, ignore_index=IGN).backward()

    assert logits_b.grad is None
    assert logits_a.grad.abs().sum() > 0


def test_feature_distillation_value_and_stop_gradient():
    # position 0: a = (3, 0), b = (0, 2): orthogonal, squared distance 2
    # position 1: a = (1, 1), b = (5, 0): cos = 1 / sqrt(2), squared distance 2 - sqrt(2)
    feat_a = torch.tensor([[[3.0, 1.0], [0.0, 1.0]]])  # (B=1, D=2, N=2)
    feat_b = torch.tensor([[[0.0, 5.0], [2.0, 0.0]]])
    loss = DualStudent.feature_distillation(feat_a, feat_b)
    assert loss.item() == pytest.approx((2 + 2 - math.sqrt(2)) / 2)

    # a = (1, 0), b = (0, 1): d||a_hat - b||^2 / da = 2 (a - b) = (2, -2), projected on the unit
    # circle's tangent at a -> (0, -2), times the 0.5 of the average. Each side is pulled towards the
    # other as a fixed target; without the stop-gradient it would get (0, -2).
    feat_a = torch.tensor([[[1.0], [0.0]]], requires_grad=True)
    feat_b = torch.tensor([[[0.0], [1.0]]], requires_grad=True)
    DualStudent.feature_distillation(feat_a, feat_b).backward()
    torch.testing.assert_close(feat_a.grad.flatten(), torch.tensor([0.0, -1.0]))
    torch.testing.assert_close(feat_b.grad.flatten(), torch.tensor([-1.0, 0.0]))


def test_second_student_is_a_seeded_reinitialised_copy_and_both_are_saved():
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    dual = DualStudent(student, seed_b=7)
    again = DualStudent(nn.Linear(3, 2), seed_b=7)

    assert not torch.equal(dual.student_a.weight, dual.student_b.weight)
    assert torch.equal(dual.student_b.weight, again.student_b.weight)  # same seed, same init

    restored = DualStudent(nn.Linear(3, 2), nn.Linear(3, 2))
    restored.load_state_dict(dual.state_dict())
    assert torch.equal(restored.student_a.weight, dual.student_a.weight)
    assert torch.equal(restored.student_b.weight, dual.student_b.weight)
    out_a, out_b = restored(torch.ones(1, 3))
    assert out_a.shape == out_b.shape == (1, 2)


def test_reinitialisation_leaves_the_global_rng_alone_and_from_factory_is_seeded():
    student = nn.Linear(3, 2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    DualStudent(student, seed_b=1)
    assert torch.equal(torch.rand(3), expected)

    first = DualStudent.from_factory(lambda: nn.Linear(3, 2), seed_a=0, seed_b=1)
    second = DualStudent.from_factory(lambda: nn.Linear(3, 2), seed_a=0, seed_b=1)
    assert torch.equal(first.student_a.weight, second.student_a.weight)
    assert not torch.equal(first.student_a.weight, first.student_b.weight)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="present_classes"):
        DualStudent.cross_pseudo_labels(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4),
                                        present_classes=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes differ"):
        DualStudent.cross_pseudo_labels(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="reset_parameters"):
        DualStudent(nn.ReLU())
