"""LightningDataModule for event-camera semantic segmentation from point labels (EV-WSSS).

EV-WSSS (Cho et al., "Finding Meaning in Points: Weakly Supervised Semantic Segmentation for Event
Cameras", ECCV 2024) trains two students on two views of the same labelled instant ``t``:

* ``voxel`` ``(B, H, W)`` (``B = num_bins``): the events of the window *before* ``t``
  (``window_us`` long, or the last ``window_events`` events), what a camera has seen at ``t``;
* ``voxel_reversed``: the events of a ``reverse_factor`` times longer window *after* ``t``, played
  backwards with flipped polarity (:func:`reversed_stream`), so that it also ends at ``t``.

Data flow (ARCHITECTURE.md): DSEC-layout sequences (:func:`read_dsec_semantic_sequence`; real
DSEC-Semantic or our synthetic generator's flattened copy) -> frames ``<split>/<seq>/<label:06d>``
-> weak point labels drawn once from the training labels (:func:`resolve_weak_labels`) -> voxel
grids computed on the fly in the workers -> the task. Validation and test items carry the full
``labels``; training items never do when a weak protocol is set.

This module holds the DataModule; the windows, voxel grids, augmentation and the ``Dataset`` of
frames are in :mod:`datamodules.events_frames` (their names stay importable from here).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.bad_samples import BadSamples, OnBadSample
from datamodules.distributed import evaluation_sampler
from datamodules.events_frames import (  # re-exported: the public names of this module before the split
    EventFrames,
    EventWindows,
    Frame,
    FrameAugment,
    _own_file_handles,
    checked_labels,
    events_after,
    events_before,
    frame_voxels,
    present_classes,
)
from datamodules.formats.dsec import DSECEvents, DSECSemanticSequence, read_dsec_semantic_sequence
from datamodules.sampling import EpochSampler, ResumableDataLoader
from vision.errors import DataError
from vision.labels.protocols import WeakLabelProtocol
from vision.labels.resolve import resolve_weak_labels
from vision.labels.types import IGNORE_INDEX, DenseLabels

__all__ = ["EventFrames", "EventSegmentationDataModule", "EventWindows", "Frame", "FrameAugment",
           "checked_labels", "events_after", "events_before", "frame_voxels", "present_classes"]


class EventSegmentationDataModule(L.LightningDataModule):
    """DSEC-layout event recordings with point labels for EV-WSSS (module docstring).

    Args:
        data_root: folder with ``train/``, ``val/`` (or ``val_split``) and ``test/`` sequence folders;
            None generates the built-in synthetic recordings on first use.
        synthetic: options of :func:`datamodules.synthetic.events_sim.ensure_event_dataset`.
        synthetic_seed: seed of the generated recordings.
        num_classes: ``C`` (default: ``len(class_names)``, or the synthetic classes).
        class_names: class names (default: the synthetic generator's).
        height, width: sensor size; None reads it from the files (DSEC: 480 x 640).
        label_crop: keep the top ``label_crop`` sensor rows, the rows the labels cover (DSEC: 440).
        num_bins: voxel-grid time bins.
        window_us: the forward window before the label time, in µs.
        window_events: use the last ``window_events`` events instead of a time window.
        reverse_factor: the reversed stream after the label time is this many times longer.
        normalize_voxels: standardise the non-zero voxels (as E-RAFT and ESS do).
        weak_labels: protocol drawing the point labels once (``PerClass(k=1)``: "1pt"); None = full labels.
        weak_label_seed: seed of that protocol.
        weak_label_file: use this weak-label file instead of a protocol.
        batch_size: frames per batch.
        num_workers: dataloader worker processes (each opens its own HDF5 handles).
        augment: random flip and crop-rescale of training items (:class:`FrameAugment`).
        flip_prob, crop_scale: its options.
        val_split: folder used for validation (DSEC-Semantic has none: use ``test``).
        seed: seed of frame order and augmentation.
        predict_split: split read by ``predict`` (``train`` for self-training rounds).
        on_bad_sample: ``raise`` (default) stops at the first bad recording or label file; ``skip`` checks
            every event and label when a split is first read, drops bad recordings and frames, logs them
            and counts them in :attr:`skipped_samples` (:mod:`datamodules.bad_samples`).
    """

    def __init__(self, data_root: Optional[str] = None, synthetic: Optional[dict] = None, synthetic_seed: int = 0,
                 num_classes: Optional[int] = None, class_names: Optional[list[str]] = None,
                 height: Optional[int] = None, width: Optional[int] = None, label_crop: Optional[int] = None,
                 num_bins: int = 5, window_us: int = 50_000, window_events: Optional[int] = None,
                 reverse_factor: int = 5, normalize_voxels: bool = True,
                 weak_labels: Optional[WeakLabelProtocol] = None, weak_label_seed: int = 0,
                 weak_label_file: Optional[str] = None, batch_size: int = 8, num_workers: int = 0,
                 augment: bool = True, flip_prob: float = 0.5, crop_scale: tuple[float, float] = (1.0, 1.25),
                 val_split: str = "val", seed: int = 0, predict_split: str = "test",
                 on_bad_sample: OnBadSample = "raise") -> None:
        super().__init__()
        # class names and count are the task's hparams too; kept out of ours so Lightning need not merge them
        self.save_hyperparameters(ignore=["weak_labels", "class_names", "num_classes"])
        if (height is None) != (width is None):
            raise ValueError("give both height and width of the sensor, or neither")
        if window_us <= 0 or reverse_factor < 1 or (window_events is not None and window_events < 1):
            raise ValueError("window_us and window_events must be positive and reverse_factor >= 1")
        self.weak_labels = weak_labels
        self.windows = EventWindows(num_bins, window_us, window_events, reverse_factor, normalize_voxels,
                                    label_crop)
        self.augment = FrameAugment(flip_prob, tuple(crop_scale)) if augment else None
        self._class_names = list(class_names) if class_names else None
        self._num_classes = num_classes
        self._frames: dict[str, list[Frame]] = {}
        self._by_id: dict[str, Frame] = {}
        self.weak = None
        self.bad_samples = BadSamples(on_bad_sample, logging.getLogger(__name__))

    # ---------------------------------------------------------------- files and classes
    def _root(self) -> Path:
        if self.hparams.data_root is not None:
            return Path(self.hparams.data_root)
        from datamodules.synthetic.events_sim import ensure_event_dataset

        return Path(ensure_event_dataset(seed=self.hparams.synthetic_seed, **(self.hparams.synthetic or {})))

    @property
    def class_names(self) -> list[str]:
        if self._class_names:
            return self._class_names
        if self.hparams.data_root is None:
            from datamodules.synthetic.events_sim import EVENT_CLASSES

            return list(EVENT_CLASSES)
        return [str(i) for i in range(self.num_classes)]

    @property
    def num_classes(self) -> int:
        if self._num_classes is not None:
            return int(self._num_classes)
        if self._class_names or self.hparams.data_root is None:
            return len(self.class_names)
        raise ValueError("num_classes or class_names must be given for a dataset other than the synthetic one")

    def prepare_data(self) -> None:
        """Rank 0: generate synthetic data if needed and make the weak-label file once."""
        self._root()
        if self.weak_labels is not None:
            self.weak_label_set()

    def sequence_folders(self, split: str) -> list[Path]:
        """The sequence folders of a split (``val`` reads ``val_split``), sorted by name."""
        folder = self._root() / (self.hparams.val_split if split == "val" else split)
        sequences = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if folder.is_dir() else []  # hidden folders are temporaries of interrupted writes
        if not sequences:
            raise DataError(folder, f"no sequence folders for split '{split}'")
        return sequences

    def frames(self, split: str) -> list[Frame]:
        """Every labelled instant of a split, sequences in name order (cached; events read lazily)."""
        if split not in self._frames:
            frames = []
            for folder in self.sequence_folders(split):
                sequence = self.bad_samples.attempt(partial(self._open_sequence, folder))
                if sequence is None:
                    continue
                found = [Frame(f"{split}/{sequence.name}/{i:06d}", sequence, i, folder) for i in range(len(sequence))]
                if self.bad_samples.skipping:  # read every label now: a bad one drops its frame only
                    found = [f for f in found
                             if self.bad_samples.attempt(partial(checked_labels, f, self.windows)) is not None]
                frames += found
            if not frames:
                raise DataError(self._root(), f"no usable frames for split '{split}' "
                                              f"({len(self.skipped_samples)} skipped as bad)")
            self._frames[split] = frames
            self._by_id.update((frame.sample_id, frame) for frame in frames)
        return self._frames[split]

    def _open_sequence(self, folder: Path) -> DSECSemanticSequence:
        sequence = read_dsec_semantic_sequence(folder, num_classes=self.num_classes)
        self._check_sensor(sequence)
        if self.bad_samples.skipping:
            sequence.events.validate()  # every event, in chunks: a bad stream drops the recording
        sequence.events.close()  # reopened on first read, so forked workers never share a handle
        return sequence

    @property
    def skipped_samples(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every recording or label file dropped under ``on_bad_sample=skip``."""
        return self.bad_samples.skipped

    def _check_sensor(self, sequence: DSECSemanticSequence) -> None:
        events = sequence.events
        if self.hparams.height is not None and (events.height, events.width) != (self.hparams.height,
                                                                                 self.hparams.width):
            events.close()  # the given sensor size wins over the file's (real DSEC files store none)
            sequence.events = DSECEvents(events.path, sensor_size=(self.hparams.width, self.hparams.height))
        crop = self.hparams.label_crop
        if crop is not None and not 0 < crop <= sequence.events.height:
            raise DataError(events.path, f"label_crop {crop} outside the sensor's {sequence.events.height} rows")

    def frame(self, sample_id: str) -> Frame:
        """The frame ``<split>/<seq>/<index>``."""
        self.frames(sample_id.split("/")[0])
        if sample_id not in self._by_id:
            raise KeyError(sample_id)
        return self._by_id[sample_id]

    def sequence_folder(self, sample_id: str) -> Path:
        """The recording folder of a frame (where predictions are written)."""
        return self.frame(sample_id).folder

    def label_path(self, sample_id: str) -> Path:
        """The label PNG of a frame (predictions take its file name)."""
        frame = self.frame(sample_id)
        return frame.sequence.label_paths[frame.index]

    # ---------------------------------------------------------------- labels
    def full_labels(self, split: str = "train") -> Iterator[tuple[str, DenseLabels]]:
        """``(sample_id, full (H, W) labels)`` of a split, as stored (crop rows only, no augmentation)."""
        for frame in self.frames(split):
            yield frame.sample_id, DenseLabels(frame.labels())

    def weak_label_set(self):
        """The training split's weak labels (made once, cached), or None under full supervision."""
        return resolve_weak_labels(lambda: self.full_labels("train"), "events", self.weak_labels,
                                   self.hparams.weak_label_seed, self.hparams.weak_label_file)

    def setup(self, stage: Optional[str] = None) -> None:
        if stage in (None, "fit"):
            self.weak = self.weak_label_set()
            if self.weak is not None:
                missing = [f.sample_id for f in self.frames("train") if f.sample_id not in self.weak.labels]
                if missing:
                    raise DataError(self.hparams.weak_label_file or "weak labels",
                                    f"no weak labels for {len(missing)} frames, e.g. '{missing[0]}'")
        if self.bad_samples.skipping:  # read the stage's splits now, so skips are reported before a step
            splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                      "predict": (self.hparams.predict_split,)}.get(stage, ("train", "val", "test"))
            for split in splits:
                self.frames(split)
            self.bad_samples.report(self.trainer)

    def label_budget(self) -> dict:
        """Labels used for training: ``{"labelled": n, "total": n, "fraction": f}`` over label pixels."""
        total, labelled = 0, 0
        for _, full in self.full_labels("train"):
            total += full.semantic.size
            labelled += int((full.semantic != IGNORE_INDEX).sum())
        if self.weak is not None:
            labelled = int(self.weak.counts()["total"])
        return {"labelled": labelled, "total": total, "fraction": labelled / max(total, 1)}

    def class_counts(self) -> torch.Tensor:
        """``(C,)`` float labelled training pixels per class: the weak labels' counts, or every labelled
        pixel of the stored full labels under full supervision."""
        counts = torch.zeros(self.num_classes)
        weak = self.weak if self.weak is not None else self.weak_label_set()
        if weak is not None:
            for class_id, n in weak.counts()["per_class"].items():
                counts[int(class_id)] += n
            return counts
        for _, full in self.full_labels("train"):
            labelled = torch.as_tensor(full.semantic[full.semantic != IGNORE_INDEX].astype(np.int64))
            counts += torch.bincount(labelled, minlength=self.num_classes)[:self.num_classes].float()
        return counts

    # ---------------------------------------------------------------- loaders
    def dataset(self, split: str) -> EventFrames:
        """Training items for ``train`` (needs :meth:`setup`), evaluation items otherwise."""
        training = split == "train"
        weak = self.weak.labels if (training and self.weak is not None) else None
        return EventFrames(self.frames(split), self.num_classes, self.windows, training, weak,
                           self.augment if training else None, self.hparams.seed)

    def _loader(self, dataset: Dataset, loader: type[DataLoader] = DataLoader, **options) -> DataLoader:
        workers = self.hparams.num_workers
        return loader(dataset, batch_size=self.hparams.batch_size, num_workers=workers,
                          persistent_workers=workers > 0, worker_init_fn=_own_file_handles, **options)

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        # drop a ragged last batch (BatchNorm), unless the split is smaller than one batch
        drop_last = len(dataset) > self.hparams.batch_size
        return self._loader(dataset, ResumableDataLoader, sampler=EpochSampler(len(dataset)), drop_last=drop_last)

    def _evaluation_loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)  # under DDP each rank scores its own frames, no padded repeats
        return self._loader(dataset, sampler=evaluation_sampler(dataset, self.trainer))

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Frames of ``predict_split`` without augmentation (``train`` for self-training rounds)."""
        frames = self.frames(self.hparams.predict_split)
        return self._loader(EventFrames(frames, self.num_classes, self.windows, False, None, None, self.hparams.seed))
