"""Point-supervised boxes: MIL over proposal bags beats the mean-size baseline on a toy."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from vision.errors import DataError
from vision.models.detection.point_to_box import PointToBoxMIL, mean_size_boxes, point_bags

COLOURS = torch.tensor([[0.9, 0.25, 0.2], [0.2, 0.35, 0.9]])



def toy_images(count: int, generator: torch.Generator, size: int = 64, per_image: int = 2):
    """Solid rectangles (8-32 px, class = colour) on a striped noisy background, one random point each."""
    images, boxes, labels, points = [], [], [], []
    for _ in range(count):
        image = 0.5 + 0.12 * torch.randn(3, size, size, generator=generator)
        image += 0.1 * torch.sin(torch.arange(size) / 2.0)[None, None, :]
        kept, classes = [], []
        while len(kept) < per_image:
            wh = torch.randint(8, 33, (2,), generator=generator).float()
            xy = torch.rand(2, generator=generator) * (size - wh)
            box = torch.cat([xy, xy + wh]).round()
            if kept and box_iou(box[None], torch.stack(kept)).max() > 0:
                continue  # no overlapping objects
            label = int(torch.randint(2, (1,), generator=generator))
            x1, y1, x2, y2 = box.int().tolist()
            image[:, y1:y2, x1:x2] = (COLOURS[label] + 0.05 * torch.randn(3, generator=generator))[:, None, None]
            kept.append(box)
            classes.append(label)
        kept = torch.stack(kept)
        images.append(image.clamp(0, 1))
        boxes.append(kept)
        labels.append(torch.tensor(classes))
        points.append(kept[:, :2] + torch.rand(per_image, 2, generator=generator) * (kept[:, 2:] - kept[:, :2]))
    return torch.stack(images), boxes, labels, points


def mean_iou(predicted: list[torch.Tensor], truth: list[torch.Tensor]) -> float:
    return torch.cat([box_iou(p, t).diag() for p, t in zip(predicted, truth)]).mean().item()


def test_mean_size_boxes_centres_the_class_mean_box_on_each_point():
    boxes = mean_size_boxes(torch.tensor([[10.0, 20.0], [0.0, 0.0]]), torch.tensor([1, 0]),
                            torch.tensor([[2.0, 2.0], [4.0, 6.0]]))
    assert boxes.tolist() == [[8.0, 17.0, 12.0, 23.0], [-1.0, -1.0, 1.0, 1.0]]
    with pytest.raises(DataError, match="has no mean size"):
        mean_size_boxes(torch.zeros(1, 2), torch.tensor([2]), torch.ones(2, 2))


def test_point_bags_cover_sizes_ratios_and_shifts():
    bags = point_bags(torch.tensor([[10.0, 10.0]]), box_sizes=[4.0], aspect_ratios=[4.0], centre_shifts=[-0.25, 0.0])
    # ratio h/w = 4 at size 4: w = 2, h = 8; shifts (dx, dy) in {-0.25, 0}^2 times (w, h) = (-0.5|0, -2|0).
    assert bags.tolist() == [[[8.5, 4.0, 10.5, 12.0], [8.5, 6.0, 10.5, 14.0],
                              [9.0, 4.0, 11.0, 12.0], [9.0, 6.0, 11.0, 14.0]]]


def test_scale_consistency_is_zero_for_identical_views_and_positive_otherwise():
    torch.manual_seed(0)
    mil = PointToBoxMIL(3, 2, box_sizes=(8, 16), roi_size=4, hidden=16, num_negatives=4)
    images, _, labels, points = toy_images(2, torch.Generator().manual_seed(3))
    same = mil(images, [(64, 64)] * 2, points, labels, features_view2=images, image_sizes_view2=[(64, 64)] * 2)
    assert same["loss_scale_consistency"].item() == pytest.approx(0.0, abs=1e-7)
    other = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    changed = mil(images, [(64, 64)] * 2, points, labels, features_view2=other, image_sizes_view2=[(64, 64)] * 2)
    assert changed["loss_scale_consistency"].item() > 1e-4
    assert set(changed) == {"loss_mil", "loss_negative", "loss_scale_consistency"}


def test_point_labels_must_fit_the_classes():
    mil = PointToBoxMIL(3, 2, box_sizes=(8,), roi_size=4, hidden=8)
    with pytest.raises(DataError, match="class ids must be < 2"):
        mil(torch.zeros(1, 3, 16, 16), [(16, 16)], [torch.tensor([[4.0, 4.0]])], [torch.tensor([2])])


def test_mil_pseudo_boxes_beat_mean_size_boxes_on_a_toy():
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    train, test = toy_images(64, generator), toy_images(16, generator)
    # A one-layer stem stands in for the detector's FPN (same stride-1 map, cheap enough for a unit test).
    stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
    mil = PointToBoxMIL(16, 2, box_sizes=(6, 9, 13, 19, 28, 40), roi_size=4, hidden=32, num_negatives=8)
    optimiser = torch.optim.Adam([*stem.parameters(), *mil.parameters()], lr=1e-2)
    for _ in range(40):
        batch = torch.randint(64, (4,)).tolist()
        losses = mil(stem(train[0][batch]), [(64, 64)] * 4, [train[3][i] for i in batch], [train[2][i] for i in batch])
        optimiser.zero_grad()
        sum(losses.values()).backward()
        optimiser.step()
    predicted = mil.predict_boxes(stem(test[0]), [(64, 64)] * 16, test[3], test[2])
    # Baseline with the TRUE per-class mean size (an upper bound for any fixed-size rule).
    all_boxes, all_labels = torch.cat(train[1]), torch.cat(train[2])
    mean_wh = torch.stack([(all_boxes[all_labels == c, 2:] - all_boxes[all_labels == c, :2]).mean(0) for c in range(2)])
    baseline = [mean_size_boxes(p, lab, mean_wh) for p, lab in zip(test[3], test[2])]
    assert [p.shape for p in predicted] == [(2, 4)] * 16
    mil_iou, baseline_iou = mean_iou(predicted, test[1]), mean_iou(baseline, test[1])
    assert mil_iou > baseline_iou + 0.1, (mil_iou, baseline_iou)
