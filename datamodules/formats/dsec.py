"""DSEC event files (``events.h5``) and DSEC-Semantic labels, read and written.

DSEC (Gehrig et al., "DSEC: A Stereo Event Camera Dataset for Driving Scenarios", RA-L 2021) stores
one sequence's events in HDF5: ``events/x``, ``events/y`` (uint16), ``events/t`` (uint32 µs
relative to ``t_offset``), ``events/p`` (uint8 0/1), ``t_offset`` (int64 µs) and ``ms_to_idx``
(``(M,)`` uint64: the index of the first event with ``t >= ms * 1000``, so a time window is found
without reading the whole ``t`` array). The left event camera is 640x480; a file may also carry
``width``/``height`` attributes (ours do). Real DSEC files compress with Blosc, which h5py reads
only when the ``hdf5plugin`` package is installed; it is imported when available.

DSEC-Semantic (Sun et al., ESS, ECCV 2022) adds per-sequence label PNGs (uint8 class ids, 11 or 19
classes, 255 = ignore; 640x440: the bottom 40 rows of the 480-row sensor, the car hood, are cut)
and ``timestamps.txt`` (one µs timestamp per label, in the events' clock). Sequence layouts read by
:func:`read_dsec_semantic_sequence`::

    DSEC-Semantic                          flattened (our synthetic generator)
    <seq>/events/left/events.h5            <seq>/events.h5
    <seq>/semantic[/left]/11classes[/data]/*.png
    <seq>/semantic[/left]/timestamps.txt   <seq>/labels/*.png, <seq>/timestamps.txt
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
from PIL import Image

from datamodules.formats.detection_common import IMAGE_ERRORS
from datamodules.formats.events_common import EventArray, validate_events
from vision.atomic import atomic_path
from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX

try:  # registers the Blosc filter that real DSEC files use; optional
    import hdf5plugin  # noqa: F401
except ImportError:
    hdf5plugin = None

DSEC_SIZE = (640, 480)  # (width, height) of DSEC's event cameras
_FIELDS = ("x", "y", "t", "p")

PNG_IGNORE = 255  # DSEC-Semantic's "no label" value in the PNGs


#: What h5py raises for a corrupt file: HDF5's own errors surface as OSError, KeyError (an object
#: that cannot be opened), RuntimeError (a damaged link table) or ValueError/TypeError (bad types).
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)


def _h5_error(path: str, err: Exception) -> DataError:
    hint = "" if hdf5plugin else "; real DSEC files need `pip install hdf5plugin` for Blosc"
    return DataError(path, f"cannot read HDF5 ({err}){hint}")


class DSECEvents:
    """Lazy reader of one DSEC ``events.h5``: nothing but ``ms_to_idx`` is read until sliced.

    Times are absolute µs (``t_offset`` added), as in DSEC's timestamps files. The HDF5 handle is
    opened on first use and dropped when pickled, so the object can go to dataloader workers.

    Args:
        path: the ``events.h5`` file.
        sensor_size: ``(width, height)``; default the file's attributes, else :data:`DSEC_SIZE`.
    """

    def __init__(self, path: PathLike, sensor_size: Optional[tuple[int, int]] = None) -> None:
        self.path = os.fspath(path)
        self._file: Optional[h5py.File] = None
        try:
            self._check(self._open(), sensor_size)
        except DataError:
            self.close()
            raise

    def _check(self, handle: h5py.File, sensor_size: Optional[tuple[int, int]]) -> None:
        """Datasets present with equal lengths; read ``t_offset``, ``ms_to_idx`` and the sensor size."""
        try:
            self._check_layout(handle)
            self.t_offset = int(handle["t_offset"][()]) if "t_offset" in handle else 0
            self.ms_to_idx = np.asarray(handle["ms_to_idx"][()]).reshape(-1)
            attrs = handle.attrs
            stored = (int(attrs["width"]), int(attrs["height"])) if "width" in attrs and "height" in attrs else None
        except DataError:
            raise
        except H5_ERRORS as err:
            raise _h5_error(self.path, err) from err
        if self.ms_to_idx.dtype.kind not in "iu":
            raise DataError(self.path, f"ms_to_idx has dtype {self.ms_to_idx.dtype}, expected integers")
        self.ms_to_idx = self.ms_to_idx.astype(np.int64)
        if np.any(np.diff(self.ms_to_idx) < 0) or (self.ms_to_idx.size and (
                self.ms_to_idx[0] < 0 or self.ms_to_idx[-1] > self.num_events)):
            raise DataError(self.path, "ms_to_idx is not a non-decreasing index into the events")
        self.width, self.height = sensor_size or stored or DSEC_SIZE
        if self.width <= 0 or self.height <= 0:
            raise DataError(self.path, f"sensor size {self.width}x{self.height} is not positive")

    def _check_layout(self, handle: h5py.File) -> None:
        missing = [f"events/{name}" for name in _FIELDS if f"events/{name}" not in handle]
        missing += [name for name in ("ms_to_idx",) if name not in handle]
        if missing:
            raise DataError(self.path, f"missing datasets {', '.join(missing)}")
        datasets = {name: handle[f"events/{name}"] for name in _FIELDS}
        shapes = {name: dataset.shape for name, dataset in datasets.items()}
        if any(shape is None or len(shape) != 1 for shape in shapes.values()):
            raise DataError(self.path, f"event datasets must be 1-D, got shapes {shapes}")
        # a float or string dataset would be cast silently when read as int64
        kinds = {name: dataset.dtype for name, dataset in datasets.items() if dataset.dtype.kind not in "iub"}
        if kinds:
            raise DataError(self.path, f"event datasets must hold integers, got {kinds}")
        lengths = {name: shape[0] for name, shape in shapes.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(self.path, f"event datasets have different lengths {lengths}")
        self.num_events = lengths["t"]

    def _open(self) -> h5py.File:
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except H5_ERRORS as err:
                raise DataError(self.path, f"cannot open HDF5 file ({err})") from err
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> DSECEvents:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}

    def __len__(self) -> int:
        return self.num_events

    def _ms_index(self, ms: int) -> int:
        """``ms_to_idx[ms]`` clipped: before the table -> 0, after it -> all events."""
        if ms <= 0:
            return 0
        return int(self.ms_to_idx[ms]) if ms < self.ms_to_idx.size else self.num_events

    def slice_time(self, t_start_us: int, t_end_us: int) -> EventArray:
        """Events with ``t_start_us <= t < t_end_us`` (absolute µs), validated.

        ``ms_to_idx`` narrows the read to whole milliseconds around the window; a binary search on
        that small block of ``t`` finds the exact ends.
        """
        if t_end_us <= t_start_us:
            raise ValueError(f"empty window [{t_start_us}, {t_end_us})")
        start_rel, end_rel = int(t_start_us) - self.t_offset, int(t_end_us) - self.t_offset
        lo = self._ms_index(start_rel // 1000)
        hi = self._ms_index(-(-end_rel // 1000))  # ceil: ms_to_idx[ceil] is past every t < end
        return self._read(lo, hi, start_rel, end_rel)

    def read_all(self) -> EventArray:
        """Every event of the file, validated."""
        return self._read(0, self.num_events, None, None)

    def validate(self, chunk_events: int = 1 << 22) -> None:
        """Validate every event (coordinates, polarity, non-decreasing time) in chunks of ``chunk_events``.

        What :meth:`read_all` checks, without holding a whole DSEC sequence (hundreds of millions of
        events) in memory; raises DataError naming the file and the first bad event.
        """
        if self.num_events == 0:
            raise DataError(self.path, "no events")
        previous_t = None
        for lo in range(0, self.num_events, chunk_events):
            chunk = self._read(lo, min(lo + chunk_events, self.num_events), None, None)
            if previous_t is not None and chunk.t[0] < previous_t:
                raise DataError(self.path, f"timestamps decrease at event {lo} (t[{lo - 1}]={previous_t} > "
                                           f"t[{lo}]={int(chunk.t[0])})")
            previous_t = int(chunk.t[-1])

    def _read(self, lo: int, hi: int, start_rel: Optional[int], end_rel: Optional[int]) -> EventArray:
        handle = self._open()
        try:
            t = np.asarray(handle["events/t"][lo:hi], dtype=np.int64)
            if start_rel is not None:
                first, last = np.searchsorted(t, [start_rel, end_rel], side="left")
                lo, hi, t = lo + int(first), lo + int(last), t[first:last]
            x, y, p = (np.asarray(handle[f"events/{name}"][lo:hi]) for name in ("x", "y", "p"))
        except H5_ERRORS as err:
            raise _h5_error(self.path, err) from err
        events = EventArray.from_arrays(x, y, t + self.t_offset, p, self.width, self.height, self.path,
                                        allow_empty=start_rel is not None)
        return events


def dsec_ms_to_idx(t_rel: np.ndarray) -> np.ndarray:
    """DSEC's ``ms_to_idx`` for relative µs times: entry ``ms`` is the first index with
    ``t >= 1000 * ms``, for ``ms = 0 .. t[-1] // 1000 + 1`` (the last entry is the event count)."""
    n_ms = int(t_rel[-1]) // 1000 + 2 if len(t_rel) else 1
    return np.searchsorted(t_rel, np.arange(n_ms, dtype=np.int64) * 1000, side="left").astype(np.uint64)


