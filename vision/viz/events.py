"""Event-camera pictures: an event frame, and segmentation masks beside it with sparse point labels.

Colour convention of :func:`event_frame_image` (the one DSEC's and E2VID's visualisations use): a
white background, pixels whose most recent event is ON (brightness up) red ``(255, 0, 0)``, OFF
(brightness down) blue ``(0, 0, 255)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np

from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX, PointLabels
from vision.viz.palette import (
    BACKGROUND_COLOR,
    colorize,
    legend_handles,
    new_figure,
    refuse_existing,
    save_figure,
)

ON_COLOR = (255, 0, 0)
OFF_COLOR = (0, 0, 255)
PANEL_INCHES = 5.0
TITLE_INCHES = 0.4
LEGEND_INCHES = 0.6

#: Point labels of one panel: a :class:`PointLabels` with ``xy``, or ``(xy (K, 2), class_id (K,))``.
PanelPoints = Union[PointLabels, tuple[np.ndarray, np.ndarray]]


def event_frame_image(x: np.ndarray, y: np.ndarray, p: np.ndarray, height: int, width: int) -> np.ndarray:
    """Events ``x, y, p`` ``(E,)`` (time order) -> ``(height, width, 3)`` uint8 picture.

    ``p > 0`` is ON (red), ``p <= 0`` OFF (blue; both 0/1 and -1/+1 polarities work), white where no
    event fell; the most recent event at a pixel decides its colour.

    >>> image = event_frame_image(np.array([0, 1, 1]), np.array([0, 0, 0]), np.array([1, 1, 0]), 1, 3)
    >>> image.reshape(-1, 3).tolist()
    [[255, 0, 0], [0, 0, 255], [255, 255, 255]]
    """
    x, y, p = (np.asarray(v).reshape(-1) for v in (x, y, p))
    if not (x.shape == y.shape == p.shape):
        raise ValueError(f"x, y and p must have the same length, got {x.shape[0]}, {y.shape[0]}, {p.shape[0]}")
    x, y = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    outside = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{int(outside.sum())} events lie outside the {width}x{height} sensor "
                         f"(first: x={x[first]}, y={y[first]})")
    image = np.empty((height * width, 3), np.uint8)
    image[:] = BACKGROUND_COLOR
    flat = (y * width + x)[::-1]  # reversed, so np.unique's first occurrence is the latest event
    pixels, latest = np.unique(flat, return_index=True)
    on = (p[::-1][latest] > 0)[:, None]
    image[pixels] = np.where(on, np.asarray(ON_COLOR, np.uint8), np.asarray(OFF_COLOR, np.uint8))
    return image.reshape(height, width, 3)


def _points_of(value: PanelPoints, name: str, num_classes: int, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(xy (K, 2), class_id (K,))`` of one panel's point labels, checked."""
    if isinstance(value, PointLabels):
        if value.xy is None:
            raise DataError(out, f"points of {name!r} must be 2-D (xy) point labels")
        xy, class_id = value.xy, value.class_id
    else:
        xy, class_id = value
    xy, class_id = np.asarray(xy, np.float64).reshape(-1, 2), np.asarray(class_id).reshape(-1)
    if xy.shape[0] != class_id.shape[0]:
        raise DataError(out, f"points of {name!r}: {xy.shape[0]} positions but {class_id.shape[0]} class ids")
    try:
        colorize(class_id, num_classes)
    except ValueError as err:
        raise DataError(out, f"points of {name!r}: {err}") from None
    return xy, class_id.astype(np.int64)


def _check_masks(frame: np.ndarray, panels: Mapping[str, np.ndarray], num_classes: int,
                 out: Path) -> dict[str, np.ndarray]:
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DataError(out, f"frame_rgb must be (H, W, 3), got shape {frame.shape}")
    colored = {}
    for name, mask in panels.items():
        mask = np.asarray(mask)
        if mask.shape != frame.shape[:2]:
            raise DataError(out, f"mask {name!r} has shape {mask.shape}, the frame {frame.shape[:2]}")
        try:
            colored[name] = colorize(mask, num_classes)
        except ValueError as err:
            raise DataError(out, f"mask {name!r}: {err}") from None
    return colored


def render_event_panels(frame_rgb: np.ndarray, panels: Mapping[str, np.ndarray], class_names: Sequence[str],
                        out_png: PathLike, points: Optional[Mapping[str, PanelPoints]] = None,
                        frame_title: str = "events", overwrite: bool = False) -> Path:
    """The event frame and one mask per panel, side by side, as a PNG; returns ``out_png``.

    Args:
        frame_rgb: ``(H, W, 3)`` uint8, e.g. from :func:`event_frame_image`.
        panels: column title -> ``(H, W)`` int class ids (IGNORE_INDEX grey), e.g. ``{"full labels": m,
            "sparse labels (1 point per class)": s, "prediction": p}``.
        class_names: names of class ids ``0..C-1``; the legend lists the classes present.
        points: column title -> sparse point labels (``PointLabels`` with ``xy``, or ``(xy (K, 2),
            class_id (K,))`` in 0-based pixels), drawn as circles in the class colour with a black edge.
        frame_title: title of the first column.
    Layout: ``500 * (1 + len(panels))`` px wide; each image is 500 px wide and ``500 H / W`` px high
    (pixels shown as blocks, never smoothed), under a title strip and above a legend strip.
    Raises FileExistsError unless ``overwrite``.
    """
    out = refuse_existing(out_png, overwrite)
    frame = np.asarray(frame_rgb)
    colored = _check_masks(frame, panels, len(class_names), out)
    marks = {name: _points_of(value, name, len(class_names), out) for name, value in (points or {}).items()}
    unknown = set(marks) - set(panels) - {frame_title}
    if unknown:
        raise DataError(out, f"points given for {sorted(unknown)}, which are not panels {list(panels)}")
    height_px, width_px = frame.shape[:2]
    image_inches = PANEL_INCHES * height_px / width_px
    columns = [(frame_title, frame.astype(np.uint8))] + list(colored.items())
    total = TITLE_INCHES + image_inches + LEGEND_INCHES
    figure = new_figure(PANEL_INCHES * len(columns), total)
    present: set[int] = set()
    for col, (name, image) in enumerate(columns):
        axes = figure.add_axes((col / len(columns), LEGEND_INCHES / total, 1 / len(columns), image_inches / total))
        axes.imshow(image, interpolation="nearest")
        axes.set_axis_off()
        axes.set_title(name, fontsize=12)
        if name in marks:
            xy, class_id = marks[name]
            axes.scatter(xy[:, 0], xy[:, 1], s=60, c=colorize(class_id, len(class_names)) / 255.0,
                         edgecolors="black", linewidths=1.0, zorder=3)
            axes.set_xlim(-0.5, width_px - 0.5)
            axes.set_ylim(height_px - 0.5, -0.5)
            present |= set(class_id.tolist())
    for mask in panels.values():
        present |= set(np.unique(np.asarray(mask)).tolist())
    figure.legend(handles=legend_handles(present, class_names, with_ignore=IGNORE_INDEX in present),
                  loc="lower center", ncol=8, frameon=False, fontsize=10)
    return save_figure(figure, out, overwrite)
