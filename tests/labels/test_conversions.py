"""Conversions between dense masks, points and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from vision.labels.conversions import boxes_to_points, mask_to_points, points_to_mask
from vision.labels.protocols import Full
from vision.labels.types import IGNORE_INDEX, PSEUDO, BoxLabels, DenseLabels, PointLabels

IGN = IGNORE_INDEX


def test_mask_to_points_keeps_k_per_class_on_their_own_class():
    mask = np.array([3, 3, 3, IGN, 1, 3, 1, 0])
    points = mask_to_points(mask, k=2, rng=np.random.default_rng(0))
    assert sorted(points.class_id.tolist()) == [0, 1, 1, 3, 3]
    # classes 0 and 1 have at most 2 points, so all of them are kept; two of the four 3s join them
    assert {4, 6, 7} <= set(points.index.tolist()) and len(set(points.index.tolist()) & {0, 1, 2, 5}) == 2
    assert np.array_equal(mask[points.index], points.class_id)
    assert np.array_equal(points.index, np.sort(points.index))


def test_mask_to_points_on_an_image_gives_xy():
    mask = np.full((3, 4), IGN)
    mask[0, 3], mask[2, 1] = 5, 6
    points = mask_to_points(mask, k=1, rng=np.random.default_rng(0))
    assert points.xy.tolist() == [[3.0, 0.0], [1.0, 2.0]] and points.class_id.tolist() == [5, 6]


def test_boxes_to_points_gives_centres_and_keeps_source():
    boxes = BoxLabels([[0, 0, 10, 4], [2, 2, 3, 3]], [1, 2], source=[0, PSEUDO], confidence=[1.0, 0.5])
    points = boxes_to_points(boxes)
    assert points.xy.tolist() == [[5.0, 2.0], [2.5, 2.5]]
    assert points.source.tolist() == [0, PSEUDO] and points.confidence.tolist() == [1.0, 0.5]


def test_points_to_mask_3d_and_2d_rounding():
    mask = points_to_mask(PointLabels(class_id=[4, 2], index=[5, 0]), (6,))
    assert mask.dtype == np.int64 and mask.tolist() == [2, IGN, IGN, IGN, IGN, 4]
    # (1.5, 0.49) -> column 2 (halves round up), row 0
    image = points_to_mask(PointLabels(class_id=[7], xy=[[1.5, 0.49]]), (2, 3))
    assert image.tolist() == [[IGN, IGN, 7], [IGN, IGN, IGN]]


def test_points_to_mask_rejects_points_outside():
    with pytest.raises(ValueError, match="outside"):
        points_to_mask(PointLabels(class_id=[1], index=[6]), (6,))
    with pytest.raises(ValueError, match="outside"):
        points_to_mask(PointLabels(class_id=[1], xy=[[3.0, 0.0]]), (2, 3))
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        points_to_mask(PointLabels(class_id=[1], index=[0]), (2, 3))


@pytest.mark.parametrize("semantic", [np.array([0, IGN, 2, 2, 1]), np.array([[0, IGN, 3], [IGN, 1, 1]])])
def test_full_points_back_to_mask_is_the_original(semantic):
    points = Full().apply(DenseLabels(semantic), np.random.default_rng(0))
    assert np.array_equal(points_to_mask(points, semantic.shape), semantic)