def write_dsec_events(path: PathLike, ev: EventArray, t_offset: Optional[int] = None) -> None:
    """Write ``ev`` as a DSEC-compatible ``events.h5`` (gzip, no Blosc), atomically (temp + rename).

    ``t_offset`` defaults to the first event's time; ``width``/``height`` go into file attributes.

    Raises:
        DataError: invalid events, or a span longer than uint32 µs (about 71 minutes).
    """
    path = os.fspath(path)
    validate_events(ev, path)
    t_offset = int(ev.t[0]) if t_offset is None else int(t_offset)
    t_rel = np.asarray(ev.t, dtype=np.int64) - t_offset
    if t_rel.min() < 0 or t_rel.max() > np.iinfo(np.uint32).max:
        raise DataError(path, "event times relative to t_offset do not fit uint32 microseconds")
    with atomic_path(path, overwrite=True) as tmp, h5py.File(tmp, "w") as handle:
        group = handle.create_group("events")
        for name, array, dtype in (("x", ev.x, np.uint16), ("y", ev.y, np.uint16),
                                   ("t", t_rel, np.uint32), ("p", ev.p, np.uint8)):
            group.create_dataset(name, data=np.asarray(array, dtype=dtype), compression="gzip",
                                 chunks=True)
        handle.create_dataset("ms_to_idx", data=dsec_ms_to_idx(t_rel))
        handle.create_dataset("t_offset", data=np.int64(t_offset))
        handle.attrs["width"], handle.attrs["height"] = ev.width, ev.height


