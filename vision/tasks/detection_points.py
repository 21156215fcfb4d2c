"""Point-supervised detection: boxes from one point per object, learned on the detector's own features.

PointOBB (Luo et al., "PointOBB: Learning Oriented Object Detection via Single Point Supervision", CVPR
2024), axis-aligned: a MIL head (:class:`vision.models.detection.point_to_box.PointToBoxMIL`) scores bags
of candidate boxes around each labelled point, with scale consistency between the image and a resized
copy. Here the MIL head pools from the detector's FPN (the same backbone the detector trains), so the
two stages run inside one training loop (:class:`vision.tasks.detection.DetectionTask`, ``mode:
points``):

1. ``point_burn_in_steps`` steps: only the MIL losses (the backbone learns what an object is from points).
2. then: the MIL head's best box of each bag (detached) is a pseudo-box, and the detector trains on
   those boxes as usual (marked incomplete, so mining and the teacher apply) while MIL keeps training.

The baseline (``point_boxes: mean_size``) replaces step 2's MIL boxes by a box of the class's mean size
centred on each point. The mean sizes are a prior GIVEN per class (``class_mean_wh``: e.g. measured on a
handful of boxes, or known from the sensor set-up), never estimated from the training split's hidden
full boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from vision.errors import DataError
from vision.models.detection.point_to_box import PointToBoxMIL, mean_size_boxes


def matched_box_iou(predicted: Tensor, target: Tensor) -> Tensor:
    """``(K,)`` IoU of row ``k`` of ``predicted (K, 4)`` with row ``k`` of ``target (K, 4)``."""
    if predicted.shape[0] == 0:
        return predicted.new_zeros(0)
    return box_iou(predicted, target).diagonal()


class PointToBoxOnDetector(nn.Module):
    """A :class:`PointToBoxMIL` head on a torchvision detector's FPN (see the module docstring).

    Args:
        fpn_channels: channels of the detector's FPN levels.
        num_classes: C.
        featmap_names: FPN levels to pool from (FCOS/RetinaNet: ``"0", "1", "2"`` = strides 8, 16, 32).
        view2_scale: size ratio of the second view for PointOBB's scale consistency (1 disables it).
        consistency_weight: weight of ``loss_scale_consistency``.
        mil_kwargs: other :class:`PointToBoxMIL` arguments (``box_sizes``, ``aspect_ratios``, ...).
    """

    def __init__(self, fpn_channels: int, num_classes: int, featmap_names: Sequence[str] = ("0", "1", "2"),
                 view2_scale: float = 0.75, consistency_weight: float = 1.0, mil_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        self.mil = PointToBoxMIL(fpn_channels, num_classes, featmap_names=tuple(featmap_names), **(mil_kwargs or {}))
        self.view2_scale = float(view2_scale)
        self.consistency_weight = float(consistency_weight)

    @staticmethod
    def _backbone(detector: nn.Module) -> tuple[nn.Module, nn.Module]:
        model = getattr(detector, "model", detector)
        if not (hasattr(model, "transform") and hasattr(model, "backbone")):
            raise DataError(type(detector).__name__, "point mode needs a torchvision detector (transform + backbone)")
        return model.transform, model.backbone

    def _features(self, detector: nn.Module, images: list[Tensor]):
        """FPN features, the network's image sizes and per image ``(sx, sy)`` input -> network scale."""
        transform, backbone = self._backbone(detector)
        image_list, _ = transform(list(images), None)
        ratios = [torch.tensor([s[1] / img.shape[-1], s[0] / img.shape[-2]], device=img.device)
                  for s, img in zip(image_list.image_sizes, images)]
        return image_list, backbone(image_list.tensors), ratios

    def losses(self, detector: nn.Module, images: list[Tensor], points: list[Tensor],
               point_labels: list[Tensor]) -> dict[str, Tensor]:
        """``loss_mil``, ``loss_negative`` and (with ``view2_scale != 1``) ``loss_scale_consistency``.

        ``images``: B ``(3, H, W)``; ``points``: B ``(K_i, 2)`` xy pixels of those images; ``point_labels``:
        B ``(K_i,)``.
        """
        image_list, features, ratios = self._features(detector, images)
        scaled = [p * r for p, r in zip(points, ratios)]
        sizes = image_list.image_sizes
        features2 = sizes2 = None
        if self.view2_scale != 1.0:
            _, backbone = self._backbone(detector)
            tensors2 = F.interpolate(image_list.tensors, scale_factor=self.view2_scale, mode="bilinear",
                                     align_corners=False)
            features2 = backbone(tensors2)
            sizes2 = [(round(h * self.view2_scale), round(w * self.view2_scale)) for h, w in sizes]
        losses = self.mil(features, sizes, scaled, point_labels, features2, sizes2)
        if "loss_scale_consistency" in losses:
            losses["loss_scale_consistency"] = losses["loss_scale_consistency"] * self.consistency_weight
        return losses

    @torch.no_grad()
    def pseudo_boxes(self, detector: nn.Module, images: list[Tensor], points: list[Tensor],
                     point_labels: list[Tensor]) -> list[Tensor]:
        """Per image ``(K_i, 4)`` xyxy boxes in the input images' pixels: each bag's best box."""
        image_list, features, ratios = self._features(detector, images)
        scaled = [p * r for p, r in zip(points, ratios)]
        boxes = self.mil.predict_boxes(features, image_list.image_sizes, scaled, point_labels)
        return [b / r.repeat(2) for b, r in zip(boxes, ratios)]


def prior_boxes(points: list[Tensor], point_labels: list[Tensor], class_mean_wh: Optional[Sequence]) -> list[Tensor]:
    """The mean-size baseline: per image ``(K_i, 4)`` boxes of the class's given mean ``(w, h)``."""
    if class_mean_wh is None:
        raise DataError("DetectionTask.class_mean_wh", "point_boxes 'mean_size' needs a (w, h) prior per class")
    prior = torch.as_tensor(class_mean_wh, dtype=torch.float32)
    return [mean_size_boxes(p.float(), lab, prior.to(p.device)) for p, lab in zip(points, point_labels)]
