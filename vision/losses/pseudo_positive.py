"""Pseudo-positive mining for detection with incomplete boxes.

SparseDet (Suri et al., "SparseDet: Improving Sparsely Annotated Object Detection with Pseudo-positive
Mining", ICCV 2023): when an image's boxes may be incomplete (``BoxLabels.complete == False``), a
confident detection that overlaps no labelled box is probably an unlabelled object. Such "pseudo-
positives" are taken out of the background (negative) set, so the detector is not taught that real
objects are background.

A candidate is a pseudo-positive when ``score > score_threshold`` and its IoU with EVERY labelled box is
``<= iou_threshold`` (with no labelled box, the score test alone decides).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from vision.errors import DataError

_WHERE = "mine_pseudo_positives"


def _check_boxes(boxes: Tensor, where: str) -> None:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise DataError(where, f"expected (K, 4) xyxy boxes, got {shape}")
    if boxes.numel() and not bool(torch.isfinite(boxes).all()):
        raise DataError(where, "boxes must be finite")
    if boxes.numel() and bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise DataError(where, "boxes must be xyxy with x2 >= x1 and y2 >= y1")


def mine_pseudo_positives(candidate_boxes: Tensor, scores: Tensor, labelled_boxes: Tensor,
                          score_threshold: float = 0.8, iou_threshold: float = 0.2) -> Tensor:
    """Which candidates are pseudo-positives (see the module docstring).

    Args:
        candidate_boxes: ``(M, 4)`` xyxy predictions or proposals.
        scores: ``(M,)`` their confidence.
        labelled_boxes: ``(K, 4)`` xyxy boxes of the image's (weak) labels; ``K`` may be 0.
        score_threshold: ``tau``, strict: ``score > tau``.
        iou_threshold: largest IoU with any labelled box that still counts as "not overlapping".

    Returns:
        ``(M,)`` bool mask.

    >>> mine_pseudo_positives(torch.tensor([[0., 0, 10, 10], [50, 50, 60, 60]]), torch.tensor([0.9, 0.9]),
    ...                       torch.tensor([[0., 0, 10, 10]])).tolist()
    [False, True]
    """
    _check_boxes(candidate_boxes, f"{_WHERE}.candidate_boxes")
    _check_boxes(labelled_boxes, f"{_WHERE}.labelled_boxes")
    if not isinstance(scores, Tensor) or scores.shape != (candidate_boxes.shape[0],):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise DataError(f"{_WHERE}.scores", f"expected ({candidate_boxes.shape[0]},) scores, got {shape}")
    confident = scores.detach() > score_threshold
    if labelled_boxes.shape[0] == 0 or candidate_boxes.shape[0] == 0:
        return confident
    iou = box_iou(candidate_boxes.detach().float(), labelled_boxes.to(candidate_boxes.device).float())  # (M, K)
    # nan_to_num: two zero-area boxes give 0/0; treat as overlapping (1.0) so they are never mined.
    overlaps = iou.nan_to_num(nan=1.0) > iou_threshold
    return confident & ~overlaps.any(dim=1)


def ignore_pseudo_positives(negative_mask: Tensor, pseudo_positive_mask: Tensor) -> Tensor:
    """``negative_mask & ~pseudo_positive_mask``: the negatives without the mined pseudo-positives.

    Both masks are ``(M,)`` bool over the same candidates (e.g. the background-labelled proposals of a
    Faster R-CNN ROI head); the result says which candidates still train as background.
    """
    if negative_mask.shape != pseudo_positive_mask.shape:
        raise DataError("ignore_pseudo_positives", f"mask shapes differ: {tuple(negative_mask.shape)} vs "
                                                   f"{tuple(pseudo_positive_mask.shape)}")
    return negative_mask.bool() & ~pseudo_positive_mask.bool()


class PseudoPositiveMining(nn.Module):
    """SparseDet pseudo-positive mining with its two thresholds as configuration (for YAML).

    ``forward(candidate_boxes (M, 4), scores (M,), labelled_boxes (K, 4)) -> (M,)`` bool pseudo-positive
    mask; :meth:`filter_negatives` also removes them from a ``(M,)`` negative mask.
    """

    def __init__(self, score_threshold: float = 0.8, iou_threshold: float = 0.2) -> None:
        super().__init__()
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)

    def forward(self, candidate_boxes: Tensor, scores: Tensor, labelled_boxes: Tensor) -> Tensor:
        return mine_pseudo_positives(candidate_boxes, scores, labelled_boxes,
                                     self.score_threshold, self.iou_threshold)

    def filter_negatives(self, negative_mask: Tensor, candidate_boxes: Tensor, scores: Tensor,
                         labelled_boxes: Tensor) -> Tensor:
        """``(M,)`` negatives that are not pseudo-positives."""
        return ignore_pseudo_positives(negative_mask, self(candidate_boxes, scores, labelled_boxes))

    def extra_repr(self) -> str:
        return f"score_threshold={self.score_threshold}, iou_threshold={self.iou_threshold}"
