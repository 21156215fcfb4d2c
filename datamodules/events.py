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
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset

from datamodules.bad_samples import BadSamples, OnBadSample
from datamodules.distributed import evaluation_sampler
from datamodules.formats.dsec import DSECEvents, DSECSemanticSequence, read_dsec_semantic_sequence
from datamodules.formats.events_common import EventArray, reversed_stream, slice_by_count
from datamodules.sampling import EpochSampler, ResumableDataLoader
from datamodules.transforms.event_representations import voxel_grid
from vision.errors import DataError
from vision.labels.conversions import points_to_mask
from vision.labels.protocols import WeakLabelProtocol
from vision.labels.resolve import resolve_weak_labels
from vision.labels.seeding import sample_rng
from vision.labels.types import IGNORE_INDEX, DenseLabels, PointLabels


@dataclass(frozen=True)
class EventWindows:
    """How the two event windows of a labelled instant are cut and turned into voxel grids."""

    num_bins: int = 5
    window_us: int = 50_000
    window_events: Optional[int] = None
    reverse_factor: int = 5
    normalize: bool = True
    label_rows: Optional[int] = None  # keep the top rows only (DSEC-Semantic: 440 of 480)


def events_before(events: DSECEvents, t_us: int, count: int, first_span_us: int) -> EventArray:
    """The last ``count`` events with ``t < t_us`` (fewer at the start of the recording).

    DSEC files index events by time only, so the window grows (doubling) until it holds enough.
    """
    span = max(int(first_span_us), 1000)
    while True:
        window = events.slice_time(t_us - span, t_us)
        if len(window) >= count or t_us - span <= events.t_offset:
            return slice_by_count(window, t_us, count) if len(window) else window
        span *= 2


def events_after(events: DSECEvents, t_us: int, count: int, first_span_us: int) -> EventArray:
    """The first ``count`` events with ``t >= t_us`` (fewer at the end of the recording)."""
    end_of_recording = events.t_offset + 1000 * len(events.ms_to_idx)
    span = max(int(first_span_us), 1000)
    while True:
        window = events.slice_time(t_us, t_us + span)
        if len(window) >= count or t_us + span >= end_of_recording:
            return window.select(slice(0, count))
        span *= 2


def _voxel(ev: EventArray, windows: EventWindows, t_range: Optional[tuple[int, int]]) -> torch.Tensor:
    grid = voxel_grid(ev.x, ev.y, ev.t, ev.p, windows.num_bins, height=ev.height, width=ev.width,
                      normalize=windows.normalize, t_range=t_range)
    return grid if windows.label_rows is None else grid[:, : windows.label_rows]


