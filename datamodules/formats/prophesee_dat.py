"""Prophesee DAT v2 event files (ATIS / N-CARS / Gen1 "td.dat").

Layout: text header lines that start with ``%`` (e.g. ``% Version 2``, ``% Width 304``,
``% Height 240`` or ``% geometry 304x240``), then two bytes (event type, event size = 8), then one
8-byte little-endian record per event: ``uint32 t`` (µs) and ``uint32 addr`` with
``x = addr & 0x3FFF``, ``y = (addr >> 14) & 0x3FFF``, ``p = (addr >> 28) & 1``.

Hand-written because the format is a fixed-size record array that numpy reads in one call; the
official reader ships with Prophesee's Metavision SDK, which is not on PyPI for every platform.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np

from datamodules.formats.events_common import EventArray, resolve_sensor_size
from vision.atomic import atomic_write
from vision.errors import DataError, PathLike

RECORD = np.dtype([("t", "<u4"), ("addr", "<u4")])
_COORD_BITS = 14


def _parse_header(path: str, data: bytes) -> tuple[dict[str, str], int]:
    """The ``% key value`` header lines as a dict, and the offset of the type/size bytes."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] == ord("%"):
        end = data.find(b"\n", pos)
        if end < 0:
            raise DataError(path, "truncated header: a '%' line has no end")
        line = data[pos + 1:end].decode("latin-1").strip()
        key, _, value = line.partition(" ")
        fields[key.lower()] = value.strip()
        pos = end + 1
    return fields, pos


def _header_size(fields: dict[str, str]) -> Optional[tuple[int, int]]:
    if "width" in fields and "height" in fields:
        return int(fields["width"]), int(fields["height"])
    match = re.fullmatch(r"(\d+)x(\d+)", fields.get("geometry", ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def read_dat(path: PathLike, sensor_size: Optional[tuple[int, int]] = None) -> EventArray:
    """Read a DAT v2 file into an :class:`EventArray`.

    Args:
        path: the ``.dat`` file.
        sensor_size: ``(width, height)``; default from the header, else max coordinate + 1 with a
            warning (N-CARS files store no size).

    Raises:
        DataError: unreadable file, version other than 2, event size other than 8, a body that is
            not a whole number of records (truncated file), no events, or invalid events.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from err
    fields, pos = _parse_header(path, data)
    version = fields.get("version", "0")
    if version.split(".")[0] != "2":
        raise DataError(path, f"DAT version {version!r} is not supported (only version 2)")
    if len(data) < pos + 2:
        raise DataError(path, "truncated file: no event type/size bytes after the header")
    event_size = data[pos + 1]
    if event_size != RECORD.itemsize:
        raise DataError(path, f"event size {event_size} bytes, expected {RECORD.itemsize}")
    body = len(data) - pos - 2
    if body % RECORD.itemsize:
        raise DataError(path, f"truncated file: body of {body} bytes is not a multiple of {RECORD.itemsize}")
    try:
        records = np.frombuffer(data, dtype=RECORD, offset=pos + 2)
        width, height = _header_size(fields) or (None, None)
    except ValueError as err:
        raise DataError(path, f"malformed header or body ({err})") from err
    addr = records["addr"]
    x = addr & 0x3FFF
    y = (addr >> _COORD_BITS) & 0x3FFF
    p = (addr >> 28) & 1
    stored = (width, height) if width is not None else None
    width, height = resolve_sensor_size(path, x, y, stored, sensor_size)
    return EventArray.from_arrays(x, y, records["t"], p, width, height, path)


def write_dat(path: PathLike, ev: EventArray) -> None:
    """Write ``ev`` as a DAT v2 file (header with version and size), atomically (temp + rename).

    Raises:
        DataError: timestamps outside uint32 µs or coordinates beyond 14 bits.
    """
    path = os.fspath(path)
    t = np.asarray(ev.t, dtype=np.int64)
    if len(t) and (t.min() < 0 or t.max() > np.iinfo(np.uint32).max):
        raise DataError(path, "timestamps do not fit DAT's uint32 microseconds")
    if max(ev.width, ev.height) > 1 << _COORD_BITS:
        raise DataError(path, f"sensor {ev.width}x{ev.height} exceeds DAT's 14-bit coordinates")
    records = np.empty(len(t), dtype=RECORD)
    records["t"] = t
    records["addr"] = (np.asarray(ev.x, np.uint32) | (np.asarray(ev.y, np.uint32) << _COORD_BITS)
                       | (np.asarray(ev.p, np.uint32) << 28))
    header = (f"% Data file containing Event2D events.\n% Version 2\n"
              f"% Width {ev.width}\n% Height {ev.height}\n").encode("ascii")
    atomic_write(path, lambda handle: handle.write(header + bytes([0, RECORD.itemsize]) + records.tobytes()))
