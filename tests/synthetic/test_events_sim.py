"""The ESIM-style event model, the street sequences and the dataset writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodules.formats.dsec import read_dsec_semantic_sequence
from datamodules.synthetic.events_sim import (
    EVENT_CLASSES,
    EventModel,
    ensure_event_dataset,
    events_from_frames,
    simulate_sequence,
    write_event_dataset,
    write_sequence,
)

EPS = EventModel().log_eps
SMALL = {"duration_s": 0.6, "height": 32, "width": 40, "label_interval_ms": 100, "label_start_ms": 200,
         "label_tail_ms": 200}


def log_ramp_frames(start_log: np.ndarray, deltas: np.ndarray, duration_us: float, steps: int = 4):
    """Frames whose log(I + eps) goes linearly from ``start_log`` to ``start_log + deltas``."""
    for k in range(steps + 1):
        yield k * duration_us / steps, np.exp(start_log + deltas * k / steps) - EPS


def test_linear_log_ramp_gives_floor_of_delta_over_threshold_events_per_pixel():
    deltas = np.array([[0.1, 0.3, 0.55, 0.95, 1.45, -0.3, -0.8]])
    ev = events_from_frames(log_ramp_frames(np.log(0.3), deltas, 10_000), EventModel.ideal(0.25))
    counts = np.bincount(ev.x, minlength=7)
    assert counts.tolist() == [0, 1, 2, 3, 5, 1, 3]  # floor(|delta| / 0.25)
    assert ev.p[ev.x < 5].tolist() == [1] * 11 and ev.p[ev.x >= 5].tolist() == [0] * 4
    # pixel 2 crosses +0.25 and +0.5 of its 0.55 ramp at 10 ms * 0.25/0.55 and 10 ms * 0.5/0.55
    assert ev.t[ev.x == 2].tolist() == [4545, 9090]


def test_refractory_period_holds_a_pixel_in_reset_and_spaces_its_events():
    # log intensity rises 2.51 in 1000 us: a 0.25 crossing every 99.6 us without refractory period
    frames = list(log_ramp_frames(np.log(0.03), np.array([[2.51]]), 1000, steps=1))
    assert len(events_from_frames(frames, EventModel.ideal(0.25))) == 10
    held = events_from_frames(frames, EventModel.ideal(0.25, refractory_us=400))
    # event at 99.6 us, blind until 499.6 us (reference reset there), next crossing 99.6 us later
    assert held.t.tolist() == [99, 599]


def moving_edge_frames(start: float, end: float, duration_us: float, width: int = 30):
    """A bright region (0.8) over 0.2 for columns left of an edge moving from ``start`` to ``end``."""
    steps = int(abs(end - start) / 0.25)
    cols = np.arange(width)
    for k in range(steps + 1):
        edge = start + (end - start) * k / steps
        coverage = np.clip(edge - (cols - 0.5), 0, 1)  # share of pixel [x - 0.5, x + 0.5) left of the edge
        yield k * duration_us / steps, np.tile(0.2 + 0.6 * coverage, (6, 1))


@pytest.mark.parametrize("start, end, polarity", [(5.0, 20.0, 1), (20.0, 5.0, 0)])
def test_moving_edge_makes_events_only_where_the_edge_passes_with_its_polarity(start, end, polarity):
    ev = events_from_frames(moving_edge_frames(start, end, 30_000), EventModel.ideal(0.25))
    assert len(ev) > 0 and set(ev.p.tolist()) == {polarity}
    assert ev.x.min() >= 5 and ev.x.max() <= 20
    edge_at_event = start + (end - start) * ev.t / 30_000
    assert np.abs(edge_at_event - ev.x).max() <= 0.5 + 0.25  # the edge is on the pixel (one frame slack)
    assert np.all(np.bincount(ev.y) == len(ev) // 6)  # every row alike


def test_simulated_sequence_is_sorted_inside_the_sensor_and_reproducible():
    ev, labels = simulate_sequence(3, "train_000", **SMALL)
    again, labels_again = simulate_sequence(3, "train_000", **SMALL)
    other, _ = simulate_sequence(3, "train_001", **SMALL)
    assert len(ev) > 500 and np.all(np.diff(ev.t) >= 0)
    assert ev.x.max() < 40 and ev.y.max() < 32 and set(np.unique(ev.p).tolist()) == {0, 1}
    assert 0 <= ev.t.min() and ev.t.max() <= 600_000
    assert [t for t, _ in labels] == [200_000, 300_000, 400_000]
    assert labels[0][1].shape == (32, 40) and 0 <= labels[0][1].min() and labels[0][1].max() < len(EVENT_CLASSES)
    assert np.array_equal(ev.t, again.t) and np.array_equal(ev.x, again.x) and np.array_equal(ev.p, again.p)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(labels, labels_again))
    assert len(other) != len(ev)


def test_default_model_with_noise_respects_the_refractory_period_per_pixel():
    ev, _ = simulate_sequence(0, "val_000", **SMALL)
    pixel = ev.y.astype(np.int64) * 40 + ev.x
    order = np.lexsort((ev.t, pixel))
    same_pixel = np.diff(pixel[order]) == 0
    assert np.diff(ev.t[order])[same_pixel].min() >= EventModel().refractory_us


def test_written_sequence_reads_back_through_the_dsec_reader(tmp_path):
    ev, labels = simulate_sequence(1, "test_000", **SMALL)
    folder = write_sequence(tmp_path / "test_000", ev, labels)
    sequence = read_dsec_semantic_sequence(folder, num_classes=len(EVENT_CLASSES))
    assert sequence.timestamps_us.tolist() == [200_000, 300_000, 400_000]
    assert all(np.array_equal(sequence.label(i), mask) for i, (_, mask) in enumerate(labels))
    back = sequence.events.read_all()
    assert np.array_equal(back.t, ev.t) and np.array_equal(back.x, ev.x) and np.array_equal(back.p, ev.p)
    assert json.loads((folder / "meta.json").read_text())["classes"] == EVENT_CLASSES


def test_dataset_writer_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEVISION_CACHE", str(tmp_path / "cache"))
    params = {"num_train": 1, "num_val": 1, "num_test": 0, **SMALL}
    folder = ensure_event_dataset(seed=0, **params)
    assert folder.parent == tmp_path / "cache" / "synthetic" / "events" and folder.name.startswith("streets-v1-seed0-")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["splits"] == {"train": ["train_000"], "val": ["val_000"], "test": []}
    assert meta["counts"]["train"]["labels"] == 3
    assert sum(meta["counts"]["train"]["pixels_per_class"].values()) == 3 * 32 * 40
    assert (folder / "train" / "train_000" / "events.h5").is_file() and (folder / "DONE.json").is_file()
    stamp = (folder / "meta.json").stat().st_mtime_ns
    assert ensure_event_dataset(seed=0, **params) == folder and (folder / "meta.json").stat().st_mtime_ns == stamp
    with pytest.raises(TypeError, match="unknown dataset parameters"):
        ensure_event_dataset(seed=0, num_trains=3)
    direct = write_event_dataset(tmp_path / "direct", seed=0, **params)  # the same bytes outside the cache
    assert json.loads((direct / "meta.json").read_text())["counts"] == meta["counts"]
