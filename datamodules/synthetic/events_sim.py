"""An event-camera simulator and the synthetic street event dataset (the embedded default event data).

Event model (ESIM: Rebecq et al., "ESIM: an Open Event Camera Simulator", CoRL 2018; refractory
period and noise as in v2e, Hu et al., CVPRW 2021). Each pixel remembers the log intensity
``L = log(I + eps)`` at its last event, the reference. Between two rendered frames ``L`` is
interpolated linearly in time; each time it reaches ``reference + C_on`` (ON, p = 1) or
``reference - C_off`` (OFF, p = 0) an event is emitted at the interpolated time and the reference
moves to the crossed level. Thresholds differ per pixel (``C ~ N(C0, sigma_C)``). After an event a
pixel is held in reset for the refractory period: it emits nothing, and its reference is the log
intensity at the moment it is released. Background-activity noise (Poisson, per pixel) and a few
hot pixels are added. Frames are rendered at adaptive times so that nothing moves more than
``max_px_per_step`` pixels between two renders (ESIM's optical-flow-based adaptive sampling).

Dataset layout (read back by :func:`datamodules.formats.dsec.read_dsec_semantic_sequence`)::

    <out_dir>/meta.json                      classes, parameters, per-split counts
    <out_dir>/{train,val,test}/<split>_<NNN>/events.h5       DSEC events, t_offset = 0, times in µs
                                             labels/000000.png ...  class ids, 255 = ignore
                                             timestamps.txt  one µs label time per line
                                             meta.json       classes, size, counts
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from scipy import ndimage

from datamodules.formats.dsec import write_dsec_events, write_label_png
from datamodules.formats.events_common import EventArray
from datamodules.synthetic.cache import build_once, dataset_dir
from datamodules.synthetic.event_scenes import EVENT_CLASSES, StreetScene, make_street_scene
from vision.labels.seeding import sample_rng

__all__ = ["EVENT_CLASSES", "EventModel", "EventSimulator", "events_from_frames", "simulate_sequence",
           "write_sequence", "write_event_dataset", "ensure_event_dataset"]

EVENTS_VERSION = 1
GENERATOR = "streets"
MAX_CROSSINGS_PER_STEP = 1000  # bound of the inner loop; a pixel never fires this often in one step
DATASET_DEFAULTS: dict[str, Any] = {"num_train": 24, "num_val": 6, "num_test": 6, "height": 128, "width": 160,
                                    "duration_s": 2.5, "label_interval_ms": 100, "label_start_ms": 300,
                                    "label_tail_ms": 300}


@dataclass(frozen=True)
class EventModel:
    """Pixel parameters of the simulated sensor.

    Args:
        contrast_on, contrast_off: mean thresholds ``C0`` in log intensity (ON / OFF).
        contrast_sigma: per-pixel spread of the thresholds (clipped at 0.05).
        refractory_us: time a pixel stays blind after an event, µs.
        noise_rate_hz: background-activity events per pixel per second.
        hot_pixel_fraction, hot_pixel_rate_hz: share of pixels that fire at a high rate, and the rate.
        log_eps: offset in ``log(I + eps)``, so that black pixels do not reach ``log 0``.
    """

    contrast_on: float = 0.25
    contrast_off: float = 0.25
    contrast_sigma: float = 0.03
    refractory_us: int = 100
    noise_rate_hz: float = 0.1
    hot_pixel_fraction: float = 2e-4
    hot_pixel_rate_hz: float = 50.0
    log_eps: float = 0.02

    @classmethod
    def ideal(cls, contrast: float = 0.25, refractory_us: int = 0) -> EventModel:
        """Equal thresholds everywhere, no noise: what a hand-computed test expects."""
        return cls(contrast, contrast, 0.0, refractory_us, 0.0, 0.0, 0.0)


class EventSimulator:
    """ESIM-style event generation from frames given one at a time (module docstring).

    Args:
        frame: ``(H, W)`` first intensity frame in [0, 1]; it sets the references, no events.
        t_us: its time (µs, float allowed).
        model: the sensor; rng: draws thresholds and noise.
    """

    def __init__(self, frame: np.ndarray, t_us: float, model: EventModel, rng: np.random.Generator):
        self.model, self.rng = model, rng
        self.height, self.width = frame.shape
        self.t_first = self.t_last = float(t_us)
        self.log = self._log(frame)
        self.reference = self.log.copy()
        self.hold_end = np.full(self.log.shape, -np.inf)  # µs until which a pixel is held in reset
        self.c_on, self.c_off = (np.maximum(rng.normal(c, model.contrast_sigma, self.log.shape), 0.05)
                                 for c in (model.contrast_on, model.contrast_off))
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def _log(self, frame: np.ndarray) -> np.ndarray:
        return np.log(np.asarray(frame, np.float64).reshape(-1) + self.model.log_eps)

    def step(self, frame: np.ndarray, t_us: float) -> None:
        """Emit the events between the previous frame and ``frame`` at ``t_us`` (> previous time)."""
        t0, t1 = self.t_last, float(t_us)
        if t1 <= t0:
            raise ValueError(f"frame times must increase, got {t1} after {t0}")
        l0, l1 = self.log, self._log(frame)
        slope = (l1 - l0) / (t1 - t0)  # log intensity per µs on this step
        released = (self.hold_end > t0) & (self.hold_end < t1)  # reset ends inside the step
        self.reference[released] = l0[released] + slope[released] * (self.hold_end[released] - t0)
        active = np.flatnonzero((self.hold_end < t1) & self._crosses(np.arange(l1.size), l1))
        for _ in range(MAX_CROSSINGS_PER_STEP):
            if active.size == 0:
                break
            on = l1[active] > self.reference[active]
            level = self.reference[active] + np.where(on, self.c_on[active], -self.c_off[active])
            with np.errstate(divide="ignore", invalid="ignore"):
                t_event = np.clip(t0 + (level - l0[active]) / slope[active], t0, t1)
            self._chunks.append((t_event, active, on))
            self.reference[active] = level
            self.hold_end[active] = t_event + self.model.refractory_us
            if self.model.refractory_us > 0:  # held in reset: the reference follows the signal until release
                free = self.hold_end[active] < t1
                active, t_free = active[free], self.hold_end[active[free]]
                self.reference[active] = l0[active] + slope[active] * (t_free - t0)
            active = active[self._crosses(active, l1)]
        else:  # bounded loop exhausted: drop the remaining crossings rather than loop forever
            self.reference[active] = l1[active]
        self.log, self.t_last = l1, t1

    def _crosses(self, pixels: np.ndarray, l1: np.ndarray) -> np.ndarray:
        diff = l1[pixels] - self.reference[pixels]
        return (diff >= self.c_on[pixels]) | (-diff >= self.c_off[pixels])

    def finish(self) -> EventArray:
        """All events so far plus noise, refractory period enforced, sorted by time (then pixel)."""
        chunks = [(np.floor(t).astype(np.int64), pixel, on.astype(np.int8)) for t, pixel, on in self._chunks]
        chunks += list(self._noise())
        t, pixel, p = (np.concatenate([chunk[i] for chunk in chunks] or [np.zeros(0, dtype)])
                       for i, dtype in enumerate((np.int64, np.int64, np.int8)))
        keep = refractory_filter(t, pixel, self.model.refractory_us)
        t, pixel, p = t[keep], pixel[keep], p[keep]
        order = np.lexsort((pixel, t))
        return EventArray.from_arrays(pixel[order] % self.width, pixel[order] // self.width, t[order], p[order],
                                      self.width, self.height, allow_empty=True)

    def _noise(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Background activity (random polarity) and hot pixels (each with one polarity)."""
        model, rng, n = self.model, self.rng, self.log.size
        span_s = (self.t_last - self.t_first) / 1e6
        count = rng.poisson(model.noise_rate_hz * span_s * n)
        yield (np.floor(rng.uniform(self.t_first, self.t_last, count)).astype(np.int64),
               rng.integers(0, n, count), rng.integers(0, 2, count).astype(np.int8))
        hot = rng.choice(n, rng.binomial(n, model.hot_pixel_fraction), replace=False)
        for pixel in hot:
            count = rng.poisson(model.hot_pixel_rate_hz * span_s)
            yield (np.floor(rng.uniform(self.t_first, self.t_last, count)).astype(np.int64),
                   np.full(count, pixel), np.full(count, rng.integers(0, 2), np.int8))


