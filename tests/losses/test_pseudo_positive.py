"""SparseDet pseudo-positive mining on hand-made boxes."""

from __future__ import annotations

import pytest
import torch

from vision.errors import DataError
from vision.losses import PseudoPositiveMining, ignore_pseudo_positives, mine_pseudo_positives

LABELLED = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # one labelled 10 x 10 box

CANDIDATES = torch.tensor([
    [0.0, 0.0, 10.0, 5.0],        # IoU 50 / 100 = 0.5 with the labelled box: a labelled object
    [100.0, 100.0, 110.0, 110.0],  # far away, score 0.9: an unlabelled object -> mined
    [100.0, 100.0, 110.0, 110.0],  # far away, score 0.7: not confident enough
    [0.0, 0.0, 10.0, 2.0],        # IoU 20 / 100 = 0.2 exactly: still "not overlapping" (<=)
    [50.0, 50.0, 60.0, 60.0],     # far away, score exactly 0.8: the score test is strict
])
SCORES = torch.tensor([0.95, 0.9, 0.7, 0.85, 0.8])


def test_mined_by_score_and_iou_with_every_labelled_box():
    mask = mine_pseudo_positives(CANDIDATES, SCORES, LABELLED, score_threshold=0.8, iou_threshold=0.2)
    assert mask.tolist() == [False, True, False, True, False]
    assert mask.dtype == torch.bool


def test_a_second_labelled_box_blocks_its_overlaps():
    labelled = torch.cat([LABELLED, torch.tensor([[100.0, 100.0, 110.0, 105.0]])])  # IoU 0.5 with candidate 1
    mask = mine_pseudo_positives(CANDIDATES, SCORES, labelled)
    assert mask.tolist() == [False, False, False, True, False]


def test_without_labelled_boxes_score_alone_decides():
    mask = mine_pseudo_positives(CANDIDATES, SCORES, torch.zeros(0, 4))
    assert mask.tolist() == [True, True, False, True, False]
    assert mine_pseudo_positives(torch.zeros(0, 4), torch.zeros(0), LABELLED).tolist() == []


def test_pseudo_positives_leave_the_negatives():
    negatives = torch.tensor([True, True, True, False, True])
    pseudo_positives = torch.tensor([False, True, False, True, False])
    assert ignore_pseudo_positives(negatives, pseudo_positives).tolist() == [True, False, True, False, True]


def test_module_wrapper_carries_the_thresholds():
    miner = PseudoPositiveMining(score_threshold=0.6, iou_threshold=0.6)
    assert miner(CANDIDATES, SCORES, LABELLED).tolist() == [True, True, True, True, True]
    negatives = torch.ones(5, dtype=torch.bool)
    strict = PseudoPositiveMining(score_threshold=0.88, iou_threshold=0.1)
    assert strict.filter_negatives(negatives, CANDIDATES, SCORES, LABELLED).tolist() == [
        True, False, True, True, True]


def test_bad_boxes_raise_data_error():
    with pytest.raises(DataError, match="labelled_boxes"):
        mine_pseudo_positives(CANDIDATES, SCORES, torch.zeros(2, 3))
    with pytest.raises(DataError, match="x2 >= x1"):
        mine_pseudo_positives(torch.tensor([[5.0, 0.0, 1.0, 1.0]]), torch.tensor([0.9]), LABELLED)
    with pytest.raises(DataError, match="scores"):
        mine_pseudo_positives(CANDIDATES, SCORES[:2], LABELLED)
    with pytest.raises(DataError, match="mask shapes differ"):
        ignore_pseudo_positives(torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
