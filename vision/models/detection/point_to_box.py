"""Boxes from one point per object: multiple-instance learning over proposal bags around each point.

Inspired by PointOBB (Luo et al., "PointOBB: Learning Oriented Object Detection via Single Point
Supervision", CVPR 2024), for axis-aligned boxes:

* Bags: for every labelled point, candidate boxes of several sizes and aspect ratios, centred on the
  point or shifted by a third of the box so that the point may lie off-centre (a click is anywhere
  on the object).
* MIL head (WSDDN-style two streams): a class stream ``softmax`` over C classes + background per box and
  an instance stream ``softmax`` over the bag; the bag's class score is
  ``S_c = sum_j p_cls[j, c] * p_ins[j, c]``, trained with binary cross-entropy against the point's class.
  The instance stream is contrastive (ContextLocNet, Kantorov et al., ECCV 2016): box score minus the
  score of a frame around it, so a box that fits the object (object inside, background around) beats
  the parts inside it and the boxes that spill over.
* Negatives: random boxes holding no labelled point train the background class.
* Scale consistency (PointOBB's scale-sensitive consistency): in a second view resized by ``s`` the bag
  is the same boxes times ``s``, and the bag's score distribution must agree with the first view's
  (symmetric KL), so the chosen box in view 2 is ``s`` times the one in view 1.

The best box of each bag is the pseudo-box (:meth:`PointToBoxMIL.predict_boxes`).
:func:`mean_size_boxes` is the baseline: a box of the class's mean size centred on each point.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image

from vision.errors import DataError

Features = Union[Tensor, "OrderedDict[str, Tensor]"]


def mean_size_boxes(points: Tensor, labels: Tensor, mean_wh_per_class: Tensor) -> Tensor:
    """Baseline pseudo-boxes: ``(K, 4)`` xyxy boxes of the class's mean ``(w, h)`` centred on each point.

    Args:
        points: ``(K, 2)`` x, y pixels.
        labels: ``(K,)`` class ids in ``0..C-1``.
        mean_wh_per_class: ``(C, 2)`` mean width and height of each class.

    >>> mean_size_boxes(torch.tensor([[10., 20.]]), torch.tensor([1]), torch.tensor([[2., 2.], [4., 6.]]))
    tensor([[ 8., 17., 12., 23.]])
    """
    _check_points(points, labels, "mean_size_boxes")
    if labels.numel() and int(labels.max()) >= mean_wh_per_class.shape[0]:
        raise DataError("mean_size_boxes.labels", f"class id {int(labels.max())} has no mean size")
    half = mean_wh_per_class.to(points)[labels.long()] / 2
    return torch.cat([points - half, points + half], dim=1)


def _check_points(points, labels, where: str) -> None:
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 2:
        raise DataError(f"{where}.points", "expected (K, 2) x, y tensors")
    if not isinstance(labels, Tensor) or labels.shape != (points.shape[0],) or labels.is_floating_point():
        raise DataError(f"{where}.labels", f"expected ({points.shape[0]},) integer class ids")
    if labels.numel() and int(labels.min()) < 0:
        raise DataError(f"{where}.labels", "class ids must be >= 0")


def point_bags(points: Tensor, box_sizes: Sequence[float], aspect_ratios: Sequence[float],
               centre_shifts: Sequence[float]) -> Tensor:
    """``(K, P, 4)`` unclipped candidate boxes around ``points: (K, 2)``.

    ``P = len(box_sizes) * len(aspect_ratios) * len(centre_shifts) ** 2``; a box of size ``s`` and ratio
    ``r = h / w`` is ``s / sqrt(r)`` wide and ``s * sqrt(r)`` high, its centre at ``point + shift * (w, h)``.
    """
    shapes = torch.tensor([[s / r ** 0.5, s * r ** 0.5] for s in box_sizes for r in aspect_ratios])  # (A, 2)
    shifts = torch.tensor(list(itertools.product(centre_shifts, centre_shifts)))  # (S, 2)
    wh = shapes[:, None, :].expand(-1, shifts.shape[0], -1).reshape(-1, 2).to(points)  # (P, 2)
    offsets = (shapes[:, None, :] * shifts[None]).reshape(-1, 2).to(points)  # (P, 2)
    centres = points[:, None, :] + offsets[None]  # (K, P, 2)
    return torch.cat([centres - wh / 2, centres + wh / 2], dim=-1)


class PointToBoxMIL(nn.Module):
    """MIL pseudo-boxes from points on a feature map (see the module docstring).

    Args:
        in_channels: channels of the feature map(s).
        num_classes: C (class ids ``0..C-1``; index C of the class stream is background).
        box_sizes: side lengths (px, geometric mean of w and h) of the bag's boxes.
        aspect_ratios: ``h / w`` of the bag's boxes.
        centre_shifts: box-centre offsets from the point, as fractions of the box's w and h.
        featmap_names: keys of the feature dict to pool from (a bare tensor is ``"0"``).
        roi_size: RoIAlign output size.
        context_scale: the frame is the box enlarged by this factor, minus the box.
        num_negatives: background boxes drawn per image.
    """

    def __init__(self, in_channels: int, num_classes: int,
                 box_sizes: Sequence[float] = (8, 12, 16, 24, 32, 48, 64, 96),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), centre_shifts: Sequence[float] = (-1 / 3, 0, 1 / 3),
                 featmap_names: Sequence[str] = ("0",), roi_size: int = 7, hidden: int = 256,
                 context_scale: float = 1.8, num_negatives: int = 16) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.box_sizes, self.aspect_ratios = tuple(box_sizes), tuple(aspect_ratios)
        self.centre_shifts = tuple(centre_shifts)
        self.context_scale, self.num_negatives = float(context_scale), int(num_negatives)
        self.pool = MultiScaleRoIAlign(list(featmap_names), roi_size, sampling_ratio=2)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * roi_size ** 2, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.class_head = nn.Linear(hidden, num_classes + 1)
        self.instance_head = nn.Linear(hidden, num_classes)
        # Frame = the RoI cells of the enlarged box that fall outside the box itself.
        centres = (torch.arange(roi_size) + 0.5) / roi_size
        outside_1d = (centres - 0.5).abs() > 0.5 / self.context_scale
        self.register_buffer("frame_mask", (outside_1d[:, None] | outside_1d[None, :]).float(), persistent=False)

    # ----------------------------------------------------------------------------------------------
    def _pool(self, features: Features, boxes: list[Tensor], image_sizes) -> Tensor:
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        return self.pool(features, boxes, [tuple(int(v) for v in s) for s in image_sizes])

    def _scores(self, features: Features, boxes: list[Tensor], image_sizes) -> tuple[Tensor, Tensor]:
        """Class logits ``(R, C+1)`` and contrastive instance logits ``(R, C)`` of boxes (R in total)."""
        inside = self.body(self._pool(features, boxes, image_sizes))
        frames = []
        for b in boxes:
            centre, half = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) * self.context_scale / 2
            frames.append(torch.cat([centre - half, centre + half], dim=1))
        frame = self.body(self._pool(features, frames, image_sizes) * self.frame_mask)
        return self.class_head(inside), self.instance_head(inside) - self.instance_head(frame)

    def _bags(self, points: list[Tensor], image_sizes, scale: Optional[list[Tensor]] = None) -> list[Tensor]:
        """Per image ``(K, P, 4)`` bags clipped to the image; ``scale (2,)`` per image maps view 1 to 2."""
        bags = []
        for i, (p, size) in enumerate(zip(points, image_sizes)):
            bag = point_bags(p.float(), self.box_sizes, self.aspect_ratios, self.centre_shifts)
            if scale is not None:
                bag = bag * scale[i].repeat(2).to(bag)
            bags.append(clip_boxes_to_image(bag, (int(size[0]), int(size[1]))))
        return bags

    def _bag_probabilities(self, features, image_sizes, bags, labels) -> tuple[Tensor, Tensor]:
        """``(K_total, P, C)`` joint score ``p_cls * p_ins`` and ``(K_total,)`` labels."""
        num_proposals = bags[0].shape[1] if bags else 0
        class_logits, instance_logits = self._scores(features, [b.reshape(-1, 4) for b in bags], image_sizes)
        p_cls = class_logits.softmax(dim=-1)[:, : self.num_classes].reshape(-1, num_proposals, self.num_classes)
        p_ins = instance_logits.reshape(-1, num_proposals, self.num_classes).softmax(dim=1)
        return p_cls * p_ins, torch.cat(labels).long()

    def _check(self, features, image_sizes, points, point_labels) -> None:
        if len(points) != len(point_labels) or len(points) != len(image_sizes):
            raise DataError("PointToBoxMIL", "points, point_labels and image_sizes need one entry per image")
        for p, lab in zip(points, point_labels):
            _check_points(p, lab, "PointToBoxMIL")
            if lab.numel() and int(lab.max()) >= self.num_classes:
                raise DataError("PointToBoxMIL.labels", f"class ids must be < {self.num_classes}")

    def _negative_loss(self, features, image_sizes, points: list[Tensor]) -> Tensor:
        """Cross-entropy to background of random boxes (per image) that hold no labelled point."""
        boxes = []
        for p, size in zip(points, image_sizes):
            h, w = float(size[0]), float(size[1])
            side = torch.tensor(self.box_sizes)[torch.randint(len(self.box_sizes), (self.num_negatives,))]
            ratio = torch.tensor(self.aspect_ratios)[torch.randint(len(self.aspect_ratios), (self.num_negatives,))]
            wh = torch.stack([side / ratio.sqrt(), side * ratio.sqrt()], dim=1)
            centre = torch.rand(self.num_negatives, 2) * torch.tensor([w, h])
            b = clip_boxes_to_image(torch.cat([centre - wh / 2, centre + wh / 2], 1).to(p.device), (int(h), int(w)))
            holds_point = ((p[None, :, :] >= b[:, None, :2]) & (p[None, :, :] <= b[:, None, 2:])).all(-1).any(-1)
            boxes.append(b[~holds_point])
        logits = self.class_head(self.body(self._pool(features, boxes, image_sizes)))
        if logits.shape[0] == 0:
            return logits.sum()
        return F.cross_entropy(logits, torch.full((logits.shape[0],), self.num_classes, device=logits.device))

    def forward(self, features: Features, image_sizes: Sequence[Sequence[int]], points: list[Tensor],
                point_labels: list[Tensor], features_view2: Optional[Features] = None,
                image_sizes_view2: Optional[Sequence[Sequence[int]]] = None) -> dict[str, Tensor]:
        """Training losses.

        Args:
            features: ``(B, C_feat, Hf, Wf)`` or an FPN dict of them, for images of ``image_sizes``
                (B pairs ``(H, W)``; the stride is inferred from the sizes, as in torchvision).
            points: B tensors ``(K_i, 2)`` of x, y pixels; point_labels: B tensors ``(K_i,)``.
            features_view2, image_sizes_view2: the same images resized (by ``s`` = size ratio); adds
                the MIL loss of view 2 and ``loss_scale_consistency``.

        Returns:
            ``loss_mil`` (bag BCE), ``loss_negative`` (background CE) and, with a second view,
            ``loss_scale_consistency`` (symmetric KL between the two views' bag score distributions).
        """
        self._check(features, image_sizes, points, point_labels)
        bags = self._bags(points, image_sizes)
        joint, labels = self._bag_probabilities(features, image_sizes, bags, point_labels)
        losses = {"loss_mil": _mil_loss(joint, labels),
                  "loss_negative": self._negative_loss(features, image_sizes, points)}
        if features_view2 is not None:
            if image_sizes_view2 is None or len(image_sizes_view2) != len(image_sizes):
                raise DataError("PointToBoxMIL.image_sizes_view2", "needs one (H, W) per image of view 1")
            scale = [torch.tensor([s2[1] / s1[1], s2[0] / s1[0]]) for s1, s2 in zip(image_sizes, image_sizes_view2)]
            bags2 = self._bags(points, image_sizes_view2, scale)
            joint2, _ = self._bag_probabilities(features_view2, image_sizes_view2, bags2, point_labels)
            losses["loss_mil"] = (losses["loss_mil"] + _mil_loss(joint2, labels)) / 2
            losses["loss_scale_consistency"] = _symmetric_kl(_own_class(joint, labels), _own_class(joint2, labels))
        return losses

    @torch.no_grad()
    def predict_boxes(self, features: Features, image_sizes: Sequence[Sequence[int]], points: list[Tensor],
                      point_labels: list[Tensor]) -> list[Tensor]:
        """Per image ``(K_i, 4)`` xyxy pseudo-boxes: the bag box with the highest ``p_cls * p_ins`` for
        the point's class."""
        self._check(features, image_sizes, points, point_labels)
        bags = self._bags(points, image_sizes)
        joint, labels = self._bag_probabilities(features, image_sizes, bags, point_labels)
        best = _own_class(joint, labels).argmax(dim=1)  # (K_total,)
        chosen = torch.cat([b for b in bags])[torch.arange(best.shape[0]), best] if best.numel() else \
            torch.zeros((0, 4))
        return list(chosen.split([p.shape[0] for p in points]))


def _own_class(joint: Tensor, labels: Tensor) -> Tensor:
    """``joint: (K, P, C)`` -> ``(K, P)`` scores of each point's own class."""
    return joint[torch.arange(joint.shape[0]), :, labels]


def _mil_loss(joint: Tensor, labels: Tensor) -> Tensor:
    """Bag BCE: ``S = sum_j p_cls * p_ins`` against the one-hot class, summed over classes, mean over bags."""
    if joint.shape[0] == 0:
        return joint.sum()
    bag = joint.sum(dim=1).clamp(1e-6, 1 - 1e-6)  # (K, C)
    target = F.one_hot(labels, bag.shape[1]).to(bag)
    return F.binary_cross_entropy(bag, target, reduction="sum") / bag.shape[0]


def _symmetric_kl(a: Tensor, b: Tensor) -> Tensor:
    """Mean over bags of ``KL(p||q) + KL(q||p) = sum (p - q)(log p - log q)``, p, q = normalised ``(K, P)``."""
    if a.shape[0] == 0:
        return a.sum()
    p = a / a.sum(dim=1, keepdim=True).clamp_min(1e-12)
    q = b / b.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return ((p - q) * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(dim=1).mean()
