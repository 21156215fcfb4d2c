"""EventArray validation and slicing, and the NPZ/NPY, Prophesee DAT and AEDAT4 readers."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.formats.aedat4 import read_aedat4
from datamodules.formats.event_io import read_events
from datamodules.formats.event_npz import read_event_npz, write_event_npz
from datamodules.formats.events_common import (
    EventArray,
    reversed_stream,
    slice_by_count,
    slice_by_time,
    validate_events,
)
from datamodules.formats.prophesee_dat import read_dat, write_dat
from vision.errors import DataError


def small_stream() -> EventArray:
    """Six events on a 4x3 sensor at t = 10, 20, 20, 30, 40, 50 µs."""
    return EventArray.from_arrays(x=[0, 1, 2, 3, 0, 1], y=[0, 1, 2, 0, 1, 2], t=[10, 20, 20, 30, 40, 50],
                                  p=[1, 0, 1, 1, 0, 0], width=4, height=3, source_path="six.npz")


# --- EventArray and validation --------------------------------------------------------------------

def test_from_arrays_normalises_minus_one_polarity_and_dtypes():
    ev = EventArray.from_arrays([3, 0], [2, 1], [5, 7], [-1, 1], width=4, height=3)
    assert ev.p.tolist() == [0, 1] and ev.p.dtype == np.int8
    assert ev.x.dtype == np.uint16 and ev.t.dtype == np.int64
    assert EventArray.from_arrays([0], [0], [1], [True], 1, 1).p.tolist() == [1]


@pytest.mark.parametrize(("fields", "message"), [
    (dict(t=[10, 30, 20, 40]), "timestamps decrease at event 2"),
    (dict(x=[0, 1, 4, 0]), "event 2 has x=4 outside the sensor (4x3)"),
    (dict(y=[0, -1, 0, 0]), "event 1 has y=-1 outside the sensor"),
    (dict(p=[0, 1, 2, 1]), "event 2 has polarity 2"),
    (dict(p=[0, -1, 1, 1]), "polarity mixes 0 and -1"),
    (dict(t=[10, 20, 30]), "different lengths"),
    (dict(x=[], y=[], t=[], p=[]), "no events"),
])
def test_validate_names_the_problem_and_the_file(fields, message):
    columns = dict(x=[0, 1, 2, 3], y=[0, 1, 2, 0], t=[10, 20, 30, 40], p=[0, 1, 1, 0]) | fields
    with pytest.raises(DataError, match="bad.npz: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        EventArray.from_arrays(**columns, width=4, height=3, source_path="bad.npz")


def test_validate_accepts_a_valid_stream_and_an_allowed_empty_one():
    validate_events(small_stream())
    empty = small_stream().select(slice(0, 0))
    validate_events(empty, allow_empty=True)
    with pytest.raises(DataError, match="no events"):
        validate_events(empty)


# --- slicing ---------------------------------------------------------------------------------------

def test_slice_by_time_is_half_open():
    window = slice_by_time(small_stream(), t_end=40, duration_us=20)  # 20 <= t < 40
    assert window.t.tolist() == [20, 20, 30]
    assert window.x.tolist() == [1, 2, 3]


def test_slice_by_count_takes_the_last_events_before_t_end():
    ev = small_stream()
    assert slice_by_count(ev, t_end=40, count=2).t.tolist() == [20, 30]
    assert slice_by_count(ev, t_end=40, count=100).t.tolist() == [10, 20, 20, 30]  # stream starts later
    assert len(slice_by_count(ev, t_end=10, count=3)) == 0


def test_reversed_stream_mirrors_the_events_after_the_label_into_the_forward_window():
    ev = small_stream()
    back = reversed_stream(ev, t_start=30, duration_us=20)  # events at t = 30, 40 (50 is outside)
    # t' = 2 * 30 - 1 - t: 40 -> 19, 30 -> 29; the event at the label time becomes the latest one
    assert back.t.tolist() == [19, 29]
    assert back.x.tolist() == [0, 3] and back.y.tolist() == [1, 0]
    assert back.p.tolist() == [1, 0]  # p' = 1 - p
    forward = slice_by_time(ev, t_end=30, duration_us=20)
    assert forward.t.min() >= 10 and back.t.min() >= 30 - 20 and back.t.max() < 30  # same window
    validate_events(back)
    assert ev.t.tolist() == [10, 20, 20, 30, 40, 50] and ev.p.tolist() == [1, 0, 1, 1, 0, 0]


def test_reversed_stream_of_an_empty_window_is_empty():
    assert len(reversed_stream(small_stream(), t_start=0, duration_us=5)) == 0


# --- NPZ / NPY ------------------------------------------------------------------------------------

def test_npz_round_trip_keeps_everything(tmp_path):
    path = tmp_path / "six.npz"
    write_event_npz(path, small_stream())
    ev = read_event_npz(path)
    assert (ev.width, ev.height) == (4, 3)
    assert ev.t.tolist() == [10, 20, 20, 30, 40, 50] and ev.p.tolist() == [1, 0, 1, 1, 0, 0]


def test_npy_structured_array_with_aliases_in_any_order(tmp_path):
    events = np.zeros(3, dtype=[("polarity", "i1"), ("ts", "<f8"), ("y", "<u2"), ("x", "<u2")])
    events["x"], events["y"] = [5, 6, 7], [1, 2, 3]
    events["ts"], events["polarity"] = [0.001, 0.002, 0.0025], [-1, 1, 1]
    path = tmp_path / "tonic_style.npy"
    np.save(path, events)
    ev = read_events(path, sensor_size=(10, 8), time_unit="s")
    assert ev.t.tolist() == [1000, 2000, 2500] and ev.p.tolist() == [0, 1, 1]
    assert (ev.width, ev.height) == (10, 8)


def test_npz_sensor_size_entry_and_inference_warning(tmp_path):
    path = tmp_path / "sized.npz"
    np.savez(path, x=[1, 2], y=[0, 5], t=[0, 1], p=[0, 1], sensor_size=[346, 260, 2])
    assert (read_event_npz(path).width, read_event_npz(path).height) == (346, 260)
    np.savez(path, x=[1, 2], y=[0, 5], t=[0, 1], p=[0, 1])
    with pytest.warns(UserWarning, match="max coordinate"):
        assert (read_event_npz(path).width, read_event_npz(path).height) == (3, 6)


def test_npz_errors_name_the_file(tmp_path):
    missing_p = tmp_path / "no_p.npz"
    np.savez(missing_p, x=[1], y=[1], t=[1], width=4, height=4)
    with pytest.raises(DataError, match=r"no_p.npz: no p field"):
        read_event_npz(missing_p)
    seconds = tmp_path / "seconds.npz"
    np.savez(seconds, x=[1], y=[1], t=[0.5], p=[1], width=4, height=4)
    with pytest.raises(DataError, match="not whole microseconds"):
        read_event_npz(seconds)
    truncated = tmp_path / "cut.npz"
    write_event_npz(truncated, small_stream())
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(DataError, match="cut.npz: cannot read"):
        read_event_npz(truncated)


# --- Prophesee DAT --------------------------------------------------------------------------------

def test_dat_round_trip(tmp_path):
    path = tmp_path / "six.dat"
    write_dat(path, small_stream())
    ev = read_dat(path)
    assert (ev.width, ev.height) == (4, 3)
    assert ev.x.tolist() == [0, 1, 2, 3, 0, 1] and ev.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert ev.t.tolist() == [10, 20, 20, 30, 40, 50] and ev.p.tolist() == [1, 0, 1, 1, 0, 0]
    assert path.stat().st_size == len(b"% Data file containing Event2D events.\n% Version 2\n"
                                      b"% Width 4\n% Height 3\n") + 2 + 6 * 8


def test_dat_truncated_body_and_bad_version(tmp_path):
    path = tmp_path / "cut.dat"
    write_dat(path, small_stream())
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"cut.dat: truncated file: body of 45 bytes is not a multiple of 8"):
        read_dat(path)
    old = tmp_path / "old.dat"
    old.write_bytes(b"% Version 1\n\x00\x08" + bytes(8))
    with pytest.raises(DataError, match="version '1' is not supported"):
        read_dat(old)


def test_real_ncars_dat_sample(shared_data):
    path = shared_data / "event_samples" / "sample_ncars.dat"
    with pytest.warns(UserWarning, match="no sensor size"):  # N-CARS headers store no size
        ev = read_dat(path)
    assert len(ev) == 2009
    assert ev.t[0] == 0 and ev.t[-1] == 99952  # 100 ms sample
    # first record: t = 0, addr = 0x00020019 -> x = 0x19 = 25, y = 0x20000 >> 14 = 8, p = 0
    assert (ev.x[0], ev.y[0], ev.p[0]) == (25, 8, 0)
    assert int(ev.p.sum()) == 1350 and (ev.width, ev.height) == (78, 42)
    assert read_dat(path, sensor_size=(304, 240)).width == 304  # N-CARS' ATIS sensor


# --- AEDAT4 ---------------------------------------------------------------------------------------

def test_real_aedat4_sample(shared_data):
    ev = read_events(shared_data / "event_samples" / "sample.aedat4")
    assert (ev.width, ev.height) == (320, 240)  # DVXplorer
    assert 110_000 <= len(ev) <= 120_000  # 111,954 in the tonic sample
    assert ev.x.max() < 320 and ev.y.max() < 240
    assert np.all(np.diff(ev.t) >= 0)
    assert 0.45 < ev.p.mean() < 0.55  # roughly as many ON as OFF events
    assert 0.5e6 < ev.duration_us < 0.7e6  # about 0.59 s


def test_truncated_aedat4_raises(shared_data, tmp_path):
    data = (shared_data / "event_samples" / "sample.aedat4").read_bytes()
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.aedat4: cannot decode AEDAT4"):
        read_aedat4(cut)


def test_aedat4_missing_or_garbage_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_aedat4(tmp_path / "none.aedat4")
    garbage = tmp_path / "garbage.aedat4"
    garbage.write_bytes(b"not an aedat file at all")
    with pytest.raises(DataError, match="garbage.aedat4: cannot decode"):
        read_aedat4(garbage)


def test_read_events_rejects_unknown_extensions():
    with pytest.raises(DataError, match=r"clip.mp4: unknown event file extension '.mp4'"):
        read_events("clip.mp4")
