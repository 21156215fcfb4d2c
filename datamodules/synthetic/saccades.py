"""Labelled images -> event recordings by simulated saccades, as N-MNIST was recorded.

N-MNIST and N-Caltech101 (Orchard et al., "Converting Static Image Datasets to Spiking Neuromorphic
Datasets Using Saccades", Frontiers in Neuroscience 2015) were recorded by moving an ATIS camera in
front of a still image along three short saccades that form a triangle, 100 ms each. Here the image
moves instead (bilinear resampling, borders replicated, on a sensor of the image's size) and events
come from the same pixel model as the street data (:mod:`datamodules.synthetic.events_sim`). The
label mask moves with the image (nearest neighbour; pixels whose source lies outside the image are
IGNORE_INDEX), so every label PNG is aligned with the image as it is at that label's timestamp.

Each pair becomes ``<out_dir>/<image stem>/`` in the flattened DSEC layout (events.h5, labels/*.png,
timestamps.txt, meta.json), written to a temporary folder and renamed when complete.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image
from scipy import ndimage

from datamodules.formats.dsec import read_label_png
from datamodules.synthetic.events_sim import EventModel, events_from_frames, write_sequence
from vision.errors import DataError, PathLike
from vision.labels.seeding import sample_rng
from vision.labels.types import IGNORE_INDEX

#: Saccade vertices in units of the amplitude, as ``(dx, dy)``; the path visits them in order.
SACCADE_PATTERNS: dict[str, list[tuple[float, float]]] = {
    "triangle": [(0.0, 0.0), (1.0, 0.0), (0.5, math.sqrt(3) / 2), (0.0, 0.0)],  # three saccades, closed
    "line": [(0.0, 0.0), (1.0, 0.0), (0.0, 0.0)],  # right and back
}
MAX_PX_PER_FRAME = 0.25  # image motion between two rendered frames, for accurate event times


def saccade_path(pattern: str, duration_ms: float, amplitude_px: float) -> tuple[np.ndarray, np.ndarray]:
    """``(times_us (K,), displacement (K, 2) px as (dx, dy))`` of the vertices; constant speed per leg.

    >>> t, d = saccade_path("triangle", 300, 4.0)
    >>> t.tolist(), d[1].tolist()
    ([0.0, 100000.0, 200000.0, 300000.0], [4.0, 0.0])
    """
    if pattern not in SACCADE_PATTERNS:
        raise ValueError(f"unknown saccade pattern {pattern!r}; choose from {sorted(SACCADE_PATTERNS)}")
    vertices = np.asarray(SACCADE_PATTERNS[pattern], np.float64) * float(amplitude_px)
    times = np.linspace(0.0, float(duration_ms) * 1000.0, len(vertices))
    return times, vertices


def displacement_at(path: tuple[np.ndarray, np.ndarray], t_us: float) -> tuple[float, float]:
    """``(dx, dy)`` in pixels at ``t_us`` along a :func:`saccade_path`."""
    times, vertices = path
    return float(np.interp(t_us, times, vertices[:, 0])), float(np.interp(t_us, times, vertices[:, 1]))


def shift_image(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``(H, W)`` image moved by ``(dx, dy)`` px: bilinear, borders replicated (no false edges)."""
    return ndimage.shift(image, (dy, dx), order=1, mode="nearest")


