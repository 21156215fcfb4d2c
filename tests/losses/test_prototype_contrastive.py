"""PrototypeContrastiveLoss: FIFO queue, prototypes, hand-computed InfoNCE, learning, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX
from vision.losses import PrototypeContrastiveLoss

IGN = IGNORE_INDEX
S = 1 / math.sqrt(2)


def _two_axis_prototypes(num_classes: int = 2) -> PrototypeContrastiveLoss:
    """Class 0 queue holds (1, 0), class 1 holds (0, 1); T = 0.1."""
    loss_fn = PrototypeContrastiveLoss(num_classes=num_classes, feature_dim=2, queue_size=4, temperature=0.1)
    loss_fn.update(torch.tensor([[5.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1]))
    return loss_fn


def test_queue_is_fifo_with_pointer_wraparound():
    loss_fn = PrototypeContrastiveLoss(num_classes=2, feature_dim=2, queue_size=3)
    a, b, c, d = [1.0, 0.0], [0.0, 1.0], [S, S], [S, -S]
    # First call: a, b for class 0; an ignored and an unconfident feature are not enqueued.
    loss_fn.update(torch.tensor([a, b, [9.0, 9.0], [7.0, 7.0]]), torch.tensor([0, 0, IGN, 1]),
                   torch.tensor([0.9, 0.8, 1.0, 0.5]))
    assert loss_fn.queue_ptr.tolist() == [2, 0] and loss_fn.queue_count.tolist() == [2, 0]
    # Second call: d (0.75) and c (0.95); c goes first (higher confidence) into slot 2, d wraps to slot 0.
    loss_fn.update(torch.tensor([d, c]), torch.tensor([0, 0]), torch.tensor([0.75, 0.95]))
    assert loss_fn.queue_ptr.tolist() == [1, 0] and loss_fn.queue_count.tolist() == [3, 0]
    assert torch.allclose(loss_fn.queue[0], torch.tensor([d, b, c]))
    assert torch.equal(loss_fn.queue[1], torch.zeros(3, 2))


def test_update_caps_per_class_highest_confidence_first_and_normalises():
    loss_fn = PrototypeContrastiveLoss(num_classes=1, feature_dim=5, queue_size=3)
    loss_fn.update(2.0 * torch.eye(5), torch.zeros(5, dtype=torch.long),
                   torch.tensor([0.71, 0.99, 0.8, 0.95, 0.9]))
    eye = torch.eye(5)
    assert torch.equal(loss_fn.queue[0], torch.stack([eye[1], eye[3], eye[4]]))  # 0.99, 0.95, 0.9
    assert loss_fn.queue_ptr.tolist() == [0] and loss_fn.queue_count.tolist() == [3]


def test_prototype_is_normalised_mean_of_filled_entries():
    loss_fn = PrototypeContrastiveLoss(num_classes=3, feature_dim=2, queue_size=4)
    loss_fn.update(torch.tensor([[3.0, 0.0], [0.0, 4.0], [3.0, 4.0]]), torch.tensor([0, 0, 1]))
    prototypes, present = loss_fn.prototypes()
    assert present.tolist() == [True, True, False]
    assert torch.allclose(prototypes[0], torch.tensor([S, S]))  # mean (0.5, 0.5), not diluted by empty slots
    assert torch.allclose(prototypes[1], torch.tensor([0.6, 0.8]))
    assert torch.equal(prototypes[2], torch.zeros(2))


def test_infonce_by_hand():
    loss_fn = _two_axis_prototypes()
    features = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # cosine (1, 0) and (0, 1) to the prototypes
    loss = loss_fn(features, torch.tensor([0, 0]))
    expected = (math.log(1 + math.exp(-10)) + math.log(1 + math.exp(10))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_empty_classes_leave_the_softmax():
    loss_fn = _two_axis_prototypes(num_classes=3)  # class 2 has an empty queue
    loss = loss_fn(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 2]))
    # Only the class-0 feature counts, and class 2 adds no exp(0) term to its denominator.
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-10)), abs=1e-7)


def test_zero_with_graph_when_nothing_is_selected():
    loss_fn = _two_axis_prototypes()
    features = torch.randn(3, 2, requires_grad=True)
    loss = loss_fn(features, torch.tensor([IGN, 0, 1]), confidences=torch.tensor([1.0, 0.5, 0.6]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(features.grad, torch.zeros(3, 2))


def test_ignored_pixels_get_no_gradient_and_layouts_agree():
    loss_fn = _two_axis_prototypes()
    torch.manual_seed(0)
    pixels = torch.randn(1, 2, 2, 2, requires_grad=True)  # (B, D, H, W)
    labels = torch.tensor([[[0, IGN], [1, 0]]])
    loss = loss_fn(pixels, labels)
    loss.backward()
    assert torch.equal(pixels.grad[0, :, 0, 1], torch.zeros(2))
    assert pixels.grad[0, :, 0, 0].abs().sum() > 0
    rows = pixels.detach().permute(0, 2, 3, 1).reshape(-1, 2)
    assert loss_fn(rows, labels.reshape(-1)).item() == pytest.approx(loss.item(), rel=1e-6)


def test_loss_falls_as_class_features_are_pulled_to_their_prototype():
    torch.manual_seed(0)
    loss_fn = PrototypeContrastiveLoss(num_classes=2, feature_dim=4, queue_size=8, temperature=0.1)
    centres = torch.eye(4)[:2]
    loss_fn.update(centres.repeat_interleave(4, 0) + 0.1 * torch.randn(8, 4), torch.tensor([0] * 4 + [1] * 4))
    features = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    optimizer = torch.optim.SGD([features], lr=0.5)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(features, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(later <= earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.01 * losses[0]
    cosine = torch.nn.functional.normalize(features.detach(), dim=1) @ loss_fn.prototypes()[0].T  # (6, 2)
    own, other = cosine[torch.arange(6), labels], cosine[torch.arange(6), 1 - labels]
    assert (own - other > 0.5).all()  # each feature is now much closer to its own class's prototype


def test_queue_survives_state_dict_round_trip():
    trained = PrototypeContrastiveLoss(num_classes=2, feature_dim=2, queue_size=3)
    trained.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    trained.update(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.tensor([0, 0]))  # wraps: pointer 1
    trained.update(torch.tensor([[2.0, 1.0]]), torch.tensor([1]))
    assert set(trained.state_dict()) == {"queue", "queue_ptr", "queue_count"}
    restored = PrototypeContrastiveLoss(num_classes=2, feature_dim=2, queue_size=3)
    restored.load_state_dict(trained.state_dict())
    assert torch.equal(restored.queue, trained.queue)
    assert restored.queue_ptr.tolist() == [1, 1] and restored.queue_count.tolist() == [3, 1]
    assert torch.equal(restored.prototypes()[0], trained.prototypes()[0])
    restored.update(torch.tensor([[0.0, -1.0]]), torch.tensor([0]))  # continues at slot 1
    assert torch.equal(restored.queue[0, 1], torch.tensor([0.0, -1.0]))


def test_prototypes_override_uses_the_other_students_prototypes():
    teacher_like = _two_axis_prototypes()
    empty = PrototypeContrastiveLoss(num_classes=2, feature_dim=2, queue_size=4, temperature=0.1)
    features, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    assert empty(features, labels).item() == 0.0  # no prototypes of its own yet
    borrowed = empty(features, labels, prototypes_override=teacher_like.prototypes())
    assert borrowed.item() == pytest.approx(teacher_like(features, labels).item(), rel=1e-6)
    with pytest.raises(DataError, match="prototypes_override"):
        empty(features, labels, prototypes_override=(torch.zeros(3, 2), torch.ones(3, dtype=torch.bool)))


def test_bad_inputs_raise_data_error():
    loss_fn = PrototypeContrastiveLoss(num_classes=2, feature_dim=3)
    with pytest.raises(DataError, match="feature dim 2 != 3"):
        loss_fn.update(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(DataError, match="class id 2 outside"):
        loss_fn(torch.zeros(2, 3), torch.tensor([0, 2]))


def test_update_gathers_across_ranks_when_distributed(tmp_path):
    import torch.distributed as dist

    # A one-process gloo group exercises the all-gather path (variable row counts are padded and trimmed).
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        loss_fn = PrototypeContrastiveLoss(num_classes=2, feature_dim=2, queue_size=3)
        loss_fn.update(torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, IGN, 1]),
                       torch.tensor([0.8, 1.0, 0.9]))
    finally:
        dist.destroy_process_group()
    assert loss_fn.queue_count.tolist() == [1, 1]
    assert torch.allclose(loss_fn.queue[:, 0], torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
