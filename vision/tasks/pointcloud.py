"""3D point-cloud semantic segmentation from sparse labels (SQN-style), as a LightningModule.

SQN (Hu et al., ECCV 2022): a RandLA-Net encoder and a point-query head trained only at the labelled
points. This task wires that model to the sparse-label engine, each piece switchable from YAML:

* partial cross-entropy on the weak labels (``vision.losses.PartialCrossEntropy``);
* an EMA teacher (``vision.engine.EMATeacher``) whose confident predictions on one augmented view are
  pseudo-labels for the student on the other view (``PseudoLabelLoss``, fixed or FreeMatch thresholds);
* consistency between the two views (``ConsistencyLoss``);
* a prototype contrastive loss on the query features (``PrototypeContrastiveLoss``);
* offline self-training rounds (``sparsevision selftrain``) via :meth:`predict_step`.

Batches come from :class:`datamodules.pointcloud.PointCloudDataModule`: training crops with two views
sharing one neighbour pyramid; whole scenes for validation / test / predict, which are labelled crop
by crop (coverage voting) and scored on every original point against the full labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import torch
from torch import nn

from datamodules.pointcloud_crops import PreparedScene, predict_scene, view_batch
from vision.engine.ema_teacher import EMATeacher
from vision.engine.schedules import rampup, warmup_cosine
from vision.labels.types import IGNORE_INDEX
from vision.losses.consistency import ConsistencyLoss
from vision.losses.partial_cross_entropy import PartialCrossEntropy, class_weights_from_counts
from vision.losses.prototype_contrastive import PrototypeContrastiveLoss
from vision.losses.pseudo_label import PseudoLabelLoss
from vision.metrics.segmentation import SegmentationScores


class PointCloudSegmentation(L.LightningModule):
    """SQN-style training on sparse point labels.

    Args:
        model: a point model with ``forward(batch, query_xyz) -> {"logits": (B, C, M), "features": (B, D, M)}``
            (e.g. :class:`vision.models.pointcloud.SQN`).
        num_classes: ``C``.
        class_names: names for per-class metric keys (``test/iou/<class>``).
        lr, weight_decay: AdamW; the learning rate follows a cosine schedule over the whole run.
        class_weighting: ``none``, ``inverse`` or ``inverse_sqrt`` frequency of the training targets.
        pseudo_label_weight: weight of the teacher's pseudo-labels (0 disables the teacher).
        pseudo_threshold: fixed confidence threshold (``adaptive_threshold`` uses FreeMatch's instead).
        consistency_weight: weight of the two-view consistency loss.
        contrastive_weight: weight of the prototype contrastive loss on query features.
        ema_decay: the teacher's EMA decay.
        rampup_steps: steps over which the unsupervised weights ramp up from 0 (counted after burn-in).
        burn_in_steps: steps of partial cross-entropy alone before the engine's unsupervised losses start
            (Unbiased Teacher's burn-in, Liu et al., ICLR 2021): the second view and the teacher are not
            even run, so these steps cost what a fully supervised step costs, and the teacher (still
            EMA-updated) is not asked for pseudo-labels before it has learnt anything.
        query_points: points per training crop at which the head is queried and the losses are taken
            (None = every point). SQN trains its head at the labelled points only; here the labelled
            points of a crop come first and random unlabelled ones fill up to ``query_points`` for the
            engine's losses (under full labels: a random subset of the labelled points). The encoder
            still sees every point. The model must accept ``query_index`` (:class:`~vision.models.
            pointcloud.SQN` does).
        eval_with_teacher: evaluate and predict with the EMA teacher (when there is one).
        eval_batch_size: crops per forward pass at inference.
        write_predictions: ``predict`` writes ``<prediction_dir>/<scene id>.pred.<ext>`` in the input's
            format (LAS classification, PLY property, NPY).
        prediction_dir: where; default ``<run dir>/predictions``.
        overwrite_predictions: replace existing prediction files.
    """

    def __init__(self, model: nn.Module, num_classes: int, class_names: Optional[list[str]] = None,
                 lr: float = 0.01, weight_decay: float = 1e-4, class_weighting: str = "inverse_sqrt",
                 pseudo_label_weight: float = 1.0, pseudo_threshold: float = 0.9, adaptive_threshold: bool = False,
                 consistency_weight: float = 1.0, contrastive_weight: float = 0.1, ema_decay: float = 0.99,
                 rampup_steps: int = 200, burn_in_steps: int = 0, query_points: Optional[int] = None,
                 eval_with_teacher: bool = True,
                 eval_batch_size: int = 4,
                 write_predictions: bool = True, prediction_dir: Optional[str] = None,
                 overwrite_predictions: bool = False) -> None:
        super().__init__()
        if query_points is not None and query_points < 1:
            raise ValueError(f"query_points must be >= 1 or None, got {query_points}")
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.teacher = EMATeacher(model, decay=ema_decay) if pseudo_label_weight > 0 else None
        self.partial_ce = PartialCrossEntropy()
        self.pseudo_label = PseudoLabelLoss(threshold=pseudo_threshold, adaptive=adaptive_threshold,
                                            num_classes=num_classes)
        self.consistency = ConsistencyLoss("kl")
        self.contrastive: Optional[PrototypeContrastiveLoss] = None
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.val_scores = SegmentationScores(num_classes, self.class_names)
        self.test_scores = SegmentationScores(num_classes, self.class_names)

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        counts = torch.zeros(self.hparams.num_classes)
        for scene in self.trainer.datamodule.scenes("train"):
            labelled = torch.as_tensor(scene.target[scene.target != IGNORE_INDEX])
            counts += torch.bincount(labelled, minlength=self.hparams.num_classes).float()
        weights = class_weights_from_counts(counts, mode=self.hparams.class_weighting)
        self.partial_ce.class_weights = weights.to(self.device)

    def _forward(self, net: nn.Module, batch: dict, view: int, query_index: Optional[torch.Tensor] = None) -> dict:
        inputs = view_batch(batch, view)
        if query_index is not None:
            return net(inputs, query_index=query_index)
        return net(inputs, inputs["xyz"][0])

    def query_index(self, target: torch.Tensor) -> Optional[torch.Tensor]:
        """``(B, M)`` crop points the head is trained at: labelled first, then random unlabelled ones.

        ``target: (B, N)`` with IGNORE_INDEX for unlabelled; ``M = min(query_points, N)``. None when
        ``query_points`` is None (every point). Draws from torch's seeded generator.
        """
        if self.hparams.query_points is None:
            return None
        count = min(int(self.hparams.query_points), target.shape[1])
        # uniform keys in [0, 1), +1 for labelled points: top-k takes every labelled point first
        keys = torch.rand(target.shape, device=target.device) + (target != IGNORE_INDEX).float()
        return keys.topk(count, dim=1).indices

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        query = self.query_index(batch["target"])
        target = batch["target"] if query is None else batch["target"].gather(1, query)
        student = self._forward(self.model, batch, 0, query)
        losses = {"ce": self.partial_ce(student["logits"], target)}
        weight = rampup(self.global_step - self.hparams.burn_in_steps, self.hparams.rampup_steps)
        burning_in = self.global_step < self.hparams.burn_in_steps
        two_views = "view1_features" in batch and not burning_in
        if two_views and (self.teacher is not None or self.hparams.consistency_weight > 0):
            other = self._forward(self.model, batch, 1, query)
            if self.hparams.consistency_weight > 0:
                losses["consistency"] = self.hparams.consistency_weight * weight * self.consistency(
                    other["logits"], student["logits"])
            if self.teacher is not None:
                teacher_logits = self._forward(self.teacher, batch, 0, query)["logits"]
                losses["pseudo"] = self.hparams.pseudo_label_weight * weight * self.pseudo_label(
                    other["logits"], teacher_logits, valid=target == IGNORE_INDEX)
                self.log("train/pseudo_mask_ratio", self.pseudo_label.last_mask_ratio, batch_size=target.shape[0])
        if self.hparams.contrastive_weight > 0 and not burning_in:
            losses["contrastive"] = self.hparams.contrastive_weight * weight * self._contrastive(student, target)
        loss = sum(losses.values())
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value, batch_size=target.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=target.shape[0])
        return loss

    def _contrastive(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        features = out["features"]
        if self.contrastive is None:  # feature size is only known after the first forward
            self.contrastive = PrototypeContrastiveLoss(self.hparams.num_classes, features.shape[1]).to(self.device)
        probs = out["logits"].detach().softmax(1)
        confidence, predicted = probs.max(1)
        # human labels with confidence 1, confident predictions elsewhere
        labels = torch.where(target != IGNORE_INDEX, target, predicted)
        confidence = torch.where(target != IGNORE_INDEX, torch.ones_like(confidence), confidence)
        loss = self.contrastive(features, labels, confidence)
        self.contrastive.update(features, labels, confidence)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # the teacher follows here, not in on_train_batch_end: a checkpoint every N steps is written in
        # the callbacks' on_train_batch_end, which runs first and would miss this step's update
        if self.teacher is not None:
            self.teacher.update(self.model, self.global_step + 1)  # global_step counts this step after the hook

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["contrastive_feature_dim"] = None if self.contrastive is None else self.contrastive.feature_dim

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        dim = checkpoint.get("contrastive_feature_dim")
        if dim is not None and self.contrastive is None:  # rebuild the memory queue so its state loads
            self.contrastive = PrototypeContrastiveLoss(self.hparams.num_classes, dim).to(self.device)

    # ------------------------------------------------------------------ inference
    def _inference_net(self) -> nn.Module:
        if self.hparams.eval_with_teacher and self.teacher is not None:
            return self.teacher.model
        return self.model

    def scene_probabilities(self, scene: PreparedScene) -> torch.Tensor:
        """``(N, C)`` class probabilities of every ORIGINAL point of a scene."""
        net = self._inference_net()
        options = self.trainer.datamodule.inference_options()
        probs = predict_scene(lambda inputs: net(inputs, inputs["xyz"][0])["logits"], scene,
                              self.hparams.num_classes, batch_size=self.hparams.eval_batch_size,
                              device=self.device, **options)
        return probs[torch.as_tensor(scene.inverse)]

    def _score(self, scene: PreparedScene, scores: SegmentationScores) -> None:
        if scene.full_labels is None:
            return
        predicted = self.scene_probabilities(scene).argmax(1)
        scores.update(predicted.to(self.device), torch.as_tensor(scene.full_labels, device=self.device))

    def validation_step(self, scene: PreparedScene, batch_idx: int) -> None:
        self._score(scene, self.val_scores)

    def on_validation_epoch_end(self) -> None:
        self.val_scores.log_to(self, "val")

    def test_step(self, scene: PreparedScene, batch_idx: int) -> None:
        self._score(scene, self.test_scores)

    def on_test_epoch_end(self) -> None:
        self.test_scores.log_to(self, "test")

    def predict_step(self, scene: PreparedScene, batch_idx: int) -> dict:
        """``{"sample_id": [id], "label": [(N,)], "confidence": [(N,)]}`` on original points."""
        confidence, label = self.scene_probabilities(scene).max(1)
        return {"sample_id": [scene.scene_id], "label": [label], "confidence": [confidence],
                "source_path": [scene.source_path]}

    def configure_callbacks(self):
        """``predict`` writes labels back into each scene's own format (see ``prediction_dir``)."""
        if not self.hparams.write_predictions:
            return []
        from datamodules.pointcloud_predictions import PointCloudPredictionWriter

        folder = self.hparams.prediction_dir or str(Path(self.trainer.default_root_dir) / "predictions")
        options = getattr(getattr(self.trainer, "datamodule", None), "hparams", {}).get("reader_options")
        return [PointCloudPredictionWriter(folder, options, self.hparams.overwrite_predictions)]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        scheduler = warmup_cosine(optimizer, self.trainer.estimated_stepping_batches, floor=0.02)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
