"""LightningDataModule for 3D point-cloud semantic segmentation from sparse labels.

Data flow (ARCHITECTURE.md): scene files -> :func:`read_point_cloud` -> grid subsampling with label
majority vote -> weak labels (drawn once from the full labels by a protocol, or read from a weak-label
file, keyed by original point index) -> fixed-size training crops with a shared neighbour pyramid and
two augmented views -> the task. Validation and test yield whole scenes; the task predicts them crop
by crop and scores every original point against the full labels.

Without ``data_root`` the built-in synthetic rooms are generated on first use (rank 0, in
``prepare_data``) into the cache folder of CONVENTIONS.md.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from datamodules.bad_samples import BadSamples, OnBadSample
from datamodules.distributed import evaluation_sampler
from datamodules.formats.pointcloud_io import read_point_cloud
from datamodules.pointcloud_crops import (
    PreparedScene,
    ViewAugment,
    collate_crops,
    coverage_plan,
    make_crop,
    prepare_scene,
    spread_target,
    weak_target,
)
from datamodules.sampling import EpochSampler, ResumableDataLoader
from vision.errors import DataError
from vision.labels.protocols import WeakLabelProtocol
from vision.labels.resolve import resolve_weak_labels
from vision.labels.seeding import sample_rng
from vision.labels.types import IGNORE_INDEX, DenseLabels

SPLITS = ("train", "val", "test")


class TrainingCrops(Dataset):
    """Crop number ``g`` -> an augmented crop (two views) from the scenes' coverage plans.

    With ``labelled_fraction > 0``, that share of the crops is instead centred on a labelled point
    drawn uniformly from ``labelled`` (``(L, 2)`` rows of scene index, sub-point index): at 0.01% of the
    points (~6 clicks per synthetic room) only about half of the 4,096-point crops of a coverage plan
    hold a label, so half the crops carry no supervised signal at all.
    """

    def __init__(self, scenes: list[PreparedScene], plan: np.ndarray, crops_per_epoch: int, crop_points: int,
                 seed: int, augment: ViewAugment, num_views: int, pyramid: dict,
                 labelled: Optional[np.ndarray] = None, labelled_fraction: float = 0.0) -> None:
        self.scenes, self.plan, self.crops_per_epoch = scenes, plan, crops_per_epoch
        self.crop_points, self.seed, self.augment = crop_points, seed, augment
        self.num_views, self.pyramid = num_views, pyramid
        self.labelled = labelled if labelled is not None and len(labelled) else None
        self.labelled_fraction = labelled_fraction if self.labelled is not None else 0.0

    def __len__(self) -> int:
        return self.crops_per_epoch

    def _centre(self, global_index: int, rng: np.random.Generator) -> tuple[int, int]:
        if self.labelled_fraction > 0 and rng.random() < self.labelled_fraction:
            scene_index, centre_index = self.labelled[rng.integers(len(self.labelled))]
            return int(scene_index), int(centre_index)
        epoch, j = divmod(int(global_index), self.crops_per_epoch)
        order = sample_rng(self.seed, f"plan-epoch-{epoch}").permutation(len(self.plan))
        scene_index, centre_index = self.plan[order[j % len(self.plan)]]
        return int(scene_index), int(centre_index)

    def __getitem__(self, global_index: int) -> dict:
        rng = sample_rng(self.seed, f"crop-{global_index}")
        scene_index, centre_index = self._centre(global_index, rng)
        scene = self.scenes[scene_index]
        # jitter the centre so that crops differ between epochs but still cover the scene
        centre = scene.coords[centre_index] + rng.normal(0.0, 0.1, 3).astype(np.float32) * [1, 1, 0]
        crop = make_crop(scene, centre, self.crop_points, rng, self.augment, self.num_views, **self.pyramid)
        crop["scene_id"] = scene.scene_id
        return crop


class SceneList(Dataset):
    """Whole scenes for validation, test and prediction (one scene per batch)."""

    def __init__(self, scenes: list[PreparedScene]) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> PreparedScene:
        return self.scenes[i]


def _first(batch: list):
    return batch[0]


class PointCloudDataModule(L.LightningDataModule):
    """Point-cloud scenes with sparse labels (SQN / RandLA-Net pipeline).

    Args:
        data_root: folder of scene files; None uses the built-in synthetic rooms.
        splits: per split, glob patterns relative to ``data_root`` (default ``<split>/*``).
        reader_options: keyword options of :func:`read_point_cloud` (e.g. ``label_field``, ``class_map``).
        class_names: class names (from the synthetic generator's metadata when None).
        synthetic: options of the synthetic room generator (``num_train``, ``num_val``, ``num_test``, ...).
        synthetic_seed: seed of the generated rooms.
        voxel_size: grid subsampling cell in metres.
        crop_points: points per training / inference crop.
        crops_per_epoch: training crops per epoch (None: one coverage pass over all training scenes).
        batch_size: crops per training batch.
        num_views: augmented views per training crop (2 enables consistency / teacher losses).
        augment: training augmentation of each view.
        num_layers, k, sub_ratios: the neighbour pyramid; must match the model's encoder.
        query_k: neighbours per coarser level precomputed for the SQN head's interpolation (its ``k``;
            0: the head searches them itself on every forward pass, which costs ~20% of a forward).
        weak_labels: protocol drawing the training labels once (e.g. ``Ratio(0.001)``); None = full labels.
        weak_label_seed: seed of that protocol.
        weak_label_file: use this weak-label file instead of a protocol.
        spread_voxels: grow each weak label to the unlabelled voxels within this many voxel sizes
            (:func:`~datamodules.pointcloud_crops.spread_target`; 0 = off). In voxels, not metres, so one
            setting carries across scales (indoor rooms at 5 cm, aerial tiles at 25 cm). Extra training
            targets, not extra human labels: the label budget still counts the clicks.
        spread_color_tolerance: only grow onto voxels whose colour is this close (None = no colour gate,
            for data without colour).
        labelled_crop_fraction: share of the training crops centred on a randomly drawn labelled voxel
            instead of the next coverage-plan centre (0 = coverage plan only). Raises the number of
            supervised points per step when labels are very sparse (0.01%), where most plan crops hold none.
        seed: seed of crop selection and augmentation.
        num_workers: dataloader worker processes.
        predict_split: split read by ``predict`` (``train`` for self-training rounds).
        score_unlabelled_only: val/test scenes that are also training scenes (label propagation on one
            tile) are scored only on the points without a weak label.
        on_bad_sample: ``raise`` (default) stops at the first scene file that raises DataError; ``skip``
            drops it, logs it and counts it in :attr:`skipped_samples` (:mod:`datamodules.bad_samples`).
    """

    def __init__(self, data_root: Optional[str] = None, splits: Optional[dict[str, list[str]]] = None,
                 reader_options: Optional[dict] = None, class_names: Optional[list[str]] = None,
                 synthetic: Optional[dict] = None, synthetic_seed: int = 0, voxel_size: float = 0.04,
                 crop_points: int = 4096, crops_per_epoch: Optional[int] = None, batch_size: int = 4,
                 num_views: int = 2, augment: Optional[ViewAugment] = None, num_layers: int = 4, k: int = 16,
                 sub_ratios: tuple[int, ...] = (4, 4, 4, 4), weak_labels: Optional[WeakLabelProtocol] = None,
                 weak_label_seed: int = 0, weak_label_file: Optional[str] = None, seed: int = 0,
                 num_workers: int = 0, predict_split: str = "test", score_unlabelled_only: bool = False,
                 query_k: int = 3, on_bad_sample: OnBadSample = "raise", spread_voxels: float = 0.0,
                 spread_color_tolerance: Optional[float] = None, labelled_crop_fraction: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= labelled_crop_fraction <= 1.0:
            raise ValueError(f"labelled_crop_fraction must be in [0, 1], got {labelled_crop_fraction}")
        self.save_hyperparameters(ignore=["augment", "weak_labels", "class_names"])
        self.augment = augment if augment is not None else ViewAugment()
        self.weak_labels = weak_labels
        self.class_names = list(class_names) if class_names else None
        self._scenes: dict[str, list[PreparedScene]] = {}
        self.weak = None
        self.bad_samples = BadSamples(on_bad_sample, logging.getLogger(__name__))

    # ---------------------------------------------------------------- files
    def _root(self) -> Path:
        if self.hparams.data_root is not None:
            return Path(self.hparams.data_root)
        from datamodules.synthetic.rooms import ensure_room_dataset

        return Path(ensure_room_dataset(seed=self.hparams.synthetic_seed, **(self.hparams.synthetic or {})))

    def prepare_data(self) -> None:
        """Rank 0: generate synthetic data if needed and make the weak-label file once."""
        self._root()
        if self.weak_labels is not None:
            self.weak_label_set()

    def scene_files(self, split: str) -> list[Path]:
        root = self._root()
        patterns = (self.hparams.splits or {}).get(split, [f"{split}/*"])
        files = sorted({Path(p) for pattern in patterns for p in glob.glob(os.path.join(root, pattern))})
        # metadata and earlier prediction outputs are not scenes
        files = [f for f in files if (f.is_dir() or f.suffix.lower() not in (".json", ".txt", ".yaml"))
                 and ".pred." not in f.name and not f.name.endswith(".conf.npy")]
        if not files:
            raise DataError(root, f"no scene files for split '{split}' (patterns {patterns})")
        return files

    def scene_id(self, path: Path) -> str:
        relative = path.relative_to(self._root()).as_posix()
        return relative[: -len(path.suffix)] if path.suffix else relative

    @property
    def num_classes(self) -> int:
        names = self.class_names or self._synthetic_class_names()
        if not names:
            raise ValueError("class_names must be given for a dataset without metadata")
        return len(names)

    def _synthetic_class_names(self) -> Optional[list[str]]:
        if self.hparams.data_root is None:
            from datamodules.synthetic.rooms import ROOM_CLASSES

            return list(ROOM_CLASSES)
        return None

    # ---------------------------------------------------------------- labels
    def read_scene(self, path: Path):
        """One scene file as read (original point order), checked against ``num_classes``."""
        scene = read_point_cloud(path, **(self.hparams.reader_options or {}))
        labels = scene.semantic
        if labels is not None and labels.max(initial=-1) >= self.num_classes:
            raise DataError(path, f"class id {int(labels.max())} >= num_classes {self.num_classes}")
        return scene

    def _labelled_scene(self, path: Path):
        scene = self.read_scene(path)
        if scene.semantic is None:
            raise DataError(path, "scene has no labels; sparse training needs labels to sparsify")
        return scene

    def full_labels(self, split: str = "train") -> Iterator[tuple[str, DenseLabels]]:
        """``(scene_id, full labels)`` of a split, in the reader's original point order (bad scenes
        skipped under ``on_bad_sample=skip``)."""
        for path in self.scene_files(split):
            scene = self.bad_samples.attempt(partial(self._labelled_scene, path))
            if scene is not None:
                yield self.scene_id(path), DenseLabels(scene.semantic, scene.instance)

    @property
    def skipped_samples(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every scene dropped under ``on_bad_sample=skip``."""
        return self.bad_samples.skipped

    def weak_label_set(self):
        """The training split's weak labels (made once, cached), or None under full supervision."""
        return resolve_weak_labels(lambda: self.full_labels("train"), "pointcloud", self.weak_labels,
                                   self.hparams.weak_label_seed, self.hparams.weak_label_file)

    # ---------------------------------------------------------------- scenes
    def scenes(self, split: str) -> list[PreparedScene]:
        """The split's grid-subsampled scenes (cached in memory)."""
        if split not in self._scenes:
            read = self._labelled_scene if split == "train" else self.read_scene
            prepared = []
            for path in self.scene_files(split):
                scene = self.bad_samples.attempt(partial(read, path))
                if scene is not None:
                    prepared.append(prepare_scene(self.scene_id(path), scene.coords, scene.colors, scene.semantic,
                                                  self.hparams.voxel_size, self.num_classes, str(path)))
            if not prepared:
                raise DataError(self._root(), f"no usable scenes for split '{split}' "
                                              f"({len(self.skipped_samples)} skipped as bad)")
            self._scenes[split] = prepared
        return self._scenes[split]

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit"):
            self.weak = self.weak_label_set()
            for scene in self.scenes("train"):
                if self.weak is not None:
                    labels = self.weak.labels.get(scene.scene_id)
                    if labels is None:
                        raise DataError(self.hparams.weak_label_file or "weak labels",
                                        f"no weak labels for scene '{scene.scene_id}'")
                    scene.target = spread_target(scene, weak_target(scene, labels.index, labels.class_id),
                                                 self.hparams.spread_voxels * self.hparams.voxel_size,
                                                 self.hparams.spread_color_tolerance)
        if self.hparams.score_unlabelled_only:
            self._hide_weak_labels_from_scoring()
        if self.bad_samples.skipping:
            self._read_stage_splits(stage)

    def _read_stage_splits(self, stage: Optional[str]) -> None:
        """``on_bad_sample=skip``: read the stage's splits now, so skipped scenes are reported before a step."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": (self.hparams.predict_split,)}.get(stage, SPLITS)
        for split in splits:
            try:
                self.scene_files(split)
            except DataError:  # a split the run does not have (e.g. no val/ folder) is not read
                continue
            self.scenes(split)
        self.bad_samples.report(self.trainer)

    def _hide_weak_labels_from_scoring(self) -> None:
        """Label propagation setting: a scene trained on is scored only on the points it was not given."""
        weak = self.weak if self.weak is not None else self.weak_label_set()
        if weak is None:
            return
        for split in ("val", "test"):
            for scene in self.scenes(split):
                labels = weak.labels.get(scene.scene_id)
                if labels is not None and scene.full_labels is not None:
                    scene.full_labels = scene.full_labels.copy()
                    scene.full_labels[labels.index] = IGNORE_INDEX

    def label_budget(self) -> dict:
        """Labels used for training: ``{"labelled": n, "total": n, "fraction": f}`` over original points."""
        total = sum(len(s.inverse) for s in self.scenes("train"))
        if self.weak is None:
            labelled = sum(int((s.full_labels != IGNORE_INDEX).sum()) for s in self.scenes("train"))
        else:
            labelled = int(self.weak.counts()["total"])
        return {"labelled": labelled, "total": total, "fraction": labelled / max(total, 1)}

    # ---------------------------------------------------------------- loaders
    def _pyramid(self) -> dict:
        return {"num_layers": self.hparams.num_layers, "k": self.hparams.k,
                "sub_ratios": tuple(self.hparams.sub_ratios), "query_k": self.hparams.query_k}

    def train_dataloader(self) -> DataLoader:
        scenes = self.scenes("train")
        plan = [(i, c) for i, scene in enumerate(scenes) for c in
                coverage_plan(scene, self.hparams.crop_points, sample_rng(self.hparams.seed, scene.scene_id))]
        plan = np.asarray(plan, np.int64)
        per_epoch = self.hparams.crops_per_epoch or len(plan)
        labelled = None
        if self.hparams.labelled_crop_fraction > 0:  # (scene index, labelled voxel) rows
            voxels = (np.nonzero(scene.target != IGNORE_INDEX)[0] for scene in scenes)
            labelled = np.concatenate([np.column_stack([np.full(len(v), i), v]) for i, v in enumerate(voxels)])
        dataset = TrainingCrops(scenes, plan, per_epoch, self.hparams.crop_points, self.hparams.seed, self.augment,
                                self.hparams.num_views, self._pyramid(), labelled,
                                self.hparams.labelled_crop_fraction)
        return ResumableDataLoader(dataset, batch_size=self.hparams.batch_size, sampler=EpochSampler(per_epoch),
                                   collate_fn=collate_crops, num_workers=self.hparams.num_workers, drop_last=True,
                                   persistent_workers=self.hparams.num_workers > 0)

    def _scene_loader(self, split: str) -> DataLoader:
        scenes = SceneList(self.scenes(split))  # under DDP each rank takes its own scenes, no padded repeats
        return DataLoader(scenes, batch_size=1, collate_fn=_first, sampler=evaluation_sampler(scenes, self.trainer))

    def val_dataloader(self) -> DataLoader:
        return self._scene_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._scene_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._scene_loader(self.hparams.predict_split)

    def inference_options(self) -> dict:
        """What the task needs to cut whole scenes into crops exactly like training does."""
        return {"crop_points": self.hparams.crop_points, "seed": self.hparams.seed, **self._pyramid()}