def refractory_filter(t: np.ndarray, pixel: np.ndarray, refractory_us: int) -> np.ndarray:
    """``(N,)`` bool: drop an event closer than ``refractory_us`` to the previous one of its pixel,
    so that kept events of a pixel are at least that far apart."""
    keep = np.ones(t.shape, bool)
    if refractory_us <= 0 or t.size < 2:
        return keep
    order = np.lexsort((t, pixel))
    same = pixel[order][1:] == pixel[order][:-1]
    keep[order[1:]] = ~(same & (np.diff(t[order]) < refractory_us))
    return keep


def events_from_frames(frames: Iterable[tuple[float, np.ndarray]], model: Optional[EventModel] = None,
                       rng: Optional[np.random.Generator] = None) -> EventArray:
    """Events of a stream of ``(t_us, (H, W) intensity)`` frames (times increasing).

    >>> frames = [(0.0, np.full((1, 2), 0.2)), (1000.0, np.array([[0.2, 0.5]]))]
    >>> ev = events_from_frames(frames, EventModel.ideal(0.3))
    >>> ev.x.tolist(), ev.p.tolist()   # log(0.52/0.22) = 0.86: two ON crossings of 0.3
    ([1, 1], [1, 1])
    """
    model = model or EventModel()
    rng = rng or np.random.default_rng(0)
    iterator = iter(frames)
    try:
        t0, first = next(iterator)
    except StopIteration:
        raise ValueError("no frames") from None
    sim = EventSimulator(first, t0, model, rng)
    for t, frame in iterator:
        sim.step(frame, t)
    return sim.finish()


