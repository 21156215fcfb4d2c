"""PseudoLabelLoss: fixed and FreeMatch thresholds, soft targets, present-class restriction."""

from __future__ import annotations

import math

import pytest
import torch

from vision.errors import DataError
from vision.losses import PseudoLabelLoss


def _teacher_probs():
    # Points layout (B=1, C=2, N=3): point 0 is confident, points 1 and 2 are not (threshold 0.95).
    return torch.tensor([[[0.96, 0.5, 0.1],
                          [0.04, 0.5, 0.9]]])


def test_hard_targets_only_above_threshold_fixmatch_normalisation():
    loss_fn = PseudoLabelLoss(threshold=0.95, teacher_inputs="probs")
    student = torch.zeros(1, 2, 3, requires_grad=True)
    loss = loss_fn(student, _teacher_probs())
    # Only point 0 passes, target 0, CE = log 2; divided by all 3 valid points (FixMatch Eq. 4).
    assert loss.item() == pytest.approx(math.log(2) / 3, abs=1e-6)
    assert loss_fn.last_mask_ratio.item() == pytest.approx(1 / 3)
    assert loss_fn.thresholds.tolist() == pytest.approx([0.95, 0.95])
    loss.backward()
    assert torch.equal(student.grad[0, :, 1:], torch.zeros(2, 2))  # points that failed: no gradient
    assert student.grad[0, 0, 0].item() == pytest.approx((0.5 - 1) / 3)  # (softmax - onehot) / 3


def test_valid_mask_removes_entries_from_the_mean():
    loss_fn = PseudoLabelLoss(threshold=0.95, teacher_inputs="probs")
    loss = loss_fn(torch.zeros(1, 2, 3), _teacher_probs(), valid=torch.tensor([[True, True, False]]))
    assert loss.item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    assert loss_fn.last_mask_ratio.item() == pytest.approx(1 / 2)


def test_all_below_threshold_is_zero_with_graph():
    loss_fn = PseudoLabelLoss(threshold=0.99, teacher_inputs="probs")
    student = torch.randn(1, 2, 3, requires_grad=True)
    loss = loss_fn(student, _teacher_probs())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))
    assert loss_fn.last_mask_ratio.item() == 0.0


def test_teacher_logits_get_no_gradient():
    teacher = torch.tensor([[10.0, 0.0], [0.0, 0.1]], requires_grad=True)  # flat (N, C) logits
    student = torch.zeros(2, 2, requires_grad=True)
    loss = PseudoLabelLoss(threshold=0.9)(student, teacher)
    loss.backward()
    assert teacher.grad is None
    assert loss.item() == pytest.approx(math.log(2) / 2, abs=1e-6)  # only row 0 (p = 0.99995) passes


def test_soft_targets_are_kl_to_teacher_and_zero_at_agreement():
    loss_fn = PseudoLabelLoss(threshold=0.95, soft=True, teacher_inputs="probs")
    loss = loss_fn(torch.zeros(1, 2, 3), _teacher_probs())
    kl = 0.96 * math.log(0.96 / 0.5) + 0.04 * math.log(0.04 / 0.5)
    assert loss.item() == pytest.approx(kl / 3, abs=1e-6)
    agreeing_student = _teacher_probs().log()
    assert loss_fn(agreeing_student, _teacher_probs()).item() == pytest.approx(0.0, abs=1e-6)


def test_restrict_to_present_renormalises_before_thresholding():
    # (B=2, C=3, N=1): sample 0 has weak labels of classes {0, 2}; sample 1 has no weak labels.
    teacher = torch.tensor([[[0.5], [0.2], [0.3]],
                            [[0.5], [0.2], [0.3]]])
    present = torch.tensor([[True, False, True], [False, False, False]])
    restricted = PseudoLabelLoss(threshold=0.6, restrict_to_present=True, teacher_inputs="probs")
    student = torch.zeros(2, 3, 1)
    loss = restricted(student, teacher, present_classes=present)
    # Sample 0: (0.5, 0, 0.3) / 0.8 = (0.625, 0, 0.375) -> passes with target 0; sample 1 keeps 0.5 -> fails.
    assert restricted.last_mask_ratio.item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(math.log(3) / 2, abs=1e-6)
    plain = PseudoLabelLoss(threshold=0.6, teacher_inputs="probs")
    assert plain(student, teacher).item() == 0.0
    with pytest.raises(DataError, match="present_classes"):
        restricted(student, teacher)


