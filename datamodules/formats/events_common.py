"""The in-memory event stream shared by every event-camera reader, its validation and time slicing.

An event camera reports a stream of events ``(x, y, t, p)``: pixel column, pixel row, timestamp and
polarity (brightness went up or down). Every reader in :mod:`datamodules.formats` returns an
:class:`EventArray` with one fixed encoding, whatever the file used:

* ``x, y``: ``(N,)`` uint16 pixel coordinates, ``0 <= x < width``, ``0 <= y < height``;
* ``t``: ``(N,)`` int64 microseconds, non-decreasing;
* ``p``: ``(N,)`` int8 in ``{0, 1}`` (0 = OFF / darker, 1 = ON / brighter). Files that store
  ``{-1, 1}`` are normalised with ``-1 -> 0``; booleans map ``False -> 0``.

Time windows are half-open, ``t_start <= t < t_end``, as in DSEC's event slicer, so consecutive
windows never share an event and the event at a label's exact timestamp belongs to the stream
*after* the label (see :func:`reversed_stream`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vision.errors import DataError, PathLike


@dataclass
class EventArray:
    """An event stream on a ``width x height`` sensor (encoding in the module docstring).

    Build one from raw arrays with :meth:`from_arrays`, which validates and normalises; the plain
    constructor only wraps arrays that are already in the canonical encoding (e.g. slices).

    >>> ev = EventArray.from_arrays([0, 3], [1, 2], [10, 20], [-1, 1], width=4, height=3)
    >>> ev.p.tolist(), ev.t.dtype, len(ev), ev.duration_us
    ([0, 1], dtype('int64'), 2, 10)
    """

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    width: int
    height: int
    source_path: str = "<memory>"

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def duration_us(self) -> int:
        """Time from the first to the last event (0 for fewer than two events)."""
        return int(self.t[-1] - self.t[0]) if len(self) > 1 else 0

    def select(self, index) -> EventArray:
        """The events at ``index`` (a slice keeps views; a mask or integer array copies)."""
        return EventArray(self.x[index], self.y[index], self.t[index], self.p[index],
                          self.width, self.height, self.source_path)

    @classmethod
    def from_arrays(cls, x, y, t, p, width: int, height: int, source_path: PathLike = "<memory>",
                    allow_empty: bool = False) -> EventArray:
        """Validate raw arrays (any integer dtypes, polarity ``{0,1}``, ``{-1,1}`` or bool) and
        return the canonical :class:`EventArray`; raises :class:`DataError` naming ``source_path``."""
        path = os.fspath(source_path)
        raw = cls(*(np.asarray(a).reshape(-1) for a in (x, y, t, p)), int(width), int(height), path)
        validate_events(raw, path, allow_empty=allow_empty)
        return cls(raw.x.astype(np.uint16), raw.y.astype(np.uint16), raw.t.astype(np.int64),
                   normalise_polarity(raw.p), raw.width, raw.height, path)


def normalise_polarity(p: np.ndarray) -> np.ndarray:
    """``(N,)`` polarity in ``{0,1}``, ``{-1,1}`` or bool -> int8 ``{0,1}`` (``-1 -> 0``)."""
    return (np.asarray(p) > 0).astype(np.int8)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_dtypes(ev: EventArray, path: str) -> None:
    for name in ("x", "y", "t", "p"):
        array = getattr(ev, name)
        if array.dtype.kind not in "iub":
            raise DataError(path, f"event field {name} has dtype {array.dtype}, expected integers")


def validate_events(ev: EventArray, path: Optional[PathLike] = None, allow_empty: bool = False) -> None:
    """Raise :class:`DataError` if ``ev`` is not a valid stream; return None otherwise.

    Checks, in order: equal lengths, not empty (unless ``allow_empty``), integer fields, a positive
    sensor size, coordinates inside the sensor (names one offender), polarity values in
    ``{0, 1, -1}`` and not mixing 0 with -1, non-decreasing timestamps (names the first index ``i``
    with ``t[i] < t[i-1]``).
    """
    path = os.fspath(path) if path is not None else ev.source_path
    lengths = {name: int(np.asarray(getattr(ev, name)).shape[0]) for name in ("x", "y", "t", "p")}
    if len(set(lengths.values())) != 1:
        raise DataError(path, f"event fields have different lengths {lengths}")
    if lengths["t"] == 0:
        if allow_empty:
            return
        raise DataError(path, "no events")
    _check_dtypes(ev, path)
    if ev.width <= 0 or ev.height <= 0:
        raise DataError(path, f"sensor size {ev.width}x{ev.height} is not positive")
    for name, size in (("x", ev.width), ("y", ev.height)):
        values = getattr(ev, name).astype(np.int64, copy=False)
        outside = (values < 0) | (values >= size)
        if outside.any():
            i = _first_bad(outside)
            raise DataError(path, f"event {i} has {name}={values[i]} outside the sensor "
                                  f"({ev.width}x{ev.height}); {int(outside.sum())} events outside")
    _check_polarity(ev.p, path)
    t = ev.t.astype(np.int64, copy=False)
    decreasing = t[1:] < t[:-1]
    if decreasing.any():
        i = _first_bad(decreasing) + 1
        raise DataError(path, f"timestamps decrease at event {i} (t[{i - 1}]={t[i - 1]} > t[{i}]={t[i]}); "
                              f"{int(decreasing.sum())} decreases in total")


def _check_polarity(p: np.ndarray, path: str) -> None:
    if p.dtype.kind == "b":
        return
    off_minus, off_zero = p == -1, p == 0  # elementwise, not np.unique: no sort of a long stream
    bad = ~(off_minus | off_zero | (p == 1))
    if bad.any():
        i = _first_bad(bad)
        raise DataError(path, f"event {i} has polarity {p[i]}; expected values in {{0, 1}} or {{-1, 1}}")
    if off_minus.any() and off_zero.any():
        raise DataError(path, "polarity mixes 0 and -1, so OFF events are ambiguous")


def slice_by_time(ev: EventArray, t_end: int, duration_us: int) -> EventArray:
    """The events with ``t_end - duration_us <= t < t_end`` (binary search; views, no copy)."""
    if duration_us <= 0:
        raise ValueError(f"duration_us must be positive, got {duration_us}")
    start, stop = np.searchsorted(ev.t, [int(t_end) - int(duration_us), int(t_end)], side="left")
    return ev.select(slice(int(start), int(stop)))


def slice_by_count(ev: EventArray, t_end: int, count: int) -> EventArray:
    """The last ``count`` events with ``t < t_end`` (fewer when the stream starts later)."""
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    stop = int(np.searchsorted(ev.t, int(t_end), side="left"))
    return ev.select(slice(max(0, stop - int(count)), stop))


def reversed_stream(ev: EventArray, t_start: int, duration_us: int) -> EventArray:
    """The events *after* a label time, mirrored in time so that they end at the label time.

    EV-WSSS (Cho et al., "Finding Meaning in Points: Weakly Supervised Semantic Segmentation for Event Cameras", ECCV 2024)
    gives its second student the events that follow the label timestamp, played backwards, so both
    students see a stream whose most recent event is the one nearest the label. For the events with
    ``t_start <= t < t_start + duration_us`` this returns, in reverse order:

    * ``t' = 2 * t_start - 1 - t``: a mirror about the label time, shifted by 1 µs so that the
      result lies in ``[t_start - duration_us, t_start)``, exactly the window of the forward stream
      ``slice_by_time(ev, t_start, duration_us)``; the event at ``t_start`` becomes the last event.
    * ``p' = 1 - p``: played backwards, a brightness increase is a decrease.

    Timestamps stay non-decreasing, so the result is a valid :class:`EventArray`.

    >>> ev = EventArray.from_arrays([0, 1, 2], [0, 0, 0], [90, 100, 130], [1, 1, 0], width=3, height=1)
    >>> back = reversed_stream(ev, t_start=100, duration_us=50)
    >>> back.t.tolist(), back.x.tolist(), back.p.tolist()
    ([69, 99], [2, 1], [1, 0])
    """
    if duration_us <= 0:
        raise ValueError(f"duration_us must be positive, got {duration_us}")
    start, stop = np.searchsorted(ev.t, [int(t_start), int(t_start) + int(duration_us)], side="left")
    order = np.arange(int(stop) - 1, int(start) - 1, -1)
    t = (2 * int(t_start) - 1) - ev.t[order]
    p = (1 - ev.p[order]).astype(np.int8)
    return EventArray(ev.x[order], ev.y[order], t.astype(np.int64), p,
                      ev.width, ev.height, ev.source_path)


def infer_sensor_size(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` as the largest coordinate + 1, for files that do not store a size."""
    if len(x) == 0:
        return 1, 1
    return int(np.max(x)) + 1, int(np.max(y)) + 1


def resolve_sensor_size(path: PathLike, x: np.ndarray, y: np.ndarray, stored: Optional[tuple[int, int]],
                        given: Optional[tuple[int, int]]) -> tuple[int, int]:
    """Sensor ``(width, height)``: the caller's ``given`` size, else the file's ``stored`` one, else
    inferred from the coordinates with a warning (a smaller sensor than the real one is likely)."""
    if given is not None:
        return int(given[0]), int(given[1])
    if stored is not None:
        return int(stored[0]), int(stored[1])
    width, height = infer_sensor_size(x, y)
    warnings.warn(f"{os.fspath(path)}: no sensor size in the file; using max coordinate + 1 = "
                  f"{width}x{height} (pass sensor_size=(width, height) to set it)", stacklevel=3)
    return width, height
