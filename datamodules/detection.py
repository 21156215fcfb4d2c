"""LightningDataModule for 2D detection with missing boxes or single-point labels.

Data flow (ARCHITECTURE.md): COCO JSON / VOC XML / YOLO txt -> :class:`DetectionDataset` -> weak labels
of the training split (``DropBoxes``, ``KeepBoxes``: boxes with ``complete=False``; ``BoxToPoint``: one
point per object; drawn once and cached by :func:`resolve_weak_labels`, or read from a weak-label
file) -> resized images with a weak and a strong view (:mod:`datamodules.transforms.detection_augment`)
-> the task. Validation, test and predict items carry the FULL boxes, never the weak ones.

Without ``data_root`` the synthetic scenes (:func:`ensure_detection_dataset`) are generated on first use
(rank 0, ``prepare_data``) and read back through the COCO reader like any user data.

Batches are dicts of per-image lists (torchvision detectors take lists of images of any size)::

    image: [(3, H, W) float 0-1]      image_strong: [(3, H, W)] (training only)
    boxes: [(K, 4) xyxy px]           labels: [(K,) int64 0..C-1]
    points: [(P, 2) xy px]            point_labels: [(P,) int64]
    complete: [bool]                  image_id: [str]
    scale: [(2,) sx, sy]              (resized / original size; predictions are divided by it)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Literal, Optional, Union

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules.bad_samples import BadSamples, OnBadSample
from datamodules.distributed import evaluation_sampler
from datamodules.formats.coco import coco_id_maps, read_coco, write_coco_results
from datamodules.formats.detection_common import (
    IMAGE_ERRORS,
    DetectionDataset,
    ImageRecord,
    check_image_file,
    refuse_any_existing,
)
from datamodules.formats.voc import read_voc
from datamodules.formats.yolo import read_yolo
from datamodules.sampling import EpochSampler, ResumableDataLoader
from datamodules.transforms.detection_augment import DetectionAugment, DetectionViews
from vision.errors import DataError
from vision.labels.protocols import WeakLabelProtocol
from vision.labels.resolve import resolve_weak_labels
from vision.labels.seeding import sample_rng
from vision.labels.types import BoxLabels, PointLabels

SPLITS = ("train", "val", "test")
ImageSize = Union[int, tuple[int, int], None]


def load_image(path: Path, image_size: ImageSize) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 RGB resized as ``image_size`` says, and the ``(sx, sy)`` scale applied.

    ``image_size``: None keeps the size; an int resizes the shorter side to it; ``(H, W)`` resizes to it.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except IMAGE_ERRORS as error:
        raise DataError(path, f"cannot read the image ({error})") from error
    width, height = image.size
    if image_size is None:
        size = (width, height)
    elif isinstance(image_size, int):
        factor = image_size / min(width, height)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
    else:
        size = (int(image_size[1]), int(image_size[0]))
    if size != (width, height):
        image = image.resize(size, Image.BILINEAR)
    return np.asarray(image), np.array([size[0] / width, size[1] / height], np.float32)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)


class DetectionImages(Dataset):
    """Images of one split with their targets (see the module docstring for the item layout).

    Args:
        dataset: the split as read.
        targets: per image id, the training targets (weak labels), or None to use the file's labels.
        image_size: resize rule of :func:`load_image`.
        views: weak/strong view maker for training; None for evaluation (no augmentation).
        seed: augmentation seed; training indices are global ``epoch * N + i``.
        strong: also make the strong view (``image_strong``) of training items.
    """

    def __init__(self, dataset: DetectionDataset, targets: Optional[dict] = None, image_size: ImageSize = None,
                 views: Optional[DetectionViews] = None, seed: int = 0, strong: bool = True) -> None:
        self.dataset, self.targets, self.image_size = dataset, targets, image_size
        self.views, self.seed, self.strong = views, int(seed), bool(strong)

    def __len__(self) -> int:
        return len(self.dataset.images)

    def labels_of(self, record: ImageRecord) -> tuple[BoxLabels, Optional[PointLabels]]:
        """The boxes (with their ``complete`` flag) and points this item trains or scores on."""
        if self.targets is None:
            return record.boxes, record.points
        weak = self.targets.get(record.image_id)
        if weak is None:
            raise DataError(record.image_id, "no weak labels for this training image")
        if isinstance(weak, PointLabels):
            return BoxLabels(np.zeros((0, 4), np.float32), np.zeros(0, np.int32), complete=False), weak
        return weak, None

    def __getitem__(self, index: int) -> dict:
        epoch, i = divmod(int(index), len(self))
        record = self.dataset.images[i]
        image, scale = load_image(self.dataset.image_path(record), self.image_size)
        boxes, points = self.labels_of(record)
        xy = points.xy if points is not None else np.zeros((0, 2), np.float32)
        point_ids = points.class_id if points is not None else np.zeros(0, np.int32)
        item = {"image": image, "image_strong": None, "boxes": boxes.boxes * np.tile(scale, 2),
                "labels": boxes.class_id.astype(np.int64), "points": xy * scale,
                "point_labels": point_ids.astype(np.int64)}
        if self.views is not None:
            seed = int(sample_rng(self.seed, f"augment-{epoch}-{record.image_id}").integers(2 ** 31 - 1))
            item = self.views(item["image"], item["boxes"], item["labels"], item["points"], item["point_labels"], seed,
                              strong=self.strong)
        return {"image_id": record.image_id, "image": _to_tensor(item["image"]),
                "image_strong": None if item["image_strong"] is None else _to_tensor(item["image_strong"]),
                "boxes": torch.as_tensor(item["boxes"], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.as_tensor(item["labels"], dtype=torch.int64),
                "points": torch.as_tensor(item["points"], dtype=torch.float32).reshape(-1, 2),
                "point_labels": torch.as_tensor(item["point_labels"], dtype=torch.int64),
                "complete": bool(boxes.complete), "scale": torch.as_tensor(scale)}


def collate_detection(items: list[dict]) -> dict:
    """Per-key lists (``image_strong`` dropped when no item has one)."""
    batch = {key: [item[key] for item in items] for key in items[0]}
    if all(strong is None for strong in batch["image_strong"]):
        del batch["image_strong"]
    return batch


class DetectionDataModule(L.LightningDataModule):
    """Detection images with full, missing-box or point labels (SparseDet / point-supervised settings).

    Args:
        data_root: dataset folder; None uses the built-in synthetic scenes.
        format: ``coco`` (``splits`` = annotation files relative to ``data_root``, default
            ``annotations/<split>.json``), ``voc`` (``ImageSets/Main/<name>.txt`` names, default the
            split name) or ``yolo`` (``images/<name>`` subfolders, default the split name).
        splits: per split (``train``, ``val``, ``test``), the file or split name above.
        synthetic: options of :func:`ensure_detection_dataset` (``num_train``, ``num_val``, ``num_test``,
            ``height``, ``width``).
        synthetic_seed: seed of the generated scenes.
        class_names: the classes in class-id order (default: the reader's, e.g. VOC's sorted names).
        image_size: None keeps images as they are; an int resizes the shorter side; ``[H, W]`` resizes.
        augment: settings of the training views (default :class:`DetectionAugment`).
        weak_labels: protocol drawing the training labels once: ``DropBoxes``, ``KeepBoxes``,
            ``BoxToPoint`` or ``Full``; None = the file's labels.
        weak_label_seed: seed of that protocol.
        weak_label_file: use this weak-label file instead of a protocol.
        strong_view: also make the strong (photometric) view of each training image.
        batch_size: images per training batch (evaluation uses the same).
        num_workers: dataloader worker processes.
        seed: seed of the shuffling order and augmentations.
        predict_split: split read by ``predict`` (``train`` for self-training rounds).
        on_bad_sample: ``raise`` (default) stops at the first bad image; ``skip`` decodes every image when
            a split is first read, drops images whose file (or VOC XML / YOLO label file) raises DataError,
            logs them and counts them in :attr:`skipped_samples` (:mod:`datamodules.bad_samples`).
            Errors in a split's annotation file itself (COCO JSON, VOC split list) always raise.
    """

    def __init__(self, data_root: Optional[str] = None, format: Literal["coco", "voc", "yolo"] = "coco",
                 splits: Optional[dict[str, str]] = None, synthetic: Optional[dict] = None, synthetic_seed: int = 0,
                 class_names: Optional[list[str]] = None, image_size: Optional[Union[int, tuple[int, int]]] = None,
                 augment: Optional[DetectionAugment] = None, weak_labels: Optional[WeakLabelProtocol] = None,
                 weak_label_seed: int = 0, weak_label_file: Optional[str] = None, strong_view: bool = True,
                 batch_size: int = 4, num_workers: int = 0, seed: int = 0,
                 predict_split: Literal["train", "val", "test"] = "test",
                 on_bad_sample: OnBadSample = "raise") -> None:
        super().__init__()
        if format not in ("coco", "voc", "yolo"):
            raise DataError(str(data_root), f"unknown detection format {format!r}; expected coco, voc or yolo")
        self.save_hyperparameters(ignore=["augment", "weak_labels", "class_names"])
        self._class_names = list(class_names) if class_names else None
        self.augment = augment if augment is not None else DetectionAugment()
        self.weak_labels = weak_labels
        self._datasets: dict[str, DetectionDataset] = {}
        self.weak = None
        self.bad_samples = BadSamples(on_bad_sample, logging.getLogger(__name__))

    # ---------------------------------------------------------------- files
    def root(self) -> Path:
        if self.hparams.data_root is not None:
            return Path(self.hparams.data_root)
        from datamodules.synthetic.detection_scenes import ensure_detection_dataset

        return ensure_detection_dataset(seed=self.hparams.synthetic_seed, **(self.hparams.synthetic or {}))

    def prepare_data(self) -> None:
        """Rank 0: generate the synthetic scenes if needed and make the weak-label file once."""
        self.root()
        if self.weak_labels is not None or self.hparams.weak_label_file is not None:
            self.weak_label_set()

    def dataset(self, split: str) -> DetectionDataset:
        """The split as read by its format's reader (cached in memory)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if split not in self._datasets:
            self._datasets[split] = self._read(split)
        return self._datasets[split]

    def _read(self, split: str) -> DetectionDataset:
        root, fmt = self.root(), self.hparams.format
        name = (self.hparams.splits or {}).get(split)
        names = self._class_names
        skip = self.bad_samples.record if self.bad_samples.skipping else None
        if fmt == "coco":
            dataset = read_coco(root / (name or f"annotations/{split}.json"), on_bad_image=skip)
        elif fmt == "voc":
            dataset = read_voc(root, split=name or split, class_names=names, on_bad_image=skip)
        else:
            dataset = read_yolo(root, split=name or split, on_bad_image=skip)
        if names is not None and list(dataset.categories) != list(names):
            raise DataError(root, f"split {split!r} has classes {dataset.categories}, the config says {list(names)}")
        if skip is not None:  # decode every image now: a corrupt one is dropped before training starts
            usable = [record for record in dataset.images if self.bad_samples.attempt(partial(
                check_image_file, dataset.image_path(record), record.width, record.height, True)) is not None]
            dataset = dataclasses.replace(dataset, images=usable)
        return dataset

    @property
    def skipped_samples(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every image dropped under ``on_bad_sample=skip``."""
        return self.bad_samples.skipped

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names or self.dataset("train").categories)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---------------------------------------------------------------- labels
    def full_labels(self, split: str = "train") -> Iterator[tuple[str, BoxLabels]]:
        """``(image_id, full boxes)`` of a split, in file order (what weak labels are drawn from)."""
        for record in self.dataset(split).images:
            yield record.image_id, record.boxes

    def weak_label_set(self):
        """The training split's weak labels (made once, cached), or None for the file's own labels."""
        return resolve_weak_labels(lambda: self.full_labels("train"), "detection", self.weak_labels,
                                   self.hparams.weak_label_seed, self.hparams.weak_label_file)

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit") and self.weak is None:
            self.weak = self.weak_label_set()
        if self.bad_samples.skipping:  # read the stage's splits now, so skips are reported before a step
            splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                      "predict": (self.hparams.predict_split,)}.get(stage, SPLITS)
            for split in splits:
                self.dataset(split)
            self.bad_samples.report(self.trainer)

    def label_budget(self) -> dict:
        """Training labels: ``{"labelled", "total", "images", "boxes", "points", "full_boxes", "fraction"}``.

        ``labelled`` = boxes + points kept, ``total`` = boxes in the full labels (the keys every task reports).
        """
        train = self.dataset("train")
        if self.weak is None:
            self.weak = self.weak_label_set()
        full = train.num_boxes
        if self.weak is None:
            boxes, points = full, train.num_points
        else:
            boxes = sum(len(v) for v in self.weak.values() if isinstance(v, BoxLabels))
            points = sum(len(v) for v in self.weak.values() if isinstance(v, PointLabels))
        return {"labelled": boxes + points, "total": full, "images": len(train.images), "boxes": boxes,
                "points": points, "full_boxes": full,
                "fraction": (boxes + points) / max(full, 1)}

    def coco_ids(self, split: str) -> tuple[dict[str, int], list[int]]:
        """``({image_id: COCO image id}, [COCO category id])`` for a results file of ``split``."""
        return coco_id_maps(self.dataset(split))

    # ---------------------------------------------------------------- loaders
    def images(self, split: str, training: bool = False) -> DetectionImages:
        """The items of ``split``: augmented weak-label items for training, full-label items otherwise."""
        if not training:
            return DetectionImages(self.dataset(split), None, self.hparams.image_size)
        if self.weak is None:
            self.setup("fit")
        return DetectionImages(self.dataset(split), dict(self.weak) if self.weak is not None else None,
                               self.hparams.image_size, DetectionViews(self.augment), self.hparams.seed,
                               self.hparams.strong_view)

    def train_dataloader(self) -> DataLoader:
        images = self.images("train", training=True)
        return ResumableDataLoader(images, batch_size=self.hparams.batch_size,
                                   sampler=EpochSampler(len(images), self.hparams.seed), collate_fn=collate_detection,
                                   num_workers=self.hparams.num_workers,
                                   drop_last=len(images) >= self.hparams.batch_size,
                                   persistent_workers=self.hparams.num_workers > 0)

    def _loader(self, split: str) -> DataLoader:
        images = self.images(split)  # under DDP each rank scores its own images, no padded repeats
        return DataLoader(images, batch_size=self.hparams.batch_size, shuffle=False,
                          sampler=evaluation_sampler(images, self.trainer), collate_fn=collate_detection,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.predict_split)



class CocoResultsWriter(BasePredictionWriter):
    """Collect ``predict_step`` outputs and write ``output_dir/<split>.results.json`` (COCO results format).

    ``predict_step`` returns ``{"image_id": [B], "boxes": [(D, 4)] original pixels, "scores": [(D,)],
    "labels": [(D,)]}``; ids are mapped with the datamodule's :meth:`DetectionDataModule.coco_ids`, so the
    file scores against the split's COCO annotations. An existing file is never replaced unless
    ``overwrite`` (checked before predicting, so no time is lost). Single process: with several ranks,
    rank r writes ``<split>.results.rank<r>.json``.
    """

    def __init__(self, output_dir: str, overwrite: bool = False) -> None:
        super().__init__("batch")
        self.output_dir, self.overwrite = Path(output_dir), bool(overwrite)
        self._predictions: dict[str, dict] = {}

    def _path(self, trainer) -> Path:
        split = trainer.datamodule.hparams.predict_split
        suffix = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        return self.output_dir / f"{split}.results{suffix}.json"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "predict":
            refuse_any_existing([self._path(trainer)], self.overwrite)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        for i, image_id in enumerate(prediction["image_id"]):
            self._predictions[str(image_id)] = {key: prediction[key][i] for key in ("boxes", "scores", "labels")}

    def on_predict_end(self, trainer, pl_module) -> None:
        image_ids, category_ids = trainer.datamodule.coco_ids(trainer.datamodule.hparams.predict_split)
        write_coco_results(self._predictions, self._path(trainer), image_ids, category_ids, self.overwrite)
        self._predictions = {}