def frame_voxels(events: DSECEvents, t_us: int, windows: EventWindows,
                 reversed_view: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(voxel, voxel_reversed)``, each ``(num_bins, H, W)`` float32 (``H`` = label rows).

    Time windows share one time axis per view (``t_range``); count windows span their own events.
    """
    t_us = int(t_us)
    factor = windows.reverse_factor
    if windows.window_events:
        forward, forward_range = events_before(events, t_us, windows.window_events, windows.window_us), None
    else:
        forward = events.slice_time(t_us - windows.window_us, t_us)
        forward_range = (t_us - windows.window_us, t_us)
    voxel = _voxel(forward, windows, forward_range)
    if not reversed_view:
        return voxel, None
    if windows.window_events:
        after = events_after(events, t_us, windows.window_events * factor, windows.window_us * factor)
        span = int(after.t[-1]) - t_us + 1 if len(after) else 1
        backward, backward_range = reversed_stream(after, t_us, span), None
    else:
        span = windows.window_us * factor
        backward = reversed_stream(events.slice_time(t_us, t_us + span), t_us, span)
        backward_range = (t_us - span, t_us)
    return voxel, _voxel(backward, windows, backward_range)


@dataclass(frozen=True)
class FrameAugment:
    """Random horizontal flip and random crop-and-rescale (zoom in by ``scale``), one draw per item.

    The same draw is applied to both voxel grids and the target, so the two students' pixels stay
    aligned. Sparse targets move point by point (a point stays one pixel; points outside the crop
    are dropped); dense targets are resampled by nearest neighbour.
    """

    flip_prob: float = 0.5
    scale: tuple[float, float] = (1.0, 1.25)

    def __post_init__(self) -> None:
        if not 1.0 <= self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must satisfy 1 <= min <= max (zoom in only), got {self.scale}")

    def draw(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int, bool]:
        """``(top, left, crop_height, crop_width, flip)``."""
        scale = rng.uniform(*self.scale)
        crop_h, crop_w = max(1, round(height / scale)), max(1, round(width / scale))
        top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        return top, left, crop_h, crop_w, bool(rng.random() < self.flip_prob)

    @staticmethod
    def apply_voxel(voxel: torch.Tensor, box: tuple) -> torch.Tensor:
        """``(B, H, W)`` -> the crop of ``box`` rescaled (bilinear) to ``(H, W)``, flipped if drawn."""
        top, left, crop_h, crop_w, flip = box
        out = TF.resized_crop(voxel, top, left, crop_h, crop_w, list(voxel.shape[-2:]), antialias=False)
        return out.flip(-1) if flip else out

    @staticmethod
    def apply_target(target: torch.Tensor, box: tuple, sparse: bool) -> torch.Tensor:
        """``(H, W)`` class ids through the same crop / rescale / flip (IGNORE_INDEX where unknown)."""
        top, left, crop_h, crop_w, flip = box
        height, width = target.shape
        if sparse:  # forward-map each labelled pixel to its nearest output pixel
            rows, cols = torch.nonzero(target != IGNORE_INDEX, as_tuple=True)
            new_rows = torch.floor((rows - top + 0.5) * height / crop_h).long()
            new_cols = torch.floor((cols - left + 0.5) * width / crop_w).long()
            inside = (new_rows >= 0) & (new_rows < height) & (new_cols >= 0) & (new_cols < width)
            out = torch.full_like(target, IGNORE_INDEX)
            out[new_rows[inside], new_cols[inside]] = target[rows[inside], cols[inside]]
        else:  # nearest neighbour with half-pixel centres, as resized_crop's bilinear grid
            src_rows = top + torch.floor((torch.arange(height) + 0.5) * crop_h / height).long()
            src_cols = left + torch.floor((torch.arange(width) + 0.5) * crop_w / width).long()
            out = target[src_rows][:, src_cols]
        return out.flip(-1) if flip else out


@dataclass
class Frame:
    """One labelled instant: ``sample_id`` = ``<split>/<seq>/<label index:06d>``."""

    sample_id: str
    sequence: DSECSemanticSequence
    index: int
    folder: Path  # the recording's folder

    @property
    def time_us(self) -> int:
        return int(self.sequence.timestamps_us[self.index])

    def labels(self) -> np.ndarray:
        return self.sequence.label(self.index)


def present_classes(class_ids: np.ndarray, num_classes: int) -> torch.Tensor:
    """``(C,)`` bool: the classes among ``class_ids`` (IGNORE_INDEX skipped)."""
    ids = np.asarray(class_ids).reshape(-1)
    present = torch.zeros(num_classes, dtype=torch.bool)
    present[torch.as_tensor(ids[ids != IGNORE_INDEX], dtype=torch.long)] = True
    return present


class EventFrames(Dataset):
    """Frames -> items (module docstring).

    Training (``weak`` given or ``training=True``): index ``g`` is a global number from
    :class:`EpochSampler`; epoch ``e = g // len`` sets the frame order and the augmentation draw,
    both seeded by ``(seed, epoch, frame)`` so any worker count gives the same batches.
    Evaluation: index = frame, items carry the full ``labels`` and no target.
    """

    def __init__(self, frames: list[Frame], num_classes: int, windows: EventWindows, training: bool,
                 weak: Optional[dict[str, PointLabels]] = None, augment: Optional[FrameAugment] = None,
                 seed: int = 0) -> None:
        self.frames, self.num_classes, self.windows = frames, num_classes, windows
        self.training, self.weak, self.augment, self.seed = training, weak, augment, seed

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        if not self.training:
            return self._evaluation_item(self.frames[index])
        epoch, j = divmod(int(index), len(self.frames))
        frame_index = int(sample_rng(self.seed, f"order-epoch-{epoch}").permutation(len(self.frames))[j])
        return self._training_item(self.frames[frame_index], epoch)

    def _evaluation_item(self, frame: Frame) -> dict:
        labels = self._checked_labels(frame)
        voxel, _ = frame_voxels(frame.sequence.events, frame.time_us, self.windows, reversed_view=False)
        return {"sample_id": frame.sample_id, "voxel": voxel, "labels": torch.as_tensor(labels),
                "present": present_classes(labels, self.num_classes)}

    def _training_item(self, frame: Frame, epoch: int) -> dict:
        voxel, voxel_reversed = frame_voxels(frame.sequence.events, frame.time_us, self.windows)
        shape = tuple(voxel.shape[-2:])
        if self.weak is None:  # full supervision
            target = torch.as_tensor(self._checked_labels(frame))
            present = present_classes(target.numpy(), self.num_classes)
        else:
            points = self.weak[frame.sample_id]
            try:
                target = torch.as_tensor(points_to_mask(points, shape))
            except ValueError as err:
                raise DataError(frame.sample_id, f"weak labels do not fit the {shape} frame: {err}") from err
            present = present_classes(points.class_id, self.num_classes)
        if self.augment is not None:
            box = self.augment.draw(*shape, sample_rng(self.seed, f"augment-{epoch}-{frame.sample_id}"))
            voxel, voxel_reversed = (self.augment.apply_voxel(v, box) for v in (voxel, voxel_reversed))
            target = self.augment.apply_target(target, box, sparse=self.weak is not None)
        return {"sample_id": frame.sample_id, "voxel": voxel, "voxel_reversed": voxel_reversed,
                "target": target, "present": present}

    def _checked_labels(self, frame: Frame) -> np.ndarray:
        return checked_labels(frame, self.windows)


def checked_labels(frame: Frame, windows: EventWindows) -> np.ndarray:
    """``(H, W)`` labels of ``frame``; DataError naming the PNG when they do not cover the sensor."""
    labels = frame.labels()
    rows = windows.label_rows or frame.sequence.events.height
    expected = (rows, frame.sequence.events.width)
    if labels.shape != expected:
        raise DataError(frame.sequence.label_paths[frame.index],
                        f"label shape {labels.shape} != {expected} (sensor rows x columns after label_crop)")
    return labels


def _own_file_handles(worker_id: int) -> None:
    """Close HDF5 handles a forked worker inherited; each worker then opens its own (HDF5 is not fork-safe)."""
    for sequence in {id(f.sequence): f.sequence for f in torch.utils.data.get_worker_info().dataset.frames}.values():
        sequence.events.close()


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
