"""DSEC events.h5 writer/reader, label PNGs and DSEC-Semantic sequence folders."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from datamodules.formats.dsec import (
    DSECEvents,
    read_dsec_semantic_sequence,
    read_label_png,
    write_dsec_events,
    write_label_png,
)
from datamodules.formats.event_io import read_events
from datamodules.formats.events_common import EventArray
from vision.errors import DataError
from vision.labels.types import IGNORE_INDEX

T0 = 1_600_000_000_000_000  # an epoch-like absolute start time in µs, as DSEC's t_offset


def stream() -> EventArray:
    """Seven events on an 8x6 sensor over 3.5 ms, absolute µs."""
    t = T0 + np.array([0, 400, 999, 1000, 1500, 2999, 3500])
    return EventArray.from_arrays(x=[0, 1, 2, 3, 4, 5, 7], y=[0, 1, 2, 3, 4, 5, 5], t=t,
                                  p=[1, 0, 1, 0, 1, 0, 1], width=8, height=6)


def test_writer_stores_dsec_layout(tmp_path):
    path = tmp_path / "events.h5"
    write_dsec_events(path, stream())
    with h5py.File(path, "r") as handle:
        assert handle["events/t"].dtype == np.uint32 and handle["events/x"].dtype == np.uint16
        assert handle["events/p"].dtype == np.uint8
        assert int(handle["t_offset"][()]) == T0
        assert handle["events/t"][:].tolist() == [0, 400, 999, 1000, 1500, 2999, 3500]
        # first index with t >= 1000 * ms for ms = 0..4 (last entry = event count)
        assert handle["ms_to_idx"][:].tolist() == [0, 3, 5, 6, 7]
    assert not list(tmp_path.glob("*.tmp*"))  # the temporary file was renamed


def test_slice_time_uses_half_open_windows_in_absolute_time(tmp_path):
    write_dsec_events(tmp_path / "events.h5", stream())
    with DSECEvents(tmp_path / "events.h5") as events:
        assert (events.width, events.height, len(events)) == (8, 6, 7)
        window = events.slice_time(T0 + 999, T0 + 2999)  # 999 <= t < 2999
        assert (window.t - T0).tolist() == [999, 1000, 1500]
        assert window.x.tolist() == [2, 3, 4] and window.p.tolist() == [1, 0, 1]
        assert (events.slice_time(T0 + 3000, T0 + 9000).t - T0).tolist() == [3500]  # past ms_to_idx
        assert len(events.slice_time(T0 - 5000, T0)) == 0  # before the recording
        assert len(events.read_all()) == 7


def test_slice_time_matches_a_full_scan_on_random_windows(tmp_path):
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 50_000, 2000)) + T0
    ev = EventArray.from_arrays(rng.integers(0, 16, 2000), rng.integers(0, 8, 2000), t,
                                rng.integers(0, 2, 2000), width=16, height=8)
    write_dsec_events(tmp_path / "events.h5", ev)
    events = DSECEvents(tmp_path / "events.h5")
    for start in rng.integers(-1000, 52_000, 20):
        end = start + int(rng.integers(1, 7000))
        expected = np.flatnonzero((t >= T0 + start) & (t < T0 + end))
        got = events.slice_time(T0 + start, T0 + end)
        assert got.t.tolist() == t[expected].tolist()
        assert got.x.tolist() == ev.x[expected].tolist()
    clone = pickle.loads(pickle.dumps(events))  # workers get a copy without the open handle
    assert len(clone.slice_time(T0, T0 + 50_000)) == 2000
    events.close()


def test_bad_events_files_raise_data_error(tmp_path):
    path = tmp_path / "events.h5"
    write_dsec_events(path, stream())
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="cut.h5: cannot open HDF5"):
        DSECEvents(tmp_path / "cut.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as handle:
        handle["events/x"] = np.zeros(3, np.uint16)
    with pytest.raises(DataError, match="partial.h5: missing datasets events/y, events/t, events/p, ms_to_idx"):
        DSECEvents(tmp_path / "partial.h5")
    with h5py.File(path, "a") as handle:  # a coordinate beyond the 8x6 sensor
        handle["events/x"][2] = 8
    with pytest.raises(DataError, match="event 2 has x=8 outside the sensor"):
        read_events(path)


def test_label_png_round_trip_maps_ignore(tmp_path):
    mask = np.array([[0, 10, IGNORE_INDEX], [3, 3, 1]])
    write_label_png(tmp_path / "000000.png", mask)
    assert read_label_png(tmp_path / "000000.png", num_classes=11).tolist() == mask.tolist()
    with pytest.raises(DataError, match="class id 10 >= num_classes 5"):
        read_label_png(tmp_path / "000000.png", num_classes=5)
    with pytest.raises(DataError, match="class ids must be in 0..254"):
        write_label_png(tmp_path / "bad.png", np.array([[300]]))


def _labels(folder, count):
    folder.mkdir(parents=True)
    for i in range(count):
        write_label_png(folder / f"{i:06d}.png", np.full((2, 3), i))


def test_dsec_semantic_layout(tmp_path):
    seq = tmp_path / "zurich_city_00_a"
    (seq / "events" / "left").mkdir(parents=True)
    write_dsec_events(seq / "events" / "left" / "events.h5", stream())
    _labels(seq / "semantic" / "11classes" / "data", 2)
    (seq / "semantic" / "timestamps.txt").write_text(f"{T0 + 1000}\n{T0 + 3000}\n")
    sequence = read_dsec_semantic_sequence(seq, num_classes=11)
    assert sequence.name == "zurich_city_00_a" and len(sequence) == 2
    assert sequence.timestamps_us.tolist() == [T0 + 1000, T0 + 3000]
    assert sequence.label(1).tolist() == [[1, 1, 1], [1, 1, 1]]
    before_second_label = sequence.events.slice_time(T0 + 1000, int(sequence.timestamps_us[1]))
    assert (before_second_label.t - T0).tolist() == [1000, 1500, 2999]
    with pytest.raises(DataError, match="no DSEC-Semantic layout"):
        read_dsec_semantic_sequence(seq, num_classes=19)


def test_flattened_synthetic_layout_and_count_mismatch(tmp_path):
    seq = tmp_path / "synthetic_0003"
    seq.mkdir()
    write_dsec_events(seq / "events.h5", stream())
    _labels(seq / "labels", 3)
    (seq / "timestamps.txt").write_text(f"# label times, µs\n{T0 + 1000}\n{T0 + 2000}\n")
    with pytest.raises(DataError, match=r"timestamps.txt: 2 timestamps for 3 label files"):
        read_dsec_semantic_sequence(seq, num_classes=None)
    (seq / "timestamps.txt").write_text(f"{T0 + 1000}\n{T0 + 2000}\n{T0 + 1500}\n")
    with pytest.raises(DataError, match="not increasing at line 3"):
        read_dsec_semantic_sequence(seq, num_classes=None)
    (seq / "timestamps.txt").write_text(f"{T0 + 1000}\n{T0 + 2000}\n{T0 + 3000}\n")
    assert len(read_dsec_semantic_sequence(seq, num_classes=None)) == 3


def test_a_blosc_compressed_file_like_real_dsec_reads_with_hdf5plugin(tmp_path):
    """Real DSEC events.h5 files use the Blosc filter: readable once hdf5plugin (the `dsec` extra) is in."""
    hdf5plugin = pytest.importorskip("hdf5plugin", reason="hdf5plugin (pip install 'sparsevision[dsec]') missing")
    ev, path = stream(), tmp_path / "events.h5"
    t_rel = np.asarray(ev.t, np.int64) - T0
    with h5py.File(path, "w") as handle:
        for name, values, dtype in (("x", ev.x, np.uint16), ("y", ev.y, np.uint16), ("t", t_rel, np.uint32),
                                    ("p", ev.p, np.uint8)):
            handle.create_dataset(f"events/{name}", data=np.asarray(values, dtype), **hdf5plugin.Blosc(cname="zstd"))
        handle.create_dataset("ms_to_idx", data=np.searchsorted(t_rel, np.arange(5) * 1000).astype(np.uint64))
        handle.create_dataset("t_offset", data=np.int64(T0))
        assert handle["events/x"]._filters.keys() >= {"32001"}  # the Blosc filter id, not gzip
    with DSECEvents(path, sensor_size=(6, 8)) as reader:
        window = reader.slice_time(T0 + 1000, T0 + 3000)
    assert window.t.tolist() == [T0 + 1000, T0 + 1500, T0 + 2999]
    assert window.x.tolist() == [3, 4, 5]
