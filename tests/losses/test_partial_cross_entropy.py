"""PartialCrossEntropy and class_weights_from_counts on tiny hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX
from vision.losses import PartialCrossEntropy, class_weights_from_counts

IGN = IGNORE_INDEX


def _three_points():
    # Points layout (B=1, C=3, N=3): columns are the points' logits.
    logits = torch.tensor([[[2.0, 5.0, 0.0],
                            [0.0, 5.0, 1.0],
                            [0.0, 5.0, 0.0]]], requires_grad=True)
    targets = torch.tensor([[0, IGN, 2]])
    loss_point0 = math.log(1 + 2 * math.exp(-2))  # -log(e^2 / (e^2 + 1 + 1))
    loss_point2 = math.log(2 + math.e)  # -log(e^0 / (1 + e + 1))
    return logits, targets, loss_point0, loss_point2


def test_mean_over_labelled_points_only():
    logits, targets, l0, l2 = _three_points()
    loss = PartialCrossEntropy()(logits, targets)
    assert loss.item() == pytest.approx((l0 + l2) / 2, abs=1e-6)


def test_ignored_points_get_exactly_zero_gradient():
    logits, targets, _, _ = _three_points()
    PartialCrossEntropy()(logits, targets).backward()
    assert torch.equal(logits.grad[0, :, 1], torch.zeros(3))
    assert logits.grad[0, :, 0].abs().sum() > 0 and logits.grad[0, :, 2].abs().sum() > 0


def test_class_weights_give_a_weighted_mean():
    logits, targets, l0, l2 = _three_points()
    loss = PartialCrossEntropy(class_weights=[2.0, 1.0, 1.0])(logits, targets)
    assert loss.item() == pytest.approx((2 * l0 + 1 * l2) / 3, abs=1e-6)


def test_no_labels_gives_zero_with_a_graph_not_nan():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = PartialCrossEntropy(class_weights=[1.0, 2.0, 3.0, 4.0])(logits, torch.full((2, 5), IGN))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_pixel_point_and_flat_layouts_agree_with_torch():
    torch.manual_seed(0)
    pixels = torch.randn(2, 4, 3, 5)
    targets = torch.randint(0, 4, (2, 3, 5))
    targets[0, 1] = IGN
    expected = F.cross_entropy(pixels, targets, ignore_index=IGN, label_smoothing=0.1,
                               weight=torch.tensor([1.0, 0.5, 2.0, 1.0]))
    loss_fn = PartialCrossEntropy(class_weights=[1.0, 0.5, 2.0, 1.0], label_smoothing=0.1)
    flat_logits = pixels.permute(0, 2, 3, 1).reshape(-1, 4)
    assert loss_fn(pixels, targets).item() == pytest.approx(expected.item(), abs=1e-6)
    assert loss_fn(pixels.flatten(2), targets.flatten(1)).item() == pytest.approx(expected.item(), abs=1e-6)
    assert loss_fn(flat_logits, targets.reshape(-1)).item() == pytest.approx(expected.item(), abs=1e-6)


def test_label_smoothing_by_hand():
    # C=2, logits (0, log 3): p = (1/4, 3/4); target 1 smoothed to (0.1, 0.9) with eps=0.2.
    logits = torch.tensor([[0.0, math.log(3)]])
    loss = PartialCrossEntropy(label_smoothing=0.2)(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75)), abs=1e-6)


def test_bad_targets_raise_data_error():
    loss_fn = PartialCrossEntropy()
    with pytest.raises(DataError, match="class id 3 outside"):
        loss_fn(torch.zeros(1, 3, 2), torch.tensor([[0, 3]]))
    with pytest.raises(DataError, match="does not match"):
        loss_fn(torch.zeros(1, 3, 2), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="integer"):
        loss_fn(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="2 class weights for 3 classes"):
        PartialCrossEntropy(class_weights=[1.0, 1.0])(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_class_weights_from_weak_counts():
    counts = [1, 4, 0, 16]  # class 2 absent from the weak labels
    inverse = class_weights_from_counts(counts, mode="inverse")
    # raw 1, 1/4, 1/16 with mean 7/16 over present classes; absent class -> 1.
    assert inverse.tolist() == pytest.approx([16 / 7, 4 / 7, 1.0, 1 / 7])
    inverse_sqrt = class_weights_from_counts(counts, mode="inverse_sqrt")
    # raw 1, 1/2, 1/4 with mean 7/12.
    assert inverse_sqrt.tolist() == pytest.approx([12 / 7, 6 / 7, 1.0, 3 / 7])
    assert class_weights_from_counts(counts, mode="none").tolist() == [1.0, 1.0, 1.0, 1.0]
    assert inverse.dtype == torch.float32
    with pytest.raises(DataError, match=">= 0"):
        class_weights_from_counts([3, -1])
    with pytest.raises(DataError, match="unknown mode"):
        class_weights_from_counts([3, 1], mode="log")


def test_weights_from_counts_plug_into_the_loss():
    weights = class_weights_from_counts([1, 3], mode="inverse")  # (1.5, 0.5)
    logits = torch.zeros(2, 2)
    loss = PartialCrossEntropy(class_weights=weights.tolist())(logits, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # equal per-entry losses: weights cancel
