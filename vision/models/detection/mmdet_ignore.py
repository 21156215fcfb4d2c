"""Ignore-aware pieces for mmdet 3.3 detectors: mined pseudo-positives are ignore, never negative.

SparseDet (Suri et al., "SparseDet: Improving Sparsely Annotated Object Detection with Pseudo-positive
Mining", ICCV 2023), for MMDetection models. Imported only when mmdet is installed (the
``sparsevision[mmdet]`` extra); :mod:`vision.models.detection.mmdet_backend` swaps these classes into a
model config before it is built.

What mmdet 3.3 offers and why it is not enough on its own:

* every detector hands ``DetDataSample.ignored_instances`` to its heads as ``batch_gt_instances_ignore``,
  and anchor heads (RetinaNet, the RPN) and ``StandardRoIHead`` pass them to their assigner;
* ``MaxIoUAssigner`` uses them only with ``ignore_iof_thr > 0`` (the shipped configs say -1, off), and then
  by IoF, overriding positives too: a labelled object's anchor that half-covers a mined box is lost;
* FCOS has no assigner: ``FCOSHead.loss_by_feat`` drops ``batch_gt_instances_ignore``.

So, with the same rules as the torchvision path (:mod:`vision.models.detection.ignore_losses`):

* :class:`IgnoreAwareMaxIoUAssigner` (RetinaNet, RPN and RoI head of Faster R-CNN): after the stock
  assignment, a NEGATIVE prior (``gt_inds == 0``) becomes ignore (``-1``) when this assigner would not call
  it background if the ignore boxes were labelled boxes (IoU >= ``neg_iou_thr``, or a low-quality best
  match with IoU > 0). Positives stay positive. The samplers (``PseudoSampler``, ``RandomSampler``) take
  negatives only from ``gt_inds == 0``, so ignored priors get no loss weight and are never sampled.
* :class:`IgnoreAwareFCOSHead`: background locations whose centre lies inside an ignore box are dropped
  from the focal loss; the normaliser (number of positives) is unchanged.

Each keeps ``ignored_negatives``: how many negatives it turned to ignore since the wrapper last reset it.
"""

from __future__ import annotations

from typing import Optional

import torch
from mmdet.models.dense_heads import FCOSHead
from mmdet.models.task_modules.assigners import MaxIoUAssigner
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import get_box_tensor
from mmdet.utils import reduce_mean
from torch import Tensor


def ignore_bboxes(instances) -> Optional[Tensor]:
    """``(J, 4)`` xyxy boxes of an ``ignored_instances`` InstanceData, or None when there are none."""
    if instances is None or "bboxes" not in instances:
        return None
    boxes = get_box_tensor(instances.bboxes)
    return boxes if boxes.numel() > 0 else None


@TASK_UTILS.register_module(force=True)
class IgnoreAwareMaxIoUAssigner(MaxIoUAssigner):
    """``MaxIoUAssigner`` whose negatives near ``gt_instances_ignore`` become ignore (see the module docstring).

    Same arguments as ``MaxIoUAssigner``; without ignore boxes the assignment is the stock one.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ignored_negatives = 0

    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None, **kwargs):
        result = super().assign(pred_instances, gt_instances, gt_instances_ignore, **kwargs)
        ignore = ignore_bboxes(gt_instances_ignore)
        priors = get_box_tensor(pred_instances.priors)
        if ignore is None or priors.numel() == 0:
            return result
        overlaps = self.iou_calculator(ignore.to(priors), priors)  # (J, M)
        as_labelled = self.assign_wrt_overlaps(overlaps, torch.zeros(len(ignore), dtype=torch.long,
                                                                     device=priors.device))
        # IoU > 0: a low-quality "best match" with IoU 0 would otherwise claim every prior.
        near = (as_labelled.gt_inds != 0) & (overlaps.max(dim=0).values > 0)
        turn = (result.gt_inds == 0) & near.to(result.gt_inds.device)
        result.gt_inds[turn] = -1
        self.ignored_negatives += int(turn.sum())
        return result


def inside_any(points: Tensor, boxes: Tensor) -> Tensor:
    """``(P,)`` bool: ``points (P, 2)`` strictly inside at least one of ``boxes (J, 4)`` xyxy."""
    boxes = boxes.to(points)
    inside = (points[:, None] > boxes[None, :, :2]) & (points[:, None] < boxes[None, :, 2:])  # (P, J, 2)
    return inside.all(dim=2).any(dim=1)


@MODELS.register_module(force=True)
class IgnoreAwareFCOSHead(FCOSHead):
    """``FCOSHead`` whose classification loss skips background locations inside ignore boxes."""

    ignored_negatives = 0

    def loss_by_feat(self, cls_scores, bbox_preds, centernesses, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None):
        losses = super().loss_by_feat(cls_scores, bbox_preds, centernesses, batch_gt_instances, batch_img_metas,
                                      batch_gt_instances_ignore)
        ignores = [ignore_bboxes(x) for x in (batch_gt_instances_ignore or [])]
        if all(ignore is None for ignore in ignores):
            return losses  # the stock loss, bit for bit
        points = self.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores], dtype=bbox_preds[0].dtype,
                                                  device=bbox_preds[0].device)
        labels, _ = self.get_targets(points, batch_gt_instances)
        labels = torch.cat(labels)  # (levels x images x HW,), the order of FCOSHead.loss_by_feat
        inside = torch.cat([inside_any(level, ignore) if ignore is not None
                            else level.new_zeros(len(level), dtype=torch.bool)
                            for level in points for ignore in ignores])
        ignored = (labels == self.num_classes) & inside
        self.ignored_negatives += int(ignored.sum())
        if not bool(ignored.any()):
            return losses
        scores = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels) for s in cls_scores])
        positives = ((labels >= 0) & (labels < self.num_classes)).sum().float()
        num_pos = max(reduce_mean(positives), 1.0)
        keep = ~ignored
        losses["loss_cls"] = self.loss_cls(scores[keep], labels[keep], avg_factor=num_pos)
        return losses