def shift_mask(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``(H, W)`` int64 mask moved by the nearest whole pixels; uncovered pixels -> IGNORE_INDEX."""
    height, width = mask.shape
    rows = np.arange(height) - int(np.rint(dy))
    cols = np.arange(width) - int(np.rint(dx))
    out = np.full(mask.shape, IGNORE_INDEX, np.int64)
    row_ok, col_ok = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
    out[np.ix_(row_ok, col_ok)] = mask[np.ix_(rows[row_ok], cols[col_ok])]
    return out


def read_gray(path: PathLike) -> np.ndarray:
    """``(H, W)`` float64 in [0, 1] from any image PIL reads (colour -> luminance)."""
    try:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"), np.float64) / 255.0
    except OSError as err:
        raise DataError(path, f"cannot read image ({err})") from err
    return gray


def _frames(image: np.ndarray, path: tuple[np.ndarray, np.ndarray]) -> Iterator[tuple[float, np.ndarray]]:
    """Frames every ``MAX_PX_PER_FRAME`` px of motion along each leg, vertices included."""
    times, vertices = path
    yield float(times[0]), shift_image(image, *vertices[0])
    for k in range(1, len(times)):
        steps = max(1, math.ceil(np.linalg.norm(vertices[k] - vertices[k - 1]) / MAX_PX_PER_FRAME))
        for t in np.linspace(times[k - 1], times[k], steps + 1)[1:]:
            yield float(t), shift_image(image, *displacement_at(path, t))


def saccade_recording(image: np.ndarray, mask: np.ndarray, path: tuple[np.ndarray, np.ndarray],
                      label_times_us: Sequence[float], model: EventModel, rng: np.random.Generator):
    """Events of ``image`` ``(H, W)`` moved along ``path``, and the moved ``mask`` at each label time."""
    events = events_from_frames(_frames(image, path), model, rng)
    labels = [(int(t), shift_mask(mask, *displacement_at(path, t))) for t in label_times_us]
    return events, labels


def _read_pair(image_path: PathLike, mask_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    image, mask = read_gray(image_path), read_label_png(mask_path)
    if mask.shape != image.shape:
        raise DataError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                                   f"{image.shape[1]}x{image.shape[0]} (width x height)")
    return image, mask


def _targets(pairs: Sequence[tuple[PathLike, PathLike]], out_dir: Path, overwrite: bool) -> list[Path]:
    """One folder per image stem; refuses duplicate stems and, unless ``overwrite``, existing folders."""
    targets = [out_dir / Path(image).stem for image, _ in pairs]
    seen: dict[Path, PathLike] = {}
    for (image, _), target in zip(pairs, targets):
        if target in seen:
            raise DataError(image, f"same file name stem as {seen[target]}; recordings are named by stem")
        seen[target] = image
        if target.exists() and not overwrite:
            raise DataError(target, "recording folder exists; pass overwrite=True to replace it")
    return targets


def images_to_event_recordings(pairs: Sequence[tuple[PathLike, PathLike]], out_dir: PathLike, seed: int = 0,
                               saccade_pattern: str = "triangle", duration_ms: float = 300, contrast: float = 0.2,
                               overwrite: bool = False, amplitude_px: Optional[float] = None,
                               label_times_ms: Optional[Sequence[float]] = None,
                               model: Optional[EventModel] = None) -> list[Path]:
    """Convert ``(image, label mask PNG)`` pairs into event recordings by saccades.

    Args:
        pairs: image files (any PIL format; colour becomes luminance) and their 8-bit class-id PNGs
            of the same size (255 = ignore).
        out_dir: where ``<image stem>/`` recordings go (created).
        seed: events of each recording are seeded by ``(seed, image stem)``.
        saccade_pattern: a key of :data:`SACCADE_PATTERNS`; duration_ms: the whole path.
        contrast: ON and OFF thresholds of the default sensor model (ignored when ``model`` is given).
        overwrite: replace existing recording folders (otherwise they make this raise).
        amplitude_px: saccade size; default ``max(3, 3 % of the larger image side)``.
        label_times_ms: when to write labels; default the middle of each saccade.
        model: the full sensor model, instead of the default with ``contrast``.

    Returns:
        The recording folders, in the order of ``pairs``.

    Raises:
        DataError: unreadable image or mask, size mismatch, duplicate stems, an existing folder
            without ``overwrite``, a uniform image, or one that gives no events.
    """
    out = Path(out_dir)
    targets = _targets(pairs, out, overwrite)
    model = model or EventModel(contrast_on=contrast, contrast_off=contrast)
    out.mkdir(parents=True, exist_ok=True)
    for (image_path, mask_path), target in zip(pairs, targets):
        image, mask = _read_pair(image_path, mask_path)
        amplitude = amplitude_px if amplitude_px is not None else max(3.0, 0.03 * max(image.shape))
        path = saccade_path(saccade_pattern, duration_ms, amplitude)
        stamps = (np.asarray(label_times_ms, np.float64) * 1000 if label_times_ms is not None
                  else (path[0][1:] + path[0][:-1]) / 2)
        if np.ptp(image) == 0:  # only sensor noise would come out
            raise DataError(image_path, "the image is uniform: the saccades have no edge to show")
        events, labels = saccade_recording(image, mask, path, stamps, model, sample_rng(seed, target.name))
        if len(events) == 0:
            raise DataError(image_path, "no events: the image's edges are below the contrast threshold")
        classes = [str(i) for i in range(int(mask.max(initial=0)) + 1)]
        meta = {"source_image": os.fspath(image_path), "source_mask": os.fspath(mask_path), "seed": int(seed),
                "saccade_pattern": saccade_pattern, "duration_ms": duration_ms, "amplitude_px": amplitude}
        _write_atomically(target, functools.partial(write_sequence, events=events, labels=labels,
                                                    classes=classes, meta=meta))
    return targets


def _write_atomically(target: Path, write) -> None:
    """``write(temp folder)``, then rename it to ``target`` (replacing an old one last)."""
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        write(temp)
        if target.exists():  # overwrite=True: move the old one aside only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".old-{target.name}-", dir=target.parent))
            os.rename(target, old / target.name)
            os.rename(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
