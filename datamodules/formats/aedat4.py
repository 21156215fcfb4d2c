"""iniVation AEDAT 4.0 recordings (DV software, DVXplorer / DAVIS), read with the PyPI ``aedat`` decoder.

An AEDAT4 file interleaves LZ4/zstd-compressed flatbuffer packets of several streams (events,
frames, IMU, triggers). ``aedat.Decoder(path)`` yields one dict per packet (``stream_id`` plus
``events``: a structured array ``t`` uint64 µs, ``x``/``y`` uint16, ``on`` bool), and
``id_to_stream()`` gives each stream's type and, for events, the sensor ``width``/``height``.

Timestamps must be non-decreasing, as DV writes them (the tonic sample file is: measured 0
decreases over 111,954 events); an out-of-order file raises :class:`DataError` like every reader.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from datamodules.formats.events_common import EventArray
from vision.errors import DataError, PathLike

#: What the decoder raises on a corrupt file. Its Rust code also *panics* on some corrupt headers
#: (e.g. a multi-byte character cut in the stream description); pyo3 turns a panic into
#: ``pyo3_runtime.PanicException``, a BaseException that no module exports, matched by name below.
_DECODER_ERRORS = (RuntimeError, OSError, ValueError, UnicodeDecodeError)


def _is_decoder_failure(err: BaseException) -> bool:
    return isinstance(err, _DECODER_ERRORS) or type(err).__name__ == "PanicException"


def _event_stream(path: str, streams: dict, stream_id: Optional[int]) -> tuple[int, dict]:
    events = {sid: info for sid, info in streams.items() if info.get("type") == "events"}
    if not events:
        kinds = sorted({str(info.get("type")) for info in streams.values()})
        raise DataError(path, f"no events stream (streams: {', '.join(kinds) or 'none'})")
    if stream_id is None:
        stream_id = min(events)
    if stream_id not in events:
        raise DataError(path, f"stream {stream_id} is not an events stream (events streams: {sorted(events)})")
    return stream_id, events[stream_id]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def read_aedat4(path: PathLike, stream_id: Optional[int] = None) -> EventArray:
    """Read the events of one stream of an AEDAT4 file into an :class:`EventArray`.

    Args:
        path: the ``.aedat4`` file.
        stream_id: which events stream; default the first one.

    Raises:
        DataError: missing, truncated or corrupt file (the decoder's error is quoted), no events
            stream, no events, or invalid events.
    """
    import aedat  # imported here so that the other readers work without the compiled decoder

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    try:
        decoder = aedat.Decoder(path)
        streams = decoder.id_to_stream()
    except BaseException as err:
        if not _is_decoder_failure(err):
            raise
        raise DataError(path, f"cannot decode AEDAT4 header ({_first_line(err)})") from err
    stream_id, info = _event_stream(path, streams, stream_id)
    try:
        packets = [packet["events"] for packet in decoder
                   if packet["stream_id"] == stream_id and "events" in packet]
    except BaseException as err:  # truncated or corrupt packets
        if not _is_decoder_failure(err):
            raise
        raise DataError(path, f"cannot decode AEDAT4 packets ({_first_line(err)})") from err
    if not packets:
        raise DataError(path, f"events stream {stream_id} holds no events")
    events = np.concatenate(packets)
    width, height = int(info.get("width", 0)), int(info.get("height", 0))
    return EventArray.from_arrays(events["x"], events["y"], events["t"].astype(np.int64), events["on"],
                                  width, height, path)