def test_freematch_thresholds_follow_the_update_rule():
    loss_fn = PseudoLabelLoss(adaptive=True, ema_momentum=0.5, teacher_inputs="probs")
    student = torch.zeros(2, 2)
    # Step 1: mean max-confidence 0.75, mean probs (0.75, 0.25), starting from tau_0 = p_0 = 1/2.
    loss_fn(student, torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
    assert loss_fn.global_threshold.item() == pytest.approx(0.625)  # 0.5 * 0.5 + 0.5 * 0.75
    assert loss_fn.class_probability.tolist() == pytest.approx([0.625, 0.375])
    assert loss_fn.thresholds.tolist() == pytest.approx([0.625, 0.375 / 0.625 * 0.625])
    assert loss_fn.last_mask_ratio.item() == pytest.approx(0.5)  # 0.9 > 0.625 passes, 0.6 does not
    # Step 2: mean max-confidence 0.75, mean probs (0.25, 0.75).
    loss_fn(student, torch.tensor([[0.2, 0.8], [0.3, 0.7]]))
    assert loss_fn.global_threshold.item() == pytest.approx(0.6875)  # 0.5 * 0.625 + 0.5 * 0.75
    assert loss_fn.class_probability.tolist() == pytest.approx([0.4375, 0.5625])
    assert loss_fn.thresholds.tolist() == pytest.approx([7 / 9 * 0.6875, 0.6875])
    assert loss_fn.last_mask_ratio.item() == pytest.approx(1.0)  # 0.8 and 0.7 > 0.6875


def test_freematch_state_survives_state_dict_and_eval_does_not_update():
    trained = PseudoLabelLoss(adaptive=True, ema_momentum=0.5, teacher_inputs="probs")
    trained(torch.zeros(2, 2), torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
    restored = PseudoLabelLoss(adaptive=True, ema_momentum=0.5, teacher_inputs="probs")  # buffers sized lazily
    restored.load_state_dict(trained.state_dict())
    assert restored.global_threshold.item() == pytest.approx(0.625)
    assert restored.thresholds.tolist() == pytest.approx([0.625, 0.375])
    restored.eval()
    restored(torch.zeros(2, 2), torch.tensor([[0.2, 0.8], [0.3, 0.7]]))
    assert restored.global_threshold.item() == pytest.approx(0.625)  # unchanged in eval mode
    sized = PseudoLabelLoss(adaptive=True, num_classes=4)
    assert sized.thresholds.tolist() == pytest.approx([0.25] * 4)  # FreeMatch init 1/C
    with pytest.raises(RuntimeError):
        sized.load_state_dict(trained.state_dict())  # 2 classes into 4: refused, not silently resized


def test_shape_mismatch_raises_data_error():
    with pytest.raises(DataError, match="student shape"):
        PseudoLabelLoss()(torch.zeros(2, 3), torch.zeros(2, 4))


def test_freematch_statistics_are_reduced_across_ranks(tmp_path):
    import torch.distributed as dist

    # A one-process gloo group runs the all-reduce path; the numbers must match the single-process rule.
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        loss_fn = PseudoLabelLoss(adaptive=True, ema_momentum=0.5, teacher_inputs="probs")
        loss_fn(torch.zeros(2, 2), torch.tensor([[0.9, 0.1], [0.6, 0.4]]))
    finally:
        dist.destroy_process_group()
    assert loss_fn.global_threshold.item() == pytest.approx(0.625)
    assert loss_fn.class_probability.tolist() == pytest.approx([0.625, 0.375])
