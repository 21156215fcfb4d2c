"""torchvision detectors whose losses treat some regions as IGNORE (neither object nor background).

SparseDet (Suri et al., "SparseDet: Improving Sparsely Annotated Object Detection with Pseudo-positive
Mining", ICCV 2023): with incomplete boxes, a confident region that overlaps no labelled box is
probably an unlabelled object, so it must not be trained as background. Each target dict may carry
``ignore_boxes: (J, 4)`` xyxy (e.g. the mined pseudo-positives); the background anchors, locations or
proposals they cover are dropped from the classification loss (never turned into positives):

* RetinaNet: an anchor matched to background (``BELOW_LOW_THRESHOLD``) becomes ``BETWEEN_THRESHOLDS``
  (ignored by the focal loss) when the model's own matcher would NOT call it background if the ignore
  boxes were labelled boxes: IoU >= ``bg_iou_thresh`` (0.4), or its best anchor (low-quality match).
* FCOS: a background location whose centre lies inside an ignore box is dropped from the focal loss.
  The whole box, not only FCOS's centre-sampling region, because every location on an unlabelled
  object is "background" to stock FCOS. The loss normaliser (number of positives) is unchanged.
* Faster R-CNN: RPN anchors as for RetinaNet (IoU >= 0.3 or best anchor) are not sampled as background;
  RoI proposals with IoU >= ``box_bg_iou_thresh`` (0.5) to an ignore box are not sampled as background.

Without ignore boxes every loss equals torchvision's exactly (the stock code path runs).
``last_ignored_negatives`` counts the background anchors/locations/proposals turned to ignore in the
last loss call, so a training step can check that mined pseudo-positives left the negatives.
Each model also gives ``objectness_candidates(images, topk)``: class-agnostic scored boxes for mining;
FCOS and RetinaNet also ``detect_with_candidates(images, topk)``: those and the detections from one pass.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import box_iou, clip_boxes_to_image, sigmoid_focal_loss

IGNORE_KEY = "ignore_boxes"


def _retype(module: nn.Module, cls: type) -> nn.Module:
    # torchvision builds transform/head/RPN/RoI heads inside __init__ from many arguments; re-typing the
    # built module (the subclasses add methods only) keeps all of them without copying the signatures.
    module.__class__ = cls
    return module


def _ignore_boxes(target: dict[str, Tensor]) -> Optional[Tensor]:
    boxes = target.get(IGNORE_KEY)
    return boxes if boxes is not None and boxes.numel() > 0 else None


def near_ignore_boxes(ignore_boxes: Tensor, candidates: Tensor, matcher: Matcher) -> Tensor:
    """``(M,)`` bool: candidates that ``matcher`` would NOT call background if ``ignore_boxes (J, 4)``
    were labelled boxes (IoU >= its low threshold, or a low-quality best match with IoU > 0)."""
    iou = box_iou(ignore_boxes.to(candidates), candidates)  # (J, M)
    matched = matcher(iou)
    # IoU > 0: a low-quality match with IoU 0 would otherwise mark every anchor.
    return (matched != Matcher.BELOW_LOW_THRESHOLD) & (iou.max(dim=0).values > 0)


class IgnoreAwareTransform(GeneralizedRCNNTransform):
    """torchvision's resize/normalise transform that also resizes ``targets[i]["ignore_boxes"]``."""

    def resize(self, image: Tensor, target: Optional[dict[str, Tensor]] = None):
        original_size = image.shape[-2:]
        image, target = super().resize(image, target)
        if target is not None and IGNORE_KEY in target:
            target[IGNORE_KEY] = resize_boxes(target[IGNORE_KEY], original_size, image.shape[-2:])
        return image, target


def _rescale_candidates(boxes: list[Tensor], scores: list[Tensor], image_sizes, original_sizes):
    return [(resize_boxes(b, size, original), s)
            for b, s, size, original in zip(boxes, scores, image_sizes, original_sizes)]


def _topk_per_image(scores: Tensor, topk: int) -> tuple[Tensor, Tensor]:
    """``scores: (HWA,)`` -> the ``topk`` best values and their indices."""
    return scores.topk(min(topk, scores.shape[0]))


class _CandidatesMixin:
    """Shared first half of ``objectness_candidates``: resize, normalise, backbone."""

    def _features(self, images: list[Tensor]):
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, _ = self.transform(images, None)
        features = self.backbone(image_list.tensors)
        return image_list, list(features.values()), original_sizes

    def _top_candidates(self, scores: Tensor, regression: Tensor, anchors: list[Tensor], image_list,
                        original_sizes, topk: int, decode) -> list[tuple[Tensor, Tensor]]:
        """Shared second half: per image the ``topk`` anchors of ``scores (N, HWA)``, decoded and clipped."""
        boxes_out, scores_out = [], []
        for i, size in enumerate(image_list.image_sizes):
            best, idx = _topk_per_image(scores[i], topk)
            boxes_out.append(clip_boxes_to_image(decode(regression[i][idx], anchors[i][idx]), size))
            scores_out.append(best)
        return _rescale_candidates(boxes_out, scores_out, image_list.image_sizes, original_sizes)


