"""Events stored as numpy files: ``.npy`` structured arrays and ``.npz`` archives.

Accepted layouts:

* ``.npy`` holding a structured array with fields x, y, t, p in any order (as tonic stores events);
* ``.npz`` with one structured array (any key, e.g. ``events``), or separate 1-D arrays per field.

Field names may use common aliases (``ts``/``timestamp``, ``pol``/``polarity``/``on``...). The
sensor size comes from the ``sensor_size`` argument, else the archive's ``width``/``height`` or
``sensor_size`` (``(W, H)`` or tonic's ``(W, H, P)``) entries, else max coordinate + 1 with a warning.
Timestamps are microseconds unless ``time_unit`` says otherwise.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from datamodules.formats.events_common import EventArray, resolve_sensor_size
from vision.atomic import atomic_write
from vision.errors import DataError, PathLike

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "x": ("x", "xs", "col"),
    "y": ("y", "ys", "row"),
    "t": ("t", "ts", "timestamp", "timestamps", "time", "times"),
    "p": ("p", "pol", "polarity", "polarities", "ps", "on"),
}
TIME_UNIT_TO_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "ns": 1e-3}


def _pick_fields(path: str, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    lower = {name.lower(): name for name in columns}
    picked = {}
    for field, aliases in FIELD_ALIASES.items():
        found = next((lower[a] for a in aliases if a in lower), None)
        if found is None:
            raise DataError(path, f"no {field} field (looked for {', '.join(aliases)}; "
                                  f"found {', '.join(sorted(columns))})")
        picked[field] = np.asarray(columns[found]).reshape(-1)
    return picked


def _to_microseconds(path: str, t: np.ndarray, time_unit: str) -> np.ndarray:
    """Integer µs; floats (except ns, which are rounded) must land on whole microseconds, else the
    unit is probably wrong."""
    if time_unit not in TIME_UNIT_TO_US:
        raise ValueError(f"time_unit must be one of {sorted(TIME_UNIT_TO_US)}, got {time_unit!r}")
    scale = TIME_UNIT_TO_US[time_unit]
    if t.dtype.kind not in "iuf":
        raise DataError(path, f"timestamps have dtype {t.dtype}, expected numbers")
    if t.dtype.kind in "iu":  # stay in integers: float64 cannot hold epoch nanoseconds exactly
        return t.astype(np.int64) * int(scale) if scale >= 1 else (t.astype(np.int64) + 500) // 1000
    scaled = t.astype(np.float64) * scale
    rounded = np.rint(scaled)
    if not np.all(np.isfinite(scaled)) or (
            time_unit != "ns" and np.abs(scaled - rounded).max(initial=0.0) > 1e-3):
        raise DataError(path, f"timestamps are not whole microseconds in unit {time_unit!r}; "
                              "pass time_unit='s' or 'ms' if they are seconds or milliseconds")
    return rounded.astype(np.int64)


def _stored_size(archive: dict[str, np.ndarray]) -> Optional[tuple[int, int]]:
    if "width" in archive and "height" in archive:
        return int(archive["width"]), int(archive["height"])
    if "sensor_size" in archive:
        size = np.asarray(archive["sensor_size"]).reshape(-1)
        return int(size[0]), int(size[1])
    return None


def _load(path: str) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"events": loaded}
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except Exception as err:  # zip, zlib and .npy header errors all mean "unreadable"
        raise DataError(path, f"cannot read numpy events ({type(err).__name__}: {err})") from err


def _columns(path: str, archive: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    structured = [key for key, value in archive.items() if value.dtype.names]
    if structured:
        array = archive[structured[0]]
        return {name: array[name] for name in array.dtype.names}
    return archive


def read_event_npz(path: PathLike, sensor_size: Optional[tuple[int, int]] = None,
                   time_unit: str = "us") -> EventArray:
    """Read events from ``.npy`` / ``.npz`` (layouts in the module docstring).

    Args:
        path: the file.
        sensor_size: ``(width, height)``; overrides what the file stores.
        time_unit: unit of the stored timestamps, one of ``us``, ``ms``, ``s``, ``ns``.

    Raises:
        DataError: unreadable file, missing fields, fractional µs timestamps, invalid events.
    """
    path = os.fspath(path)
    archive = _load(path)
    fields = _pick_fields(path, _columns(path, archive))
    try:
        stored = _stored_size(archive)
    except (TypeError, ValueError, IndexError) as err:
        raise DataError(path, f"malformed sensor size entry ({err})") from err
    t = _to_microseconds(path, fields["t"], time_unit)
    width, height = resolve_sensor_size(path, fields["x"], fields["y"], stored, sensor_size)
    return EventArray.from_arrays(fields["x"], fields["y"], t, fields["p"], width, height, path)


def write_event_npz(path: PathLike, ev: EventArray) -> None:
    """Write ``ev`` as an ``.npz`` with arrays x, y, t, p, width, height (atomically)."""
    atomic_write(path, lambda handle: np.savez(handle, x=ev.x, y=ev.y, t=ev.t, p=ev.p, width=np.int64(ev.width),
                                              height=np.int64(ev.height)))
