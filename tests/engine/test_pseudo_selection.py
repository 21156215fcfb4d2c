"""Per-class confident selection for offline self-training (SQN-style top fraction) and its precision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vision.engine import (
    pseudo_label_precision,
    pseudo_label_precision_per_class,
    select_confident_per_class,
)
from vision.labels.types import IGNORE_INDEX

#                       0    1    2    3    4    5    6    7     8    9
PREDICTED = np.array([0, 0, 0, 0, 1, 1, 2, 0, 1, 0])
CONFIDENCE = np.array([.9, .5, .9, .7, .6, .8, .3, .95, .6, .1])


def selected_positions(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


def test_top_fraction_per_class_with_ties_to_the_lower_index():
    # class 0: 6 predictions -> ceil(0.3 * 6) = 2: index 7 (0.95), then 0 and 2 tie at 0.9 -> index 0
    # class 1: 3 predictions -> ceil(0.9) = 1: index 5 (0.8); class 2: 1 prediction -> index 6
    mask = select_confident_per_class(PREDICTED, CONFIDENCE, num_classes=3, top_fraction=0.3)
    assert mask.dtype == bool and mask.shape == (10,)
    assert selected_positions(mask) == [0, 5, 6, 7]


def test_min_confidence_drops_weak_winners():
    mask = select_confident_per_class(PREDICTED, CONFIDENCE, 3, top_fraction=0.3, min_confidence=0.5)
    assert selected_positions(mask) == [0, 5, 7]  # class 2's only prediction (0.3) is too weak


def test_human_labelled_positions_are_excluded_from_ranking_and_counts():
    exclude = np.zeros(10, dtype=bool)
    exclude[7] = True
    # class 0 now has 5 candidates -> ceil(1.5) = 2: indices 0 and 2 (both 0.9)
    mask = select_confident_per_class(PREDICTED, CONFIDENCE, 3, top_fraction=0.3, exclude=exclude)
    assert selected_positions(mask) == [0, 2, 5, 6]


def test_sqn_one_percent_and_float_noise_in_the_count():
    predicted = np.zeros(250, dtype=np.int64)
    confidence = np.linspace(0.0, 1.0, 250)
    assert select_confident_per_class(predicted, confidence, 1).sum() == 3  # ceil(0.01 * 250)
    # 0.07 * 100 is 7.000000000000001 in floating point; still 7 points, not 8
    assert select_confident_per_class(predicted[:100], confidence[:100], 1, top_fraction=0.07).sum() == 7
    assert selected_positions(select_confident_per_class(predicted[:100], confidence[:100], 1,
                                                         top_fraction=0.03)) == [97, 98, 99]


def test_unpredicted_positions_and_empty_input():
    predicted = np.array([IGNORE_INDEX, 1, 1])
    mask = select_confident_per_class(predicted, [1.0, 0.2, 0.4], 2, top_fraction=0.5)
    assert selected_positions(mask) == [2]
    assert select_confident_per_class(np.zeros(0, np.int64), np.zeros(0), 2).shape == (0,)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 2}, "num_classes"),
    ({"num_classes": 3, "top_fraction": 0.0}, "top_fraction"),
    ({"num_classes": 3, "exclude": np.zeros(10)}, "exclude"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_confident_per_class(PREDICTED, CONFIDENCE, **kwargs)


def test_precision_ignores_unlabelled_full_labels():
    full = np.array([1, 0, IGNORE_INDEX, 2, 5])
    index, chosen = [0, 1, 2, 3], [1, 1, 0, 2]
    # scored: 0 right, 1 wrong, 3 right (2 is unlabelled)
    assert pseudo_label_precision(index, chosen, full) == pytest.approx(2 / 3)
    assert pseudo_label_precision_per_class(index, chosen, full) == {1: 0.5, 2: 1.0}
    per_class = pseudo_label_precision_per_class(index, chosen, full, num_classes=3)
    assert math.isnan(per_class[0]) and per_class[1] == 0.5 and per_class[2] == 1.0
    assert math.isnan(pseudo_label_precision([2], [0], full))


def test_precision_rejects_positions_outside_the_sample():
    with pytest.raises(ValueError, match="out of range"):
        pseudo_label_precision([5], [0], np.zeros(5, np.int64))
