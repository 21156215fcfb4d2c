"""Bad event-camera inputs: DSEC HDF5, event NPZ, Prophesee DAT, AEDAT4, label PNGs and timestamps.

Each case breaks a valid file in one way and checks the DataError: its type, the file it names and
the reason, so a user sees ``path: reason`` instead of a traceback from h5py, numpy or a decoder.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from datamodules.formats.aedat4 import read_aedat4
from datamodules.formats.dsec import DSECEvents, read_dsec_semantic_sequence, read_label_png
from datamodules.formats.event_io import read_events
from datamodules.formats.event_npz import read_event_npz
from datamodules.formats.prophesee_dat import read_dat


def _rewrite_h5(path, name, values):
    with h5py.File(path, "r+") as handle:
        del handle[name]
        handle.create_dataset(name, data=values)
    return path


def _events_npz(valid, name="events.npz", **changes):
    """An event NPZ with the fields of a valid one, ``changes`` replacing or (None) removing some."""
    with np.load(valid.event_npz()) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(valid.root / name, **arrays)
    return valid.root / name


# ---------------------------------------------------------------------------------------------- DSEC HDF5
def h5_truncated(valid):
    path = valid.dsec_h5()
    path.write_bytes(path.read_bytes()[:1000])
    return lambda: read_events(path), path


def h5_not_hdf5(valid):
    path = valid.root / "events.h5"
    path.write_text("x,y,t,p\n1,2,3,1\n")
    return lambda: read_events(path), path


def h5_missing_polarity(valid):
    path = valid.dsec_h5()
    with h5py.File(path, "r+") as handle:
        del handle["events/p"]
    return lambda: read_events(path), path


def h5_length_mismatch(valid):
    path = valid.dsec_h5()
    with h5py.File(path, "r") as handle:
        x = handle["events/x"][:-3]
    return lambda: read_events(path), _rewrite_h5(path, "events/x", x)


def h5_decreasing_timestamps(valid):
    path = valid.dsec_h5()
    with h5py.File(path, "r") as handle:
        t = handle["events/t"][:]
    t[50], t[51] = t[51] + 5, t[51]  # event 51 happens before event 50
    return lambda: read_events(path), _rewrite_h5(path, "events/t", t)


def h5_x_outside_sensor(valid):
    path = valid.dsec_h5()
    with h5py.File(path, "r") as handle:
        x = handle["events/x"][:]
    x[7] = 32  # the sensor is 32 pixels wide
    return lambda: read_events(path), _rewrite_h5(path, "events/x", x)


def h5_float_timestamps(valid):
    path = valid.dsec_h5()
    with h5py.File(path, "r") as handle:
        t = handle["events/t"][:].astype(np.float64) + 0.5
    return lambda: read_events(path), _rewrite_h5(path, "events/t", t)


def h5_polarity_three(valid):
    path = valid.dsec_h5()
    with h5py.File(path, "r") as handle:
        p = handle["events/p"][:]
    p[3] = 3
    return lambda: read_events(path), _rewrite_h5(path, "events/p", p)


def h5_ms_to_idx_past_the_events(valid):
    path = valid.dsec_h5()
    return lambda: DSECEvents(path), _rewrite_h5(path, "ms_to_idx", np.array([0, 10, 5000], np.uint64))


# ---------------------------------------------------------------------------------------------- NPZ / NPY
def npz_decreasing_timestamps(valid):
    t = np.arange(200, dtype=np.int64) * 10
    t[120] = 5
    return lambda: read_event_npz(path), (path := _events_npz(valid, t=t))


def npz_y_outside_sensor(valid):
    y = np.zeros(200, np.int64)
    y[9] = -1
    return lambda: read_event_npz(path), (path := _events_npz(valid, y=y))


def npz_missing_polarity(valid):
    return lambda: read_event_npz(path), (path := _events_npz(valid, p=None))


def npz_fractional_microseconds(valid):
    return lambda: read_event_npz(path), (path := _events_npz(valid, t=np.linspace(0.0, 0.02, 200)))


def npz_text_timestamps(valid):
    return lambda: read_event_npz(path), (path := _events_npz(valid, t=np.array(["0"] * 200)))


def npz_float_coordinates(valid):
    return lambda: read_event_npz(path), (path := _events_npz(valid, x=np.full(200, 1.5)))


def npz_no_events(valid):
    empty = np.zeros(0, np.int64)
    return lambda: read_event_npz(path), (path := _events_npz(valid, x=empty, y=empty, t=empty, p=empty))


def npz_truncated(valid):
    path = valid.event_npz()
    path.write_bytes(path.read_bytes()[:300])
    return lambda: read_event_npz(path), path


# ---------------------------------------------------------------------------------------------- Prophesee DAT
def _after_header(data: bytes) -> int:
    """Offset of the event-type byte: just past the ``%`` header lines."""
    position = 0
    while data[position:position + 1] == b"%":
        position = data.index(b"\n", position) + 1
    return position


def dat_truncated_record(valid):
    path = valid.dat()
    path.write_bytes(path.read_bytes()[:-3])
    return lambda: read_dat(path), path


def dat_version_one(valid):
    path = valid.dat()
    path.write_bytes(path.read_bytes().replace(b"% Version 2", b"% Version 1"))
    return lambda: read_dat(path), path


def dat_event_size_twelve(valid):
    path = valid.dat()
    data = bytearray(path.read_bytes())
    data[_after_header(data) + 1] = 12  # the byte after the event type
    path.write_bytes(bytes(data))
    return lambda: read_dat(path), path


def dat_decreasing_timestamps(valid):
    path = valid.dat()
    data = bytearray(path.read_bytes())
    body = _after_header(data) + 2
    data[body + 8 * 100: body + 8 * 100 + 4] = (0).to_bytes(4, "little")  # event 100 at t = 0
    path.write_bytes(bytes(data))
    return lambda: read_dat(path), path


# ---------------------------------------------------------------------------------------------- AEDAT4
def aedat4_empty(valid):
    path = valid.root / "empty.aedat4"
    path.write_bytes(b"")
    return lambda: read_aedat4(path), path


def aedat4_garbage(valid):
    path = valid.root / "garbage.aedat4"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return lambda: read_aedat4(path), path


def aedat4_magic_only(valid):
    path = valid.root / "header_only.aedat4"
    path.write_bytes(b"#!AER-DAT4.0\r\n")
    return lambda: read_aedat4(path), path


def aedat4_missing(valid):
    path = valid.root / "missing.aedat4"
    return lambda: read_aedat4(path), path


# ---------------------------------------------------------------------------------------------- labels
def label_png_in_colour(valid):
    path = valid.root / "colour.png"
    Image.new("RGB", (32, 24), (10, 20, 30)).save(path)
    return lambda: read_label_png(path, num_classes=3), path


def label_png_class_outside_label_map(valid):
    path = valid.label_png()
    ids = np.asarray(Image.open(path)).copy()
    ids[5, 5] = 7
    Image.fromarray(ids).save(path)
    return lambda: read_label_png(path, num_classes=3), path


def label_png_truncated(valid):
    path = valid.label_png()
    path.write_bytes(path.read_bytes()[:60])
    return lambda: read_label_png(path, num_classes=3), path


def timestamps_not_increasing(valid):
    folder = valid.event_sequence(frames=3)
    (folder / "timestamps.txt").write_text("6000\n12000\n9000\n")
    return lambda: read_dsec_semantic_sequence(folder, num_classes=3), folder / "timestamps.txt"


def timestamps_not_numbers(valid):
    folder = valid.event_sequence()
    (folder / "timestamps.txt").write_text("6000\nsix thousand\n")
    return lambda: read_dsec_semantic_sequence(folder, num_classes=3), folder / "timestamps.txt"


def timestamps_fewer_than_labels(valid):
    folder = valid.event_sequence(frames=3)
    (folder / "timestamps.txt").write_text("6000\n12000\n")
    return lambda: read_dsec_semantic_sequence(folder, num_classes=3), folder / "timestamps.txt"


def sequence_without_events(valid):
    folder = valid.event_sequence()
    (folder / "events.h5").rename(folder / "events.h5.bak")
    return lambda: read_dsec_semantic_sequence(folder, num_classes=3), folder


CASES = [
    pytest.param(h5_truncated, "cannot open HDF5 file", id="h5-truncated"),
    pytest.param(h5_not_hdf5, "cannot open HDF5 file", id="h5-not-hdf5"),
    pytest.param(h5_missing_polarity, "missing datasets events/p", id="h5-missing-dataset"),
    pytest.param(h5_length_mismatch, "event datasets have different lengths", id="h5-length-mismatch"),
    pytest.param(h5_decreasing_timestamps, r"timestamps decrease at event 51", id="h5-decreasing-timestamps"),
    pytest.param(h5_x_outside_sensor, r"event 7 has x=32 outside the sensor \(32x24\)", id="h5-x-outside-sensor"),
    pytest.param(h5_float_timestamps, "event datasets must hold integers", id="h5-float-timestamps"),
    pytest.param(h5_polarity_three, "event 3 has polarity 3", id="h5-polarity-three"),
    pytest.param(h5_ms_to_idx_past_the_events, "ms_to_idx is not a non-decreasing index", id="h5-bad-ms-to-idx"),
    pytest.param(npz_decreasing_timestamps, r"timestamps decrease at event 120 \(t\[119\]=1190 > t\[120\]=5\)",
                 id="npz-decreasing-timestamps"),
    pytest.param(npz_y_outside_sensor, "event 9 has y=-1 outside the sensor", id="npz-y-outside-sensor"),
    pytest.param(npz_missing_polarity, "no p field", id="npz-missing-polarity"),
    pytest.param(npz_fractional_microseconds, "not whole microseconds", id="npz-fractional-microseconds"),
    pytest.param(npz_text_timestamps, "timestamps have dtype <U1, expected numbers", id="npz-text-timestamps"),
    pytest.param(npz_float_coordinates, "event field x has dtype float64, expected integers",
                 id="npz-float-coordinates"),
    pytest.param(npz_no_events, "no events", id="npz-empty"),
    pytest.param(npz_truncated, "cannot read numpy events", id="npz-truncated"),
    pytest.param(dat_truncated_record, "truncated file: body of .* bytes is not a multiple of 8",
                 id="dat-truncated"),
    pytest.param(dat_version_one, "DAT version '1' is not supported", id="dat-version-1"),
    pytest.param(dat_event_size_twelve, "event size 12 bytes, expected 8", id="dat-event-size"),
    pytest.param(dat_decreasing_timestamps, "timestamps decrease at event 100", id="dat-decreasing-timestamps"),
    pytest.param(aedat4_empty, "cannot decode AEDAT4 header", id="aedat4-empty"),
    pytest.param(aedat4_garbage, "cannot decode AEDAT4 header", id="aedat4-garbage"),
    pytest.param(aedat4_magic_only, "cannot decode AEDAT4 header", id="aedat4-magic-only"),
    pytest.param(aedat4_missing, "file not found", id="aedat4-missing"),
    pytest.param(label_png_in_colour, "label PNG has mode RGB", id="label-png-rgb"),
    pytest.param(label_png_class_outside_label_map, "class id 7 >= num_classes 3", id="label-png-class-outside-map"),
    pytest.param(label_png_truncated, "cannot read label PNG", id="label-png-truncated"),
    pytest.param(timestamps_not_increasing, "timestamps are not increasing at line 3", id="timestamps-decreasing"),
    pytest.param(timestamps_not_numbers, "cannot read timestamps", id="timestamps-not-numbers"),
    pytest.param(timestamps_fewer_than_labels, "2 timestamps for 3 label files", id="timestamps-label-count-mismatch"),
    pytest.param(sequence_without_events, "no DSEC-Semantic layout", id="sequence-without-events"),
]


@pytest.mark.parametrize(("make", "reason"), CASES)
def test_bad_event_input_raises_data_error_naming_the_file(valid, expect_data_error, make, reason):
    read, path = make(valid)
    expect_data_error(read, path, reason)


def test_truncated_real_aedat4_recording(shared_data, tmp_path, expect_data_error):
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes((shared_data / "event_samples" / "sample.aedat4").read_bytes()[:300_000])
    expect_data_error(lambda: read_aedat4(cut), cut, "cannot decode AEDAT4 packets")


def test_corrupt_real_aedat4_header_is_a_data_error_not_a_decoder_panic(shared_data, tmp_path, expect_data_error):
    data = bytearray((shared_data / "event_samples" / "sample.aedat4").read_bytes())
    start = data.index(b"<dv version")
    data[start + 40: start + 42] = "é".encode()[::-1]  # an invalid UTF-8 pair inside the stream description
    broken = tmp_path / "broken.aedat4"
    broken.write_bytes(bytes(data))
    expect_data_error(lambda: read_aedat4(broken), broken, "cannot decode AEDAT4 header")