def read_label_png(path: PathLike, num_classes: Optional[int] = None) -> np.ndarray:
    """``(H, W)`` int64 class ids from an 8-bit label PNG; 255 -> :data:`IGNORE_INDEX`.

    Raises:
        DataError: unreadable PNG, colour (RGB) labels, or ids ``>= num_classes`` other than 255.
    """
    path = os.fspath(path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                raise DataError(path, f"label PNG has mode {image.mode}, expected 8-bit class ids (L or P)")
            ids = np.asarray(image, dtype=np.uint8)
    except IMAGE_ERRORS as err:
        raise DataError(path, f"cannot read label PNG ({err})") from err
    labels = ids.astype(np.int64)
    labels[ids == PNG_IGNORE] = IGNORE_INDEX
    if num_classes is not None and labels.max(initial=-1) >= num_classes:
        bad = int(labels.max())
        raise DataError(path, f"class id {bad} >= num_classes {num_classes} (255 is the ignore value)")
    return labels


def write_label_png(path: PathLike, mask: np.ndarray) -> None:
    """Write ``mask`` ``(H, W)`` class ids as an 8-bit PNG, :data:`IGNORE_INDEX` -> 255, atomically.

    Raises:
        DataError: a mask that is not 2-D or holds ids outside ``0..254`` other than IGNORE_INDEX.
    """
    path = os.fspath(path)
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype.kind not in "iu":
        raise DataError(path, f"label mask must be a 2-D integer array, got {mask.dtype} {mask.shape}")
    valid = mask != IGNORE_INDEX
    if np.any(valid & ((mask < 0) | (mask >= PNG_IGNORE))):
        raise DataError(path, f"class ids must be in 0..{PNG_IGNORE - 1} or IGNORE_INDEX")
    ids = np.where(valid, mask, PNG_IGNORE).astype(np.uint8)
    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(ids).save(tmp, format="PNG")  # 2-D uint8 -> mode L


@dataclass
class DSECSemanticSequence:
    """One labelled sequence: lazy events, label PNG paths and their timestamps (``(K,)`` int64 µs)."""

    name: str
    events: DSECEvents
    label_paths: list[Path]
    timestamps_us: np.ndarray
    num_classes: Optional[int]

    def __len__(self) -> int:
        return len(self.label_paths)

    def label(self, index: int) -> np.ndarray:
        """``(H, W)`` int64 class ids of label ``index``, ignore -> IGNORE_INDEX."""
        return read_label_png(self.label_paths[index], self.num_classes)


def _find_layout(folder: Path, num_classes: int) -> tuple[Path, Path, Path]:
    """``(events.h5, label folder, timestamps.txt)`` of a DSEC-Semantic or flattened sequence."""
    if (folder / "events.h5").is_file():
        return folder / "events.h5", folder / "labels", folder / "timestamps.txt"
    events = folder / "events" / "left" / "events.h5"
    for semantic in (folder / "semantic", folder / "semantic" / "left"):
        for labels in (semantic / f"{num_classes}classes" / "data", semantic / f"{num_classes}classes"):
            if labels.is_dir():
                stamps = semantic / "timestamps.txt"
                if not stamps.is_file():
                    stamps = folder / "semantic" / "timestamps.txt"
                return events, labels, stamps
    raise DataError(folder, f"no DSEC-Semantic layout: expected events/left/events.h5 and "
                            f"semantic/{num_classes}classes/data/*.png, or events.h5 + labels/*.png")


def read_timestamps(path: PathLike) -> np.ndarray:
    """``(K,)`` int64 µs, one per line (``#`` comments allowed), strictly increasing."""
    path = os.fspath(path)
    try:
        stamps = np.loadtxt(path, dtype=np.int64, comments="#", ndmin=1)
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read timestamps ({err})") from err
    if np.any(np.diff(stamps) <= 0):
        i = int(np.flatnonzero(np.diff(stamps) <= 0)[0]) + 1
        raise DataError(path, f"timestamps are not increasing at line {i + 1}")
    return stamps


def read_dsec_semantic_sequence(folder: PathLike, num_classes: Optional[int] = 11) -> DSECSemanticSequence:
    """Open a DSEC-Semantic sequence folder (layouts in the module docstring).

    Args:
        folder: the sequence folder, e.g. ``zurich_city_00_a``.
        num_classes: 11 or 19 for DSEC-Semantic (picks the ``<n>classes`` folder; label ids are
            checked against it); for the flattened layout any count, or None to skip the check.

    Raises:
        DataError: missing files, label/timestamp count mismatch, unreadable events.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "sequence folder not found")
    events_path, label_dir, stamps_path = _find_layout(folder, num_classes)
    for needed in (events_path, stamps_path):
        if not needed.is_file():
            raise DataError(needed, "file not found")
    # hidden files are temporaries of interrupted writes (vision.atomic), never labels
    label_paths = sorted(p for p in label_dir.glob("*.png") if not p.name.startswith(".")) if label_dir.is_dir() else []
    if not label_paths:
        raise DataError(label_dir, "no label PNGs")
    stamps = read_timestamps(stamps_path)
    if len(stamps) != len(label_paths):
        raise DataError(stamps_path, f"{len(stamps)} timestamps for {len(label_paths)} label files in {label_dir}")
    return DSECSemanticSequence(folder.name, DSECEvents(events_path), label_paths, stamps, num_classes)