class _OneStageCandidatesMixin(_CandidatesMixin):
    """Candidates and detections of FCOS / RetinaNet from ONE backbone + head pass.

    The detection task's engine needs both from its teacher on the same images each step (detections to
    merge as pseudo-boxes, class-agnostic candidates to mine); torchvision's ``forward`` gives only the
    detections, so two calls would run the network twice. Subclasses give ``_objectness(head_outputs)``
    ``(N, HWA)`` and ``_decode(regression, anchors)``.
    """

    @torch.no_grad()
    def objectness_candidates(self, images: list[Tensor], topk: int = 1000) -> list[tuple[Tensor, Tensor]]:
        """Per image ``(boxes (M, 4), scores (M,))``: the ``topk`` best by :meth:`_objectness`."""
        return self._one_pass(images, topk, detect=False)[1]

    @torch.no_grad()
    def detect_with_candidates(self, images: list[Tensor], topk: int = 1000):
        """``(detections, candidates)``: eval-mode ``forward(images)`` and ``objectness_candidates(images,
        topk)``, the same values as the two calls (the model must be in eval mode), from one pass."""
        return self._one_pass(images, topk, detect=True)

    def _one_pass(self, images: list[Tensor], topk: int, detect: bool):
        image_list, features, original_sizes = self._features(images)
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        candidates = self._top_candidates(self._objectness(head_outputs), head_outputs["bbox_regression"],
                                          anchors, image_list, original_sizes, topk, self._decode)
        if not detect:
            return None, candidates
        # The rest of torchvision's eval-mode forward (FCOS / RetinaNet): split per level, postprocess.
        locations = [f.shape[-2] * f.shape[-1] for f in features]
        per_location = head_outputs["cls_logits"].shape[1] // sum(locations)  # RetinaNet's A anchors; FCOS 1
        sizes = [n * per_location for n in locations]
        split_outputs = {k: list(v.split(sizes, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(sizes)) for a in anchors]
        detections = self.postprocess_detections(split_outputs, split_anchors, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes), candidates


class IgnoreAwareRetinaNet(_OneStageCandidatesMixin, RetinaNet):
    """torchvision ``RetinaNet`` whose ``compute_loss`` honours ``targets[i]["ignore_boxes"]``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _retype(self.transform, IgnoreAwareTransform)
        self.last_ignored_negatives = 0

    def compute_loss(self, targets, head_outputs, anchors):
        matched_idxs, ignored = [], 0
        for anchors_per_image, target in zip(anchors, targets):
            if target["boxes"].numel() == 0:  # as torchvision: all background
                matched = torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64,
                                     device=anchors_per_image.device)
            else:
                matched = self.proposal_matcher(box_iou(target["boxes"], anchors_per_image))
            ignore = _ignore_boxes(target)
            if ignore is not None:
                turn = (matched == Matcher.BELOW_LOW_THRESHOLD) & near_ignore_boxes(
                    ignore, anchors_per_image, self.proposal_matcher)
                matched = matched.masked_fill(turn, Matcher.BETWEEN_THRESHOLDS)
                ignored += int(turn.sum())
            matched_idxs.append(matched)
        self.last_ignored_negatives = ignored
        return self.head.compute_loss(targets, head_outputs, anchors, matched_idxs)

    @staticmethod
    def _objectness(head_outputs: dict[str, Tensor]) -> Tensor:
        """``(N, HWA)`` max class probability per anchor."""
        return torch.sigmoid(head_outputs["cls_logits"]).max(dim=-1).values

    def _decode(self, regression: Tensor, anchors: Tensor) -> Tensor:
        return self.box_coder.decode_single(regression, anchors)


class IgnoreAwareFCOSHead(FCOSHead):
    """``FCOSHead`` whose classification loss skips background locations inside ignore boxes."""

    last_ignored_negatives: int = 0

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        ignored = []
        for target, anchors_per_image, matched in zip(targets, anchors, matched_idxs):
            ignore = _ignore_boxes(target)
            if ignore is None:
                ignored.append(torch.zeros_like(matched, dtype=torch.bool))
                continue
            centres = (anchors_per_image[:, :2] + anchors_per_image[:, 2:]) / 2  # (HWA, 2)
            ignore = ignore.to(centres)
            inside = ((centres[:, None] > ignore[None, :, :2]) & (centres[:, None] < ignore[None, :, 2:]))
            ignored.append((matched < 0) & inside.all(dim=2).any(dim=1))
        ignored = torch.stack(ignored)  # (N, HWA)
        self.last_ignored_negatives = int(ignored.sum())
        if self.last_ignored_negatives == 0:
            return losses  # the stock loss, bit for bit
        losses["classification"] = self._classification_loss(targets, head_outputs["cls_logits"],
                                                              matched_idxs, ~ignored)
        return losses

    @staticmethod
    def _classification_loss(targets, cls_logits: Tensor, matched_idxs, valid: Tensor) -> Tensor:
        """Focal loss of ``cls_logits: (N, HWA, C)`` over ``valid: (N, HWA)``, / number of positives."""
        one_hot = torch.zeros_like(cls_logits)
        num_foreground = 0
        for i, (target, matched) in enumerate(zip(targets, matched_idxs)):
            foreground = matched >= 0
            one_hot[i, foreground, target["labels"][matched[foreground]]] = 1.0
            num_foreground += int(foreground.sum())
        loss = sigmoid_focal_loss(cls_logits[valid], one_hot[valid], reduction="sum")
        return loss / max(1, num_foreground)


class IgnoreAwareFCOS(_OneStageCandidatesMixin, FCOS):
    """torchvision ``FCOS`` whose losses honour ``targets[i]["ignore_boxes"]``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _retype(self.transform, IgnoreAwareTransform)
        if type(self.head) is FCOSHead:
            _retype(self.head, IgnoreAwareFCOSHead)

    @property
    def last_ignored_negatives(self) -> int:
        return int(getattr(self.head, "last_ignored_negatives", 0))

    @staticmethod
    def _objectness(head_outputs: dict[str, Tensor]) -> Tensor:
        """``(N, HWA)`` ``max_c sqrt(sigmoid(cls_c) * sigmoid(centerness))`` (FCOS's own detection score)."""
        return torch.sqrt(torch.sigmoid(head_outputs["cls_logits"]).max(dim=-1).values
                          * torch.sigmoid(head_outputs["bbox_ctrness"][..., 0]))

    def _decode(self, regression: Tensor, anchors: Tensor) -> Tensor:
        return self.box_coder.decode(regression, anchors)


class IgnoreAwareRPN(RegionProposalNetwork):
    """RPN whose background anchors near ignore boxes are labelled -1 (never sampled)."""

    last_ignored_negatives: int = 0

    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched_gt_boxes = super().assign_targets_to_anchors(anchors, targets)
        ignored = 0
        for i, (anchors_per_image, target) in enumerate(zip(anchors, targets)):
            ignore = _ignore_boxes(target)
            if ignore is None:
                continue
            turn = (labels[i] == 0) & near_ignore_boxes(ignore, anchors_per_image, self.proposal_matcher)
            labels[i] = labels[i].masked_fill(turn, -1.0)
            ignored += int(turn.sum())
        self.last_ignored_negatives = ignored
        return labels, matched_gt_boxes


class IgnoreAwareRoIHeads(RoIHeads):
    """RoI heads whose background proposals with IoU >= ``bg_iou_thresh`` to an ignore box are not
    sampled by ``fg_bg_sampler``."""

    last_ignored_negatives: int = 0

    def select_training_samples(self, proposals, targets):
        # assign_targets_to_proposals() does not see the targets; hand it the ignore boxes this way.
        self._pending_ignore = [_ignore_boxes(t) for t in targets]
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._pending_ignore = None

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        matched_idxs, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        pending = getattr(self, "_pending_ignore", None) or [None] * len(proposals)
        ignored = 0
        for i, (proposals_in_image, ignore) in enumerate(zip(proposals, pending)):
            if ignore is None:
                continue
            turn = (labels[i] == 0) & near_ignore_boxes(ignore, proposals_in_image, self.proposal_matcher)
            labels[i] = labels[i].masked_fill(turn, -1)
            ignored += int(turn.sum())
        self.last_ignored_negatives = ignored
        return matched_idxs, labels


class IgnoreAwareFasterRCNN(_CandidatesMixin, FasterRCNN):
    """torchvision ``FasterRCNN`` whose RPN and RoI sampling honour ``targets[i]["ignore_boxes"]``.

    Labels follow torchvision: ``num_classes`` includes background 0.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _retype(self.transform, IgnoreAwareTransform)
        _retype(self.rpn, IgnoreAwareRPN)
        _retype(self.roi_heads, IgnoreAwareRoIHeads)

    @property
    def last_ignored_negatives(self) -> int:
        """RPN anchors plus RoI proposals turned from background to ignore in the last call."""
        return int(self.rpn.last_ignored_negatives) + int(self.roi_heads.last_ignored_negatives)

    @torch.no_grad()
    def objectness_candidates(self, images: list[Tensor], topk: int = 1000) -> list[tuple[Tensor, Tensor]]:
        """Per image ``(boxes (M, 4), scores (M,))``: RPN proposals and their objectness probability
        (after the RPN's own per-level NMS; at most ``topk``)."""
        image_list, features, original_sizes = self._features(images)
        objectness, deltas = self.rpn.head(features)
        anchors = self.rpn.anchor_generator(image_list, features)
        num_anchors_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
        boxes, scores = self.rpn.filter_proposals(proposals, objectness, image_list.image_sizes,
                                                  num_anchors_per_level)
        boxes, scores = [b[:topk] for b in boxes], [s[:topk] for s in scores]
        return _rescale_candidates(boxes, scores, image_list.image_sizes, original_sizes)
