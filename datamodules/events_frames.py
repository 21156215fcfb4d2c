"""Labelled event frames as training and evaluation items: event windows, voxel grids, augmentation.

The pieces behind :class:`datamodules.events.EventSegmentationDataModule` (EV-WSSS, Cho et al., ECCV
2024; the two views are described there): :class:`EventWindows` says how the window before a labelled
instant and the reversed window after it are cut, :func:`frame_voxels` turns them into ``(num_bins, H, W)``
voxel grids, :class:`FrameAugment` flips and crops both views and the target alike, and
:class:`EventFrames` is the ``Dataset`` of :class:`Frame` items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from datamodules.formats.dsec import DSECEvents, DSECSemanticSequence
from datamodules.formats.events_common import EventArray, reversed_stream, slice_by_count
from datamodules.transforms.event_representations import voxel_grid
from vision.errors import DataError
from vision.labels.conversions import points_to_mask
from vision.labels.seeding import sample_rng
from vision.labels.types import IGNORE_INDEX, PointLabels

__all__ = ["EventFrames", "EventWindows", "Frame", "FrameAugment", "checked_labels", "events_after",
           "events_before", "frame_voxels", "present_classes"]


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
