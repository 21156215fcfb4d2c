"""Event-camera semantic segmentation from point labels (EV-WSSS), as a LightningModule.

EV-WSSS (Cho et al., "Finding Meaning in Points: Weakly Supervised Semantic Segmentation for Event
Cameras", ECCV 2024) trains two students on two views of each labelled instant: student A on the
events just before the label time (``voxel``), student B on a longer stream after it, played
backwards (``voxel_reversed``; see :mod:`datamodules.events`). Every piece is switchable from YAML,
so the paper's ablations are config overrides:

* point cross-entropy on the weak labels, for both students (``point_ce_weight``);
* cross pseudo-labels: each student learns the other's predictions with confidence > 0.5, restricted
  to the classes present in the frame's points (:meth:`DualStudent.cross_pseudo_labels`);
* a prototype contrastive loss per student: per-class queues of confident features, InfoNCE to the
  class prototypes (:class:`PrototypeContrastiveLoss`, queue 200, confidence > 0.7, T = 0.1);
* prototype exchange: each student's features, mapped by a :class:`ProjectionHead`, are contrasted
  against the *other* student's prototypes;
* feature distillation between the students (:meth:`DualStudent.feature_distillation`);
* ``dual_student=False``: one student, point CE (+ contrastive on its own predictions) only;
* ``burn_in_steps``: the first steps train the point CE only (the other terms are not even computed,
  their weight would be ~0 anyway), and the ramp-up of the unsupervised weights starts after them.

Evaluation and prediction use student A: at test time only past events exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor, nn

from datamodules.formats.dsec import write_label_png
from vision.atomic import OutputExistsError
from vision.engine.dual_student import DualStudent, reinitialised_copy
from vision.engine.schedules import rampup, warmup_cosine
from vision.labels.types import IGNORE_INDEX
from vision.losses.partial_cross_entropy import (
    CLASS_WEIGHTING_MODES,
    PartialCrossEntropy,
    class_weights_from_counts,
)
from vision.losses.prototype_contrastive import PrototypeContrastiveLoss
from vision.metrics.segmentation import SegmentationScores
from vision.models.events.heads import ProjectionHead
from vision.tasks.events_losses import (
    class_balanced_sample,
    contrastive_labels,
    restricted_prediction,
)


class EventSegmentation(L.LightningModule):
    """EV-WSSS training of an event segmentation model from point labels (module docstring).

    Args:
        model: student A, ``forward(voxel (B, T, H, W)) -> {"logits": (B, C, H, W), "features": (B, D, H, W)}``
            with attribute ``feature_dim = D`` (e.g. :class:`vision.models.events.unet.EventUNet`).
        num_classes: ``C``.
        class_names: names for per-class metric keys (``test/iou/<class>``).
        point_ce_weight: weight of the partial cross-entropy on the point labels.
        dual_student: train a second student (a copy of ``model`` re-initialised from ``student_b_seed``)
            on the reversed stream.
        cross_pseudo_weight, cross_pseudo_threshold: cross pseudo-labels between the students.
        contrastive_weight, queue_size, contrastive_confidence, temperature: prototype contrastive loss.
        contrastive_pixels: per batch, at most this many human-labelled pixels enter the contrastive loss,
            plus at most this many random confident others, which keeps its cost (and that of the exchange
            heads) small. Point labels (fewer human pixels than this) are all kept; dense labels are
            sampled class-balanced (:func:`class_balanced_sample`), so a rare class keeps all its pixels.
        prototype_exchange: contrast projected features against the other student's prototypes.
        projection_dim, projection_hidden: size of the projection heads (default ``D``).
        distillation_weight: feature distillation between the students.
        burn_in_steps: the first steps (``global_step < burn_in_steps``) train only the point CE of the
            student(s): cross pseudo-labels, contrastive, exchange and distillation are not computed and
            the prototype queues are not filled. 0 (default): no burn-in.
        rampup_steps: steps over which the unsupervised weights ramp up from 0, counted from the end of
            the burn-in: weight ``rampup(global_step - burn_in_steps, rampup_steps)``.
        lr, weight_decay: AdamW; cosine schedule over the run.
        class_weighting: per-class weights of the cross-entropy terms (point CE and cross pseudo-labels) from
            the labelled training pixels' class counts (:meth:`~datamodules.events.EventSegmentationDataModule.class_counts`):
            ``none`` (default), ``inverse`` or ``inverse_sqrt`` frequency (:func:`class_weights_from_counts`).
            Matters for dense labels, where road and sky outnumber poles and signs by orders of magnitude;
            1 point per class per frame is balanced by construction.
        write_predictions: ``predict`` writes PNG masks to ``<sequence>/<prediction_folder>/`` (refusing
            to replace an existing, non-empty folder unless ``overwrite_predictions``).
    """

    def __init__(self, model: nn.Module, num_classes: int, class_names: Optional[list[str]] = None,
                 point_ce_weight: float = 1.0, dual_student: bool = True, student_b_seed: int = 1,
                 cross_pseudo_weight: float = 1.0, cross_pseudo_threshold: float = 0.5,
                 contrastive_weight: float = 0.1, queue_size: int = 200, contrastive_confidence: float = 0.7,
                 temperature: float = 0.1, contrastive_pixels: int = 4096, prototype_exchange: bool = True,
                 projection_hidden: int = 128, distillation_weight: float = 0.1, burn_in_steps: int = 0,
                 rampup_steps: int = 200, lr: float = 2e-3, weight_decay: float = 1e-4,
                 class_weighting: str = "none", write_predictions: bool = True,
                 prediction_folder: str = "predictions", overwrite_predictions: bool = False) -> None:
        super().__init__()
        if burn_in_steps < 0:
            raise ValueError(f"burn_in_steps must be >= 0, got {burn_in_steps}")
        if class_weighting not in CLASS_WEIGHTING_MODES:
            raise ValueError(f"class_weighting must be one of {', '.join(CLASS_WEIGHTING_MODES)}, "
                             f"got {class_weighting!r}")
        self.save_hyperparameters(ignore=["model"])
        feature_dim = getattr(model, "feature_dim", None)
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"{type(model).__name__} needs an int attribute feature_dim (the D of its features)")
        self.model = model  # student A: the forward stream; evaluated and predicted with
        self.student_b = reinitialised_copy(model, student_b_seed) if dual_student else None
        self.point_ce = PartialCrossEntropy()
        n_students = 2 if dual_student else 1
        self.contrastive = nn.ModuleList(
            PrototypeContrastiveLoss(num_classes, feature_dim, queue_size, contrastive_confidence, temperature)
            for _ in range(n_students if contrastive_weight > 0 else 0))
        self.projection = nn.ModuleList()
        if dual_student and contrastive_weight > 0 and prototype_exchange:
            # into the other student's prototype space, i.e. its feature space (D)
            self.projection = nn.ModuleList(ProjectionHead(feature_dim, feature_dim, projection_hidden)
                                            for _ in range(2))
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.val_scores = SegmentationScores(num_classes, self.class_names)
        self.test_scores = SegmentationScores(num_classes, self.class_names)

    # ------------------------------------------------------------------ training
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        data_classes = getattr(datamodule, "num_classes", self.hparams.num_classes)
        if data_classes != self.hparams.num_classes:
            raise ValueError(f"the data has {data_classes} classes but the task was built for "
                             f"{self.hparams.num_classes} (model.init_args.num_classes)")

    def on_fit_start(self) -> None:
        if self.hparams.class_weighting == "none":
            return
        class_counts = getattr(self.trainer.datamodule, "class_counts", None)
        if class_counts is None:
            raise ValueError(f"class_weighting={self.hparams.class_weighting!r} needs a datamodule with "
                             "class_counts() (e.g. EventSegmentationDataModule)")
        weights = class_weights_from_counts(class_counts(), mode=self.hparams.class_weighting)
        self.point_ce.class_weights = weights.to(self.device)

    def forward(self, voxel: Tensor) -> dict[str, Tensor]:
        """Student A: ``voxel (B, T, H, W)`` -> ``{"logits": (B, C, H, W), "features": (B, D, H, W)}``."""
        return self.model(voxel)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        hp = self.hparams
        target, present = batch["target"], batch["present"]
        outs = [self.model(batch["voxel"])]
        if self.student_b is not None:
            outs.append(self.student_b(batch["voxel_reversed"]))
        losses = {"ce": hp.point_ce_weight * sum(self.point_ce(out["logits"], target) for out in outs)}
        if self.global_step >= hp.burn_in_steps:
            weight = rampup(self.global_step - hp.burn_in_steps, hp.rampup_steps)
            losses.update(self._unsupervised_losses(outs, target, present, weight))
        loss = sum(losses.values())
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value, batch_size=len(target))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def _unsupervised_losses(self, outs: list[dict], target: Tensor, present: Tensor, weight: float) -> dict:
        """Cross pseudo-label, distillation, contrastive and exchange terms, each already times ``weight``."""
        hp, losses = self.hparams, {}
        if len(outs) == 2:
            if hp.cross_pseudo_weight > 0:
                pseudo = DualStudent.cross_pseudo_labels(outs[0]["logits"], outs[1]["logits"],
                                                         hp.cross_pseudo_threshold, present)
                losses["cross_pseudo"] = hp.cross_pseudo_weight * weight * sum(
                    self.point_ce(out["logits"], torch.where(target != IGNORE_INDEX, IGNORE_INDEX, labels))
                    for out, labels in zip(outs, pseudo))
                self.log("train/pseudo_ratio", (pseudo[0] != IGNORE_INDEX).float().mean(), batch_size=len(target))
            if hp.distillation_weight > 0:
                losses["distillation"] = hp.distillation_weight * weight * DualStudent.feature_distillation(
                    outs[0]["features"], outs[1]["features"])
        if len(self.contrastive):
            losses.update(self._contrastive_losses(outs, target, present, hp.contrastive_weight * weight))
        return losses

    def _contrastive_losses(self, outs: list[dict], target: Tensor, present: Tensor, weight: float) -> dict:
        """Prototype contrastive loss per student (+ exchange), then the queues take this batch's features.

        A student's pixels are labelled by the human points, else by the other student's prediction
        restricted to the present classes (its own prediction when it is alone).
        """
        predictions = [restricted_prediction(out["logits"], present) for out in outs]
        rows = []
        for i, out in enumerate(outs):
            confidence, predicted = predictions[(i + 1) % len(outs)]
            labels, confidence = contrastive_labels(target, confidence, predicted)
            rows.append(self._sample_pixels(out["features"], labels, confidence, target != IGNORE_INDEX))
        losses = {"contrastive": weight * sum(loss(*r) for loss, r in zip(self.contrastive, rows))}
        if len(self.projection):
            losses["exchange"] = weight * sum(self._exchange(i, *r) for i, r in enumerate(rows))
        for loss, (features, labels, confidence) in zip(self.contrastive, rows):
            loss.update(features, labels, confidence)
        return losses

    def _exchange(self, i: int, features: Tensor, labels: Tensor, confidence: Tensor) -> Tensor:
        """Student ``i``'s projected features ``(K, D)`` against the other student's prototypes."""
        if features.shape[0] < 2:  # the head's BatchNorm needs two rows; nothing to contrast anyway
            return features.sum() * 0.0
        projected = self.projection[i](features.T.unsqueeze(0)).squeeze(0).T  # (1, D, K) per pixel
        return self.contrastive[i](projected, labels, confidence,
                                   prototypes_override=self.contrastive[1 - i].prototypes())

    def _sample_pixels(self, features: Tensor, labels: Tensor, confidence: Tensor,
                       human: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rows ``(K, D)``, ``(K,)``, ``(K,)`` from ``features (B, D, H, W)`` and ``(B, H, W)`` maps: a
        class-balanced sample of at most ``contrastive_pixels`` ``human``-labelled pixels (all of them when
        there are no more) plus at most ``contrastive_pixels`` random confident others."""
        rows = features.movedim(1, -1).reshape(-1, features.shape[1])
        labels, confidence, human = labels.reshape(-1), confidence.reshape(-1), human.reshape(-1)
        humans = torch.nonzero(human).squeeze(1)
        keep = torch.zeros_like(human)
        keep[humans[class_balanced_sample(labels[humans], self.hparams.contrastive_pixels)]] = True
        others = torch.nonzero(~human & (confidence > self.hparams.contrastive_confidence)).squeeze(1)
        if others.numel() > self.hparams.contrastive_pixels:
            others = others[torch.randperm(others.numel(), device=others.device)[: self.hparams.contrastive_pixels]]
        keep[others] = True
        return rows[keep], labels[keep], confidence[keep]

    # ------------------------------------------------------------------ evaluation and prediction
    def _score(self, batch: dict, scores: SegmentationScores) -> None:
        predicted = self.model(batch["voxel"])["logits"].argmax(1)
        scores.update(predicted, batch["labels"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._score(batch, self.val_scores)

    def on_validation_epoch_end(self) -> None:
        self.val_scores.log_to(self, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._score(batch, self.test_scores)

    def on_test_epoch_end(self) -> None:
        self.test_scores.log_to(self, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``{"sample_id": [B ids], "label": (B, H, W) int64, "confidence": (B, H, W) float}`` from student A."""
        confidence, label = self.model(batch["voxel"])["logits"].softmax(1).max(1)
        return {"sample_id": list(batch["sample_id"]), "label": label, "confidence": confidence}

    def configure_callbacks(self):
        """``predict`` writes PNG masks next to each recording (``<seq>/<prediction_folder>/``)."""
        if not self.hparams.write_predictions:
            return []
        return [EventPredictionWriter(self.hparams.prediction_folder, self.hparams.overwrite_predictions)]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = warmup_cosine(optimizer, self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EventPredictionWriter(BasePredictionWriter):
    """Write each predicted frame as a label PNG next to its recording: ``<seq>/<folder>/<label file name>``.

    Uses :func:`write_label_png` (8-bit class ids, the DSEC-Semantic format, written to a temporary
    file and renamed), so predictions read back like labels and a killed run leaves no half PNG. An existing, non-empty ``<seq>/<folder>`` is never overwritten unless
    ``overwrite=True``: pick a fresh ``folder`` instead. The data module must provide
    ``sequence_folder(sample_id)`` and ``label_path(sample_id)`` (:class:`EventSegmentationDataModule`).
    """

    def __init__(self, folder: str = "predictions", overwrite: bool = False) -> None:
        super().__init__("batch")
        if not folder or Path(folder).name != folder:
            raise ValueError(f"folder must be a plain folder name, got {folder!r}")
        self.folder, self.overwrite = folder, overwrite

    def output_path(self, datamodule, sample_id: str) -> Path:
        return datamodule.sequence_folder(sample_id) / self.folder / datamodule.label_path(sample_id).name

    def on_predict_start(self, trainer, pl_module) -> None:
        datamodule = trainer.datamodule
        split = getattr(datamodule, "hparams", {}).get("predict_split", "test")
        folders = {datamodule.sequence_folder(f.sample_id) / self.folder for f in datamodule.frames(split)}
        for folder in sorted(folders):
            if not self.overwrite and folder.is_dir() and any(folder.iterdir()):
                raise OutputExistsError(folder, "prediction folder exists and is not empty; choose another "
                                                "prediction_folder or pass overwrite_predictions=true")
        trainer.strategy.barrier("EventPredictionWriter.check")  # no rank writes before every rank checked
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(self, trainer, pl_module, prediction: dict, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int) -> None:
        for sample_id, label in zip(prediction["sample_id"], prediction["label"]):
            write_label_png(self.output_path(trainer.datamodule, sample_id), label.cpu().numpy())
