"""Score thresholds calibrated on the labelled boxes, for pseudo-boxes and pseudo-positive mining.

SparseDet (Suri et al., ICCV 2023) mines proposals with objectness > 0.8 and merges teacher detections
> 0.9. Those fixed values assume a detector pre-trained on ImageNet that is confident on real objects.
A detector trained from scratch on a few hundred images scores its *correct* detections around 0.3-0.5
for a long time, so fixed thresholds never fire: measured on the synthetic drop-50% set (FCOS R18,
1,000 steps), ``train/mined`` and ``train/pseudo_boxes`` stayed 0 for the whole run.

The labelled boxes of an incomplete image tell us what the teacher scores on objects it finds: for each
labelled box, the best teacher detection of the same class with IoU >= ``match_iou`` (the "hit"). An
unlabelled object of that class should score about the same, so the threshold for class ``c`` is

    ``clamp(ratio * mean_hit_score_c, min_score, cap)``

with ``mean_hit_score_c`` an exponential moving average over batches (momentum ``momentum``) and
``cap`` the paper's fixed value (0.9 for pseudo-boxes, 0.8 for mining): a confident detector gets
SparseDet's thresholds, an unconfident one gets thresholds it can reach. This follows the idea of
self-adaptive thresholds in semi-supervised classification (FreeMatch, Wang et al., ICLR 2023: a
threshold that follows the model's confidence, per class) with the labelled boxes as the reference
instead of the unlabelled predictions, which a detector's many background detections would swamp.
Class-agnostic mining uses the same rule with one threshold (objectness of the best candidate per
labelled box, any class).

A class never hit yet keeps ``cap``. The state is a set of buffers, so checkpoints carry it and a
resumed run continues with the same thresholds. Under DDP each rank calibrates on its own batches (no
collective: a rank whose batch has only complete images does not update, and a collective there would
hang the others); the ranks' thresholds differ by the noise of a few batches.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou


def box_matches(boxes: Tensor, targets: Tensor, match_iou: float = 0.5, labels: Optional[Tensor] = None,
                target_labels: Optional[Tensor] = None) -> Tensor:
    """``(B, T)`` bool on ``targets``' device: box ``b`` matches target ``t`` at IoU >= ``match_iou`` (and, when
    both label tensors are given, with the same class).

    >>> box_matches(torch.tensor([[0., 0, 10, 10]]), torch.tensor([[0., 0, 10, 9], [0, 0, 10, 9]]),
    ...             labels=torch.tensor([1]), target_labels=torch.tensor([1, 0])).tolist()
    [[True, False]]
    """
    device = targets.device
    if boxes.shape[0] == 0 or targets.shape[0] == 0:
        return torch.zeros(boxes.shape[0], targets.shape[0], dtype=torch.bool, device=device)
    match = box_iou(boxes.float().to(device), targets.float()) >= match_iou
    if labels is not None and target_labels is not None:
        match &= labels.to(device).view(-1, 1) == target_labels.to(device).view(1, -1)
    return match


def best_hit_scores(boxes: Tensor, scores: Tensor, labelled: Tensor, match_iou: float = 0.5,
                    labels: Optional[Tensor] = None, labelled_labels: Optional[Tensor] = None) -> Tensor:
    """``(K,)`` best score of a detection that hits each labelled box; NaN where none does.

    Args:
        boxes, scores: ``(D, 4)`` xyxy detections and ``(D,)`` their scores.
        labelled: ``(K, 4)`` xyxy labelled boxes.
        match_iou: a detection hits a box at IoU >= ``match_iou``.
        labels, labelled_labels: ``(D,)`` / ``(K,)`` classes; when both are given a hit must have the box's class.

    >>> best_hit_scores(torch.tensor([[0., 0, 10, 10], [0, 0, 9, 10]]), torch.tensor([0.3, 0.6]),
    ...                 torch.tensor([[0., 0, 10, 10], [50, 50, 60, 60]])).tolist()
    [0.6000000238418579, nan]
    """
    hit = torch.full((labelled.shape[0],), float("nan"), device=labelled.device)
    if boxes.shape[0] == 0 or labelled.shape[0] == 0:
        return hit
    ok = box_matches(labelled, boxes.to(labelled.device), match_iou, labelled_labels, labels)  # (K, D)
    scores = scores.float().to(labelled.device).view(1, -1).expand_as(ok)
    best = torch.where(ok, scores, torch.full_like(scores, -1.0)).max(dim=1).values
    return torch.where(best >= 0, best, hit)


class LabelledScoreCalibration(nn.Module):
    """Per-class thresholds that follow the teacher's scores on labelled boxes (see the module docstring).

    Args:
        num_classes: C.
        cap: the largest threshold (the fixed paper value).
        ratio: threshold = ``ratio`` * mean hit score (below 1: looser than the typical hit).
        min_score: the smallest threshold (``cap`` when ``cap`` is smaller).
        momentum: EMA momentum of the mean hit score per batch.
        match_iou: IoU at which a detection hits a labelled box.
        class_agnostic: one threshold for all classes (mining on objectness).
    """

    def __init__(self, num_classes: int, cap: float, ratio: float = 1.0, min_score: float = 0.2,
                 momentum: float = 0.9, match_iou: float = 0.5, class_agnostic: bool = False) -> None:
        super().__init__()
        if min_score < 0 or cap < 0:
            raise ValueError(f"need min_score >= 0 and cap >= 0, got min_score={min_score}, cap={cap}")
        if ratio <= 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"need ratio > 0 and 0 <= momentum < 1, got ratio={ratio}, momentum={momentum}")
        # a cap below min_score wins: the user asked for at most that threshold
        self.cap, self.ratio, self.min_score = float(cap), float(ratio), float(min(min_score, cap))
        self.momentum, self.match_iou, self.class_agnostic = float(momentum), float(match_iou), class_agnostic
        slots = 1 if class_agnostic else int(num_classes)
        self.register_buffer("mean_hit", torch.zeros(slots))
        self.register_buffer("seen", torch.zeros(slots, dtype=torch.bool))
        self.register_buffer("recall", torch.zeros(()))  # EMA share of labelled boxes hit

    @torch.no_grad()
    def update(self, detections: list[tuple[Tensor, Tensor, Optional[Tensor]]],
               labelled: list[tuple[Tensor, Tensor]]) -> None:
        """Fold one batch in.

        Args:
            detections: per image ``(boxes (D, 4), scores (D,), labels (D,) or None)``; labels are ignored
                when ``class_agnostic``.
            labelled: per image ``(boxes (K, 4), labels (K,))`` of the human labels.
        """
        hits, classes = [], []
        for (boxes, scores, labels), (gt, gt_labels) in zip(detections, labelled):
            same_class = None if self.class_agnostic else labels
            hits.append(best_hit_scores(boxes, scores, gt, self.match_iou, same_class,
                                        None if self.class_agnostic else gt_labels))
            classes.append(gt_labels.to(hits[-1].device).long())
        if not hits:
            return
        hit, cls = torch.cat(hits).to(self.mean_hit.device), torch.cat(classes).to(self.mean_hit.device)
        if hit.numel() == 0:
            return
        found = ~torch.isnan(hit)
        self.recall.mul_(self.momentum).add_((1 - self.momentum) * found.float().mean())
        slot = torch.zeros_like(cls) if self.class_agnostic else cls
        for s in slot[found].unique().tolist():
            batch_mean = hit[found & (slot == s)].mean()
            if self.seen[s]:
                self.mean_hit[s] = self.momentum * self.mean_hit[s] + (1 - self.momentum) * batch_mean
            else:
                self.mean_hit[s], self.seen[s] = batch_mean, True

    def thresholds(self) -> Tensor:
        """``(C,)`` (or ``(1,)`` when class-agnostic) current thresholds; ``cap`` for classes not hit yet."""
        calibrated = (self.ratio * self.mean_hit).clamp(self.min_score, self.cap)
        return torch.where(self.seen, calibrated, torch.full_like(calibrated, self.cap))

    def threshold_for(self, labels: Optional[Tensor] = None) -> Tensor:
        """Threshold per detection: ``(D,)`` for ``labels (D,)``, or a scalar when class-agnostic."""
        table = self.thresholds()
        if self.class_agnostic:
            return table[0]
        if labels is None:
            raise ValueError("per-class thresholds need the detections' labels")
        return table.to(labels.device)[labels.long()]