def frame_times(scene: StreetScene, duration_s: float, must_hit_us: np.ndarray, max_px_per_step: float = 0.5,
                min_step_us: float = 100.0, max_step_us: float = 5000.0) -> np.ndarray:
    """Render times (µs) from 0 to ``duration_s``: steps where nothing moves more than
    ``max_px_per_step`` px, landing exactly on every ``must_hit_us`` (the label times)."""
    flow = ndimage.maximum_filter1d(scene.max_flow(), size=2 * int(max_step_us / 1000) + 1)  # look ahead
    grid_us = scene.camera.t * 1e6
    end, times, t = duration_s * 1e6, [0.0], 0.0
    targets = iter(sorted(float(v) for v in must_hit_us))
    target = next(targets, math.inf)
    while t < end:
        speed = float(np.interp(t, grid_us, flow))
        step = min(max(max_px_per_step / max(speed, 1e-9) * 1e6, min_step_us), max_step_us)
        t = min(t + step, target, end)
        if t >= target:
            target = next(targets, math.inf)
        times.append(t)
    return np.asarray(times)


def label_times_us(duration_s: float, interval_ms: float, start_ms: float, tail_ms: float) -> np.ndarray:
    """Label times (µs): every ``interval_ms`` from ``start_ms`` while ``tail_ms`` of events remain after."""
    last_ms = duration_s * 1000 - tail_ms
    times = np.arange(float(start_ms), last_ms + 1e-6, float(interval_ms))
    if times.size == 0:
        raise ValueError(f"no label time fits: duration {duration_s} s, start {start_ms} ms, tail {tail_ms} ms")
    return np.round(times * 1000).astype(np.int64)


def simulate_sequence(seed: int, sequence_id: str, duration_s: float = 2.5, height: int = 128, width: int = 160,
                      label_interval_ms: float = 50, label_start_ms: float = 300, label_tail_ms: float = 300,
                      model: Optional[EventModel] = None, max_px_per_step: float = 0.5,
                      ) -> tuple[EventArray, list[tuple[int, np.ndarray]]]:
    """One street drive: events and ``(t_us, (H, W) int64 labels)`` pairs, seeded by ``(seed, sequence_id)``.

    Labels are the front-most class per pixel at their exact time; they start after ``label_start_ms``
    of events and stop ``label_tail_ms`` before the end, so the streams before and after each label
    time (EV-WSSS's forward and reversed inputs) are full.
    """
    rng = sample_rng(seed, sequence_id)
    scene = make_street_scene(rng, height, width, duration_s)
    wanted = label_times_us(duration_s, label_interval_ms, label_start_ms, label_tail_ms)
    wanted_set = set(wanted.tolist())
    labels: list[tuple[int, np.ndarray]] = []

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        for t in frame_times(scene, duration_s, wanted, max_px_per_step):
            is_label = t in wanted_set
            image, mask = scene.render(t / 1e6, with_labels=is_label)
            if is_label:
                labels.append((int(t), mask))
            yield t, image

    events = events_from_frames(frames(), model or EventModel(), rng)
    return events, labels


