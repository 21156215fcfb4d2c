"""2D detection with missing boxes (SparseDet) or one point per object (PointOBB-style), as a LightningModule.

SparseDet (Suri et al., "SparseDet: Improving Sparsely Annotated Object Detection with Pseudo-positive
Mining", ICCV 2023) on images whose boxes may be incomplete (``complete=False``), each piece switchable
from YAML:

* pseudo-positive mining (``mining``): class-agnostic candidates (``objectness_candidates``) of the EMA
  teacher (or of the student without one) with score > ``mining_score`` (0.8) and IoU <= ``mining_iou``
  (0.2) to every labelled box become ``ignore_boxes``: left out of the background, never positives;
* teacher pseudo-boxes (``teacher``, FixMatch-style): the EMA teacher's detections on the WEAK view with
  score > ``merge_score`` (0.9) and IoU < ``merge_iou`` (0.5) to every labelled box;
* ``thresholds: calibrated`` (the default) lowers both score thresholds to what the teacher scores on
  the labelled boxes it finds (:mod:`vision.engine.score_calibration`), capped at the paper's values:
  a detector trained from scratch never reaches 0.8 / 0.9 in a CPU-sized run, so with
  ``thresholds: fixed`` nothing is ever mined or merged there;
* weak/strong consistency (``consistency_weight``): the two views share their geometry
  (:mod:`datamodules.transforms.detection_augment`), so the teacher's pseudo-boxes from the weak view are
  the student's targets on the STRONG view: ``loss = L(weak; human, ignore = mined + pseudo)
  + w * L(strong; human + pseudo, ignore = mined)``. With ``consistency_weight: 0`` (or no strong view)
  the pseudo-boxes join the weak view's targets instead (one forward pass).

Mining and the teacher act only on incomplete images and after ``burn_in_steps`` (a random network has
nothing confident to offer). ``baseline: true`` is plain training: missing boxes count as background.
``mode: points`` learns boxes from points first (:mod:`vision.tasks.detection_points`).

Metrics against the FULL boxes: torchmetrics ``MeanAveragePrecision`` (COCO mAP), logged as ``val/map``,
``val/map_50``, ``test/map``, ``test/map_50``, ``test/map_75`` and ``test/ap/<class>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import lightning as L
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou, clip_boxes_to_image, remove_small_boxes

from vision.engine.ema_teacher import EMATeacher
from vision.engine.schedules import warmup_cosine
from vision.engine.score_calibration import LabelledScoreCalibration
from vision.losses.pseudo_positive import mine_pseudo_positives
from vision.models.detection.factory import Detector, build_detector
from vision.tasks.detection_points import PointToBoxOnDetector, matched_box_iou, prior_boxes


class TorchvisionDetector(Detector):
    """:func:`build_detector` as an ``nn.Module`` class, so YAML can name it with ``class_path``.

    Args: see :func:`vision.models.detection.factory.build_detector` (``arch`` = ``fcos | retinanet |
    fasterrcnn``; ``weights_path`` = a local state dict, nothing is downloaded).
    """

    def __init__(self, arch: str = "fcos", num_classes: int = 6, backbone: str = "resnet18", min_size: int = 192,
                 max_size: int = 256, weights_path: Optional[str] = None, fpn_channels: int = 128,
                 norm: str = "group") -> None:
        built = build_detector(arch, num_classes, backbone, min_size, max_size, weights_path=weights_path,
                               fpn_channels=fpn_channels, norm=norm)
        super().__init__(built.model, num_classes, arch)
        self.fpn_channels = int(fpn_channels)


def _empty_boxes(like: Tensor) -> Tensor:
    return like.new_zeros((0, 4))


def make_map_metric(class_metrics: bool = False):
    """COCO mAP (xyxy boxes) with the faster-coco-eval backend, pycocotools when it is missing."""
    from vision.metrics.detection import MeanAveragePrecision  # syncs ranks with uneven image counts

    try:
        return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval",
                                    class_metrics=class_metrics)
    except ModuleNotFoundError:  # faster-coco-eval is optional in torchmetrics
        return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                                    class_metrics=class_metrics)


class DetectionTask(L.LightningModule):
    """Detector training from incomplete boxes or points (see the module docstring).

    Args:
        model: a detector with the :class:`vision.models.detection.factory.Detector` interface
            (``forward``, ``objectness_candidates``, ``last_ignored_negatives``), e.g. :class:`TorchvisionDetector`.
        num_classes, class_names: C and the names for ``test/ap/<class>``.
        mode: ``boxes`` (weak boxes) or ``points`` (one point per object, boxes learned first).
        baseline: plain training (no mining, no teacher, no consistency): missing boxes are background.
        mining, mining_score, mining_iou: SparseDet pseudo-positive mining and its thresholds.
        teacher, ema_decay: an EMA teacher for mining, pseudo-boxes and (optionally) evaluation.
        merge_score, merge_iou: teacher detections kept as pseudo-boxes.
        thresholds: ``fixed`` (``mining_score`` / ``merge_score`` as given) or ``calibrated`` (those are caps;
            per-class thresholds follow the teacher's scores on labelled boxes).
        merge_ratio, mining_ratio, min_score: calibrated threshold = ``ratio`` * the mean score of the
            teacher's hits on labelled boxes, at least ``min_score``
            (:class:`vision.engine.score_calibration.LabelledScoreCalibration`).
        consistency_weight: weight of the strong-view loss on human + pseudo-boxes.
        burn_in_steps: steps before mining and the teacher start.
        optimizer, lr, momentum, weight_decay, warmup_steps: SGD (momentum) or AdamW; linear warm-up then
            cosine decay to 1% of ``lr`` over the run.
        eval_with_teacher: validate, test and predict with the teacher (when there is one).
        point_boxes: ``mil`` (learned, :class:`PointToBoxOnDetector`) or ``mean_size`` (the baseline).
        point_burn_in_steps: MIL-only steps before the detector trains on point boxes.
        class_mean_wh: ``(C, 2)`` given mean box size per class (for ``mean_size``; also logged as a baseline).
        mil_options: keyword arguments of :class:`PointToBoxOnDetector` (``view2_scale``, ``mil_kwargs``, ...).
        write_predictions, prediction_dir, overwrite_predictions: ``predict`` writes a COCO results JSON
            ``<prediction_dir or run dir/predictions>/<split>.results.json``; never over an existing file
            unless ``overwrite_predictions``.
    """

    def __init__(self, model: nn.Module, num_classes: int, class_names: Optional[list[str]] = None,
                 mode: Literal["boxes", "points"] = "boxes", baseline: bool = False, mining: bool = True,
                 mining_score: float = 0.8, mining_iou: float = 0.2, teacher: bool = True, ema_decay: float = 0.999,
                 merge_score: float = 0.9, merge_iou: float = 0.5,
                 thresholds: Literal["fixed", "calibrated"] = "calibrated", merge_ratio: float = 1.25,
                 mining_ratio: float = 0.75, min_score: float = 0.2, consistency_weight: float = 1.0,
                 burn_in_steps: int = 200, optimizer: Literal["sgd", "adamw"] = "sgd", lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 1e-4, warmup_steps: int = 100,
                 eval_with_teacher: bool = False, point_boxes: Literal["mil", "mean_size"] = "mil",
                 point_burn_in_steps: int = 200, class_mean_wh: Optional[list[list[float]]] = None,
                 mil_options: Optional[dict] = None, write_predictions: bool = True,
                 prediction_dir: Optional[str] = None, overwrite_predictions: bool = False) -> None:
        super().__init__()
        if mode not in ("boxes", "points"):
            raise ValueError(f"mode must be 'boxes' or 'points', got {mode!r}")
        if thresholds not in ("fixed", "calibrated"):
            raise ValueError(f"thresholds must be 'fixed' or 'calibrated', got {thresholds!r}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.teacher = EMATeacher(model, decay=ema_decay) if teacher and not baseline else None
        self.merge_calibration = self.mining_calibration = None
        if thresholds == "calibrated" and not baseline:
            self.merge_calibration = LabelledScoreCalibration(num_classes, merge_score, merge_ratio, min_score)
            self.mining_calibration = LabelledScoreCalibration(num_classes, mining_score, mining_ratio, min_score,
                                                               class_agnostic=True)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.points = None
        if mode == "points" and point_boxes == "mil":
            channels = getattr(model, "fpn_channels", None) or model.model.backbone.out_channels
            self.points = PointToBoxOnDetector(channels, num_classes, **(mil_options or {}))
        self.val_map, self.test_map = make_map_metric(), make_map_metric(class_metrics=True)
        self.point_iou: list[Tensor] = []
        self.last_mined = self.last_pseudo = self.last_ignored_negatives = 0

    # ------------------------------------------------------------------ SparseDet pieces
    def _candidate_net(self) -> nn.Module:
        return self.teacher.model if self.teacher is not None else self.model

    def mining_threshold(self) -> float:
        """The objectness a candidate must exceed to be mined (``mining_score``, or its calibrated value)."""
        if self.mining_calibration is None:
            return float(self.hparams.mining_score)
        return float(self.mining_calibration.threshold_for())

    def mine_ignore_boxes(self, images: list[Tensor], labelled: list[Tensor], complete: list[bool],
                          human: Optional[list[Tensor]] = None,
                          candidates: Optional[list[tuple[Tensor, Tensor]]] = None) -> list[Tensor]:
        """Per image ``(J, 4)`` pseudo-positives to ignore: confident candidates far from every ``labelled`` box.

        Complete images get none (their unlabelled regions are background). ``human`` (default
        ``labelled``): the people's boxes, on which calibrated thresholds are measured.
        """
        out = [_empty_boxes(b) for b in labelled]
        todo = [i for i, done in enumerate(complete) if not done]
        if not todo:
            return out
        if candidates is None:
            candidates = self._candidate_net().objectness_candidates([images[i] for i in todo])
        if self.mining_calibration is not None:
            human = labelled if human is None else human
            self.mining_calibration.update([(b, s, None) for b, s in candidates],
                                           [(human[i], human[i].new_zeros(len(human[i]))) for i in todo])
        threshold = self.mining_threshold()
        for i, (boxes, scores) in zip(todo, candidates):
            keep = mine_pseudo_positives(boxes, scores, labelled[i].to(boxes), threshold, self.hparams.mining_iou)
            out[i] = boxes[keep].detach()
        return out

    def teacher_pseudo_boxes(self, images: list[Tensor], labelled: list[Tensor], complete: list[bool],
                             labels: Optional[list[Tensor]] = None,
                             detected: Optional[list[dict[str, Tensor]]] = None) -> list[tuple[Tensor, Tensor]]:
        """Per image ``(boxes (P, 4), labels (P,))``: teacher detections above ``merge_score`` (or its calibrated
        per-class value, measured on ``labelled`` with their ``labels``) that overlap no labelled box
        (IoU < ``merge_iou``); none for complete images. ``detected``: the teacher's detections of the
        incomplete images, when already computed (:meth:`_teacher_pass`)."""
        out = [(_empty_boxes(b), torch.zeros(0, dtype=torch.int64, device=b.device)) for b in labelled]
        todo = [i for i, done in enumerate(complete) if not done]
        if not todo or self.teacher is None:
            return out
        if detected is None:
            detected = self.teacher([images[j] for j in todo])
        if self.merge_calibration is not None and labels is not None:
            self.merge_calibration.update([(d["boxes"], d["scores"], d["labels"]) for d in detected],
                                          [(labelled[i], labels[i]) for i in todo])
        for i, detections in zip(todo, detected):
            if self.merge_calibration is not None:
                keep = detections["scores"] > self.merge_calibration.threshold_for(detections["labels"])
            else:
                keep = detections["scores"] > self.hparams.merge_score
            if labelled[i].numel() and keep.any():
                keep &= box_iou(detections["boxes"], labelled[i].to(detections["boxes"])).max(dim=1).values \
                    < self.hparams.merge_iou
            out[i] = (detections["boxes"][keep].detach(), detections["labels"][keep].long())
        return out

    def _teacher_pass(self, images: list[Tensor], complete: list[bool]):
        """``(detections, candidates)`` of the teacher on the incomplete images from one network pass, when
        both are needed and the detector offers ``detect_with_candidates``; else ``(None, None)`` (each is
        then computed on its own)."""
        todo = [images[i] for i, done in enumerate(complete) if not done]
        one_pass = getattr(self.teacher.model, "detect_with_candidates", None) if self.teacher is not None else None
        if not todo or not self.hparams.mining or one_pass is None:
            return None, None
        return one_pass(todo)

    def _detector_losses(self, images: list[Tensor], strong: Optional[list[Tensor]], boxes: list[Tensor],
                         labels: list[Tensor], complete: list[bool]) -> dict[str, Tensor]:
        """Weak-view loss with mined ignores (+ pseudo-boxes) and, when active, the strong-view loss."""
        active = (not self.hparams.baseline and self.global_step >= self.hparams.burn_in_steps
                  and not all(complete))
        pseudo = [(_empty_boxes(b), labels[i][:0]) for i, b in enumerate(boxes)]
        ignore = [_empty_boxes(b) for b in boxes]
        if active:
            detected, candidates = self._teacher_pass(images, complete)
            pseudo = self.teacher_pseudo_boxes(images, boxes, complete, labels, detected)
            if self.hparams.mining:
                ignore = self.mine_ignore_boxes(images, [torch.cat([b, p]) for b, (p, _) in zip(boxes, pseudo)],
                                                complete, human=boxes, candidates=candidates)
        merged = [{"boxes": torch.cat([b, p]), "labels": torch.cat([lab, pl]), "ignore_boxes": ig}
                  for b, lab, (p, pl), ig in zip(boxes, labels, pseudo, ignore)]
        two_views = active and strong is not None and self.hparams.consistency_weight > 0
        weak_targets = merged
        if two_views:  # pseudo-boxes train the strong view; on the weak view they are only not background
            weak_targets = [{"boxes": b, "labels": lab, "ignore_boxes": torch.cat([ig, p])}
                            for b, lab, (p, _), ig in zip(boxes, labels, pseudo, ignore)]
        losses = {f"det_{k}": v for k, v in self.model(images, weak_targets).items()}
        self.last_ignored_negatives = int(getattr(self.model, "last_ignored_negatives", 0))
        if two_views:
            strong_losses = self.model(strong, merged)
            losses["consistency"] = self.hparams.consistency_weight * sum(strong_losses.values())
        self.last_mined = sum(len(ig) for ig in ignore)
        self.last_pseudo = sum(len(p) for p, _ in pseudo)
        return losses

    # ------------------------------------------------------------------ training
    def _boxes_from_points(self, batch: dict, losses: dict) -> tuple[Optional[list[Tensor]], list[Tensor]]:
        """Point mode: MIL losses into ``losses``; the boxes and labels the detector trains on (boxes None
        during burn-in)."""
        images, points, point_labels = batch["image"], batch["points"], batch["point_labels"]
        if self.points is None:
            boxes = prior_boxes(points, point_labels, self.hparams.class_mean_wh)
        else:
            losses.update(self.points.losses(self.model, images, points, point_labels))
            if self.global_step < self.hparams.point_burn_in_steps:
                return None, point_labels
            boxes = self.points.pseudo_boxes(self.model, images, points, point_labels)
        kept = [_usable(_clip(b, img)) for b, img in zip(boxes, images)]
        return [_clip(b, img)[k] for b, img, k in zip(boxes, images, kept)], \
            [lab[k] for lab, k in zip(point_labels, kept)]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images = batch["image"]
        losses: dict[str, Tensor] = {}
        boxes, labels, complete = batch["boxes"], batch["labels"], list(batch["complete"])
        if self.hparams.mode == "points":
            (boxes, labels), complete = self._boxes_from_points(batch, losses), [False] * len(images)
        if boxes is not None:
            losses.update(self._detector_losses(images, batch.get("image_strong"), boxes, labels, complete))
        loss = sum(losses.values())
        size = len(images)
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value, batch_size=size)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({"train/mined": float(self.last_mined), "train/pseudo_boxes": float(self.last_pseudo),
                       "train/ignored_negatives": float(self.last_ignored_negatives)}, batch_size=size)
        if self.merge_calibration is not None:
            self.log_dict({"train/merge_threshold": self.merge_calibration.thresholds().mean(),
                           "train/mining_threshold": self.mining_threshold(),
                           "train/teacher_recall": self.merge_calibration.recall}, batch_size=size)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # the teacher follows here, not in on_train_batch_end: a checkpoint every N steps is written in
        # the callbacks' on_train_batch_end, which runs first and would miss this step's update
        if self.teacher is not None:
            self.teacher.update(self.model, self.global_step + 1)  # global_step counts this step after the hook

    # ------------------------------------------------------------------ inference
    def detect(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per image ``dict(boxes (D, 4), scores (D,), labels (D,))`` from the student (or the teacher)."""
        use_teacher = self.hparams.eval_with_teacher and self.teacher is not None
        net = self.teacher.model if use_teacher else self.model
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                return net(list(images))
        finally:
            net.train(was_training)

    @staticmethod
    def _full_targets(batch: dict) -> list[dict[str, Tensor]]:
        return [{"boxes": b.cpu(), "labels": lab.cpu()} for b, lab in zip(batch["boxes"], batch["labels"])]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        predictions = [{k: v.cpu() for k, v in p.items()} for p in self.detect(batch["image"])]
        self.val_map.update(predictions, self._full_targets(batch))
        if self.hparams.mode == "points":
            self.point_iou.append(self.point_box_iou(batch))

    def point_box_iou(self, batch: dict) -> Tensor:
        """``(2,)`` summed IoU of the point boxes with the true boxes, and the box count.

        Points are the true boxes' centres (BoxToPoint ``where=center``); the boxes come from MIL or,
        with ``point_boxes: mean_size``, from the class prior.
        """
        centres = [(b[:, :2] + b[:, 2:]) / 2 for b in batch["boxes"]]
        if self.points is None:
            boxes = prior_boxes(centres, batch["labels"], self.hparams.class_mean_wh)
        else:
            boxes = self.points.pseudo_boxes(self.model, batch["image"], centres, batch["labels"])
        ious = torch.cat([matched_box_iou(_clip(p, img), t) for p, img, t in
                          zip(boxes, batch["image"], batch["boxes"])])
        return torch.stack([ious.sum().cpu(), torch.tensor(float(ious.numel()))])

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.log("val/map", result["map"], prog_bar=True)
        self.log("val/map_50", result["map_50"])
        self.val_map.reset()
        if self.point_iou:
            total = torch.stack(self.point_iou).sum(dim=0)
            self.log("val/point_box_iou", total[0] / total[1].clamp_min(1))
            self.point_iou.clear()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        predictions = [{k: v.cpu() for k, v in p.items()} for p in self.detect(batch["image"])]
        self.test_map.update(predictions, self._full_targets(batch))

    def on_test_epoch_end(self) -> None:
        result = self.test_map.compute()
        self.log_dict({"test/map": result["map"], "test/map_50": result["map_50"], "test/map_75": result["map_75"]})
        per_class = result["map_per_class"].reshape(-1)
        classes = result["classes"].reshape(-1)
        if per_class.numel() == classes.numel():
            for class_id, value in zip(classes.tolist(), per_class):
                if 0 <= class_id < len(self.class_names):
                    self.log(f"test/ap/{self.class_names[class_id]}", value)
        self.test_map.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``{"image_id": [B], "boxes": [(D, 4)] in ORIGINAL image pixels, "scores": [(D,)], "labels": [(D,)]}``."""
        predictions = self.detect(batch["image"])
        return {"image_id": list(batch["image_id"]),
                "boxes": [p["boxes"].cpu() / s.cpu().repeat(2) for p, s in zip(predictions, batch["scale"])],
                "scores": [p["scores"].cpu() for p in predictions],
                "labels": [p["labels"].cpu() for p in predictions]}

    def configure_callbacks(self):
        """``predict`` writes a COCO results JSON (see ``prediction_dir``)."""
        if not self.hparams.write_predictions:
            return []
        from datamodules.detection import CocoResultsWriter

        folder = self.hparams.prediction_dir or str(Path(self.trainer.default_root_dir) / "predictions")
        return [CocoResultsWriter(folder, self.hparams.overwrite_predictions)]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]  # the teacher's never do
        if self.hparams.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=self.hparams.lr, momentum=self.hparams.momentum,
                                        weight_decay=self.hparams.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = warmup_cosine(optimizer, self.trainer.estimated_stepping_batches, self.hparams.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _clip(boxes: Tensor, image: Tensor) -> Tensor:
    """``boxes (K, 4)`` clipped to ``image (3, H, W)``."""
    return clip_boxes_to_image(boxes, tuple(image.shape[-2:]))


def _usable(boxes: Tensor) -> Tensor:
    """``(K',)`` indices of the boxes at least a pixel wide and high (the detector rejects empty ones)."""
    return remove_small_boxes(boxes, 1.0)
