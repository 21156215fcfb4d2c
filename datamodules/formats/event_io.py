"""One entry point for event files: :func:`read_events` picks the reader from the file extension."""

from __future__ import annotations

import os
from pathlib import Path

from datamodules.formats.events_common import EventArray
from vision.errors import DataError, PathLike

#: extension -> reader name, for the error message and the docs
EVENT_EXTENSIONS = {".h5": "DSEC", ".hdf5": "DSEC", ".npz": "NPZ", ".npy": "NPY", ".aedat4": "AEDAT4",
                    ".dat": "Prophesee DAT"}


def read_events(path: PathLike, **options) -> EventArray:
    """Read a whole event file into an :class:`EventArray`.

    ``options`` go to the reader: ``sensor_size`` for DSEC, NPZ/NPY and DAT, ``time_unit`` for
    NPZ/NPY, ``stream_id`` for AEDAT4.

    >>> read_events("recording.mp4")
    Traceback (most recent call last):
    ...
    vision.errors.DataError: recording.mp4: unknown event file extension '.mp4' (known: .aedat4, .dat, .h5, .hdf5, .npy, .npz)
    """
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix not in EVENT_EXTENSIONS:
        raise DataError(path, f"unknown event file extension {suffix!r} (known: {', '.join(sorted(EVENT_EXTENSIONS))})")
    # readers are imported on demand so that e.g. reading a .dat file needs neither h5py nor aedat
    if suffix in (".h5", ".hdf5"):
        from datamodules.formats.dsec import DSECEvents

        with DSECEvents(path, **options) as events:
            return events.read_all()
    if suffix in (".npz", ".npy"):
        from datamodules.formats.event_npz import read_event_npz

        return read_event_npz(path, **options)
    if suffix == ".aedat4":
        from datamodules.formats.aedat4 import read_aedat4

        return read_aedat4(path, **options)
    from datamodules.formats.prophesee_dat import read_dat

    return read_dat(path, **options)