def write_sequence(folder: str | Path, events: EventArray, labels: list[tuple[int, np.ndarray]],
                   classes: Optional[list[str]] = None, meta: Optional[dict[str, Any]] = None) -> Path:
    """Write one recording in the flattened DSEC layout (module docstring); returns the folder."""
    folder = Path(folder)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    write_dsec_events(folder / "events.h5", events, t_offset=0)
    for i, (_, mask) in enumerate(labels):
        write_label_png(folder / "labels" / f"{i:06d}.png", mask)
    (folder / "timestamps.txt").write_text("".join(f"{int(t)}\n" for t, _ in labels))
    info = {"classes": list(classes or EVENT_CLASSES), "width": events.width, "height": events.height,
            "num_events": len(events), "num_labels": len(labels), **(meta or {})}
    (folder / "meta.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def write_event_dataset(out_dir: str | Path, num_train: int = 24, num_val: int = 6, num_test: int = 6, seed: int = 0,
                        height: int = 128, width: int = 160, duration_s: float = 2.5, label_interval_ms: float = 100,
                        label_start_ms: float = 300, label_tail_ms: float = 300,
                        model: Optional[EventModel] = None) -> Path:
    """Write ``<out_dir>/{train,val,test}/<split>_<NNN>/`` recordings and ``<out_dir>/meta.json``.

    Each sequence is seeded by ``(seed, sequence id)`` only, so it does not change with the counts.
    ``meta.json`` holds the classes, the parameters, and per split the sequence ids and the counts of
    labels, events and labelled pixels per class.
    """
    out, model = Path(out_dir), model or EventModel()
    params = {"height": height, "width": width, "duration_s": duration_s, "label_interval_ms": label_interval_ms,
              "label_start_ms": label_start_ms, "label_tail_ms": label_tail_ms}
    meta: dict[str, Any] = {"generator": GENERATOR, "version": EVENTS_VERSION, "seed": int(seed),
                            "classes": EVENT_CLASSES, "params": params, "event_model": asdict(model),
                            "splits": {}, "counts": {}}
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        ids = [f"{split}_{i:03d}" for i in range(int(count))]
        pixels, num_labels, num_events = np.zeros(len(EVENT_CLASSES), np.int64), 0, 0
        for sequence_id in ids:
            events, labels = simulate_sequence(seed, sequence_id, model=model, **params)
            write_sequence(out / split / sequence_id, events, labels, meta={"sequence": sequence_id, "seed": seed})
            for _, mask in labels:
                pixels += np.bincount(mask.reshape(-1), minlength=len(EVENT_CLASSES))
            num_labels, num_events = num_labels + len(labels), num_events + len(events)
        meta["splits"][split] = ids
        meta["counts"][split] = {"sequences": len(ids), "labels": num_labels, "events": num_events,
                                 "pixels_per_class": dict(zip(EVENT_CLASSES, pixels.tolist()))}
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def ensure_event_dataset(seed: int = 0, **params: Any) -> Path:
    """The cached street event dataset for these parameters, generated on first use.

    ``params`` are :func:`write_event_dataset`'s keywords (defaults :data:`DATASET_DEFAULTS`); the
    folder is ``dataset_dir("events", "streets", 1, seed, params)``, built with :func:`build_once`.
    """
    unknown = set(params) - set(DATASET_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown dataset parameters {sorted(unknown)}; known: {sorted(DATASET_DEFAULTS)}")
    full = {**DATASET_DEFAULTS, **params}
    target = dataset_dir("events", GENERATOR, EVENTS_VERSION, seed, full)
    return build_once(target, lambda folder: write_event_dataset(folder, seed=seed, **full), params=full)
