"""Point-cloud label pictures: one column per label set, a top view and an oblique view per column.

The views are orthographic projections rasterised here with a z-buffer in NumPy rather than
matplotlib 3-D scatter plots: 200k points render in a fraction of a second, every point gets its
exact class colour (no antialiasing blend), and the result does not depend on mplot3d's drawing
order. Rooms have ceilings that hide everything from above, so points above ``top_view_clip`` of the
height range are left out of both views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from vision.errors import DataError, PathLike
from vision.labels.types import IGNORE_INDEX
from vision.viz.palette import (
    BACKGROUND_COLOR,
    DPI,
    colorize,
    legend_handles,
    new_figure,
    refuse_existing,
    save_figure,
)

PANEL_INCHES = 5.0  # each view is a 5 x 5 inch square (500 x 500 px)
TITLE_INCHES = 0.4
LEGEND_INCHES = 0.7


def project(coords: np.ndarray, view: str, azimuth: float = -60.0,
            elevation: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Orthographic projection of ``coords`` ``(N, 3)``: ``(uv (N, 2) screen x right / y up, depth (N,))``.

    ``view="top"`` looks straight down (``uv = xy``, depth = z); ``view="oblique"`` looks from
    ``azimuth`` degrees around z (matplotlib's convention) and ``elevation`` degrees above the xy
    plane. A larger depth is nearer to the viewer.

    >>> uv, depth = project(np.array([[1.0, 2.0, 3.0]]), "top")
    >>> uv.tolist(), depth.tolist()
    ([[1.0, 2.0]], [3.0])
    """
    coords = np.asarray(coords, np.float64)
    if view == "top":
        return coords[:, :2].copy(), coords[:, 2].copy()
    if view != "oblique":
        raise ValueError(f"view must be 'top' or 'oblique', got {view!r}")
    a, e = np.radians(azimuth), np.radians(elevation)
    toward_viewer = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    right = np.array([-np.sin(a), np.cos(a), 0.0])
    up = np.array([-np.sin(e) * np.cos(a), -np.sin(e) * np.sin(a), np.cos(e)])
    return np.column_stack([coords @ right, coords @ up]), coords @ toward_viewer


def to_pixels(uv: np.ndarray, bounds: tuple[np.ndarray, np.ndarray], size: int, margin: int = 8) -> np.ndarray:
    """Screen coordinates ``(N, 2)`` -> ``(N, 2)`` float ``(col, row)`` in a ``size`` square (aspect kept)."""
    low, high = bounds
    scale = (size - 1 - 2 * margin) / max(float((high - low).max()), 1e-9)
    centre = (low + high) / 2.0
    col = (uv[:, 0] - centre[0]) * scale + (size - 1) / 2.0
    row = (size - 1) / 2.0 - (uv[:, 1] - centre[1]) * scale  # screen y up -> image rows down
    return np.column_stack([col, row])


def zbuffer(pixels: np.ndarray, depth: np.ndarray, size: int, radius: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """For each covered pixel of a ``size`` square, the nearest point: ``(pixel (P,), point (P,))``.

    Every point covers a ``(2 radius + 1)`` pixel square; flat pixel ids are ``row * size + col``.

    >>> zbuffer(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([0.0, 5.0]), 3, radius=0)
    (array([4]), array([1]))
    """
    centre = np.rint(pixels).astype(np.int64)
    steps = np.arange(-radius, radius + 1)
    dcol, drow = (g.ravel() for g in np.meshgrid(steps, steps))
    cols = (centre[:, 0:1] + dcol[None, :]).ravel()
    rows = (centre[:, 1:2] + drow[None, :]).ravel()
    point = np.repeat(np.arange(len(pixels)), len(dcol))
    inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    flat, point = rows[inside] * size + cols[inside], point[inside]
    order = np.lexsort((depth[point], flat))  # by pixel, then nearest last
    flat, point = flat[order], point[order]
    last = np.append(flat[1:] != flat[:-1], True)
    return flat[last], point[last]


def _check_inputs(coords, panels, colors, sparse_points, out: Path, num_classes: int):
    coords = np.asarray(coords, np.float64)
    if coords.ndim != 2 or coords.shape[1] != 3 or coords.shape[0] == 0:
        raise DataError(out, f"coords must be a non-empty (N, 3) array, got shape {coords.shape}")
    if not np.isfinite(coords).all():
        raise DataError(out, "coords hold NaN or infinite values")
    n = coords.shape[0]
    labels = {}
    for name, values in panels.items():
        values = np.asarray(values).reshape(-1)
        if values.shape[0] != n:
            raise DataError(out, f"panel {name!r} has {values.shape[0]} labels for {n} points")
        try:
            colorize(values, num_classes)  # checks integer dtype and range
        except ValueError as err:
            raise DataError(out, f"panel {name!r}: {err}") from None
        labels[name] = values.astype(np.int64)
    if colors is not None:
        colors = np.asarray(colors, np.float64)
        if colors.shape != (n, 3) or not np.isfinite(colors).all():
            raise DataError(out, f"colors must be a finite (N, 3) array in [0, 1], got shape {colors.shape}")
        colors = np.round(np.clip(colors, 0.0, 1.0) * 255).astype(np.uint8)
    if sparse_points is not None:
        sparse_points = np.asarray(sparse_points, np.int64).reshape(-1)
        if sparse_points.size and (sparse_points.min() < 0 or sparse_points.max() >= n):
            raise DataError(out, f"sparse_points must index the {n} points")
    return coords, labels, colors, sparse_points


def _visible_subset(coords: np.ndarray, max_points: int, top_view_clip: Optional[float],
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices drawn (seeded subsample, sorted) and a ``(N,)`` mask of points below the clip height."""
    z = coords[:, 2]
    below = np.ones(len(coords), bool)
    if top_view_clip is not None and top_view_clip < 1.0:
        below = z <= z.min() + top_view_clip * (z.max() - z.min())
    drawn = np.flatnonzero(below)
    if len(drawn) > max_points:
        drawn = np.sort(np.random.default_rng(seed).choice(drawn, max_points, replace=False))
    return drawn, below


def _sparse_panel_name(panels: Sequence[str], sparse_panel: Optional[str], out: Path) -> str:
    if sparse_panel is not None:
        if sparse_panel not in panels:
            raise DataError(out, f"sparse_panel {sparse_panel!r} is not one of the panels {list(panels)}")
        return sparse_panel
    named = [name for name in panels if "sparse" in name.lower()]
    if not named:
        raise DataError(out, "sparse_points given but no panel name contains 'sparse'; pass sparse_panel")
    return named[0]


def render_point_cloud_panels(coords: np.ndarray, panels: Mapping[str, np.ndarray], class_names: Sequence[str],
                              out_png: PathLike, colors: Optional[np.ndarray] = None,
                              sparse_points: Optional[np.ndarray] = None, sparse_panel: Optional[str] = None,
                              max_points: int = 200_000, top_view_clip: Optional[float] = 0.85,
                              azimuth: float = -60.0, elevation: float = 30.0, point_radius: int = 1,
                              seed: int = 0, overwrite: bool = False) -> Path:
    """Render label sets of one cloud side by side as a PNG; returns ``out_png``.

    Args:
        coords: ``(N, 3)`` point coordinates.
        panels: column title -> ``(N,)`` int class ids (IGNORE_INDEX = unlabelled, drawn grey), e.g.
            ``{"full labels": y, "sparse labels (0.1%: 52 points)": y_sparse, "prediction": y_hat}``.
        class_names: names of class ids ``0..C-1``; the legend lists the classes present.
        colors: ``(N, 3)`` float RGB in [0, 1]; adds a first column "RGB".
        sparse_points: ``(K,)`` indices of labelled points, drawn as large black-edged markers in their
            class colour on ``sparse_panel`` (default: the first panel whose name contains "sparse").
        max_points: points drawn per view (a seeded random subsample; sparse markers are all drawn).
        top_view_clip: drop points above this fraction of the z range from both views (ceilings);
            None or 1.0 keeps all.
        azimuth, elevation: the oblique view's direction in degrees (matplotlib's convention).
        point_radius: each point covers a ``2 r + 1`` pixel square.
    Layout: ``500 * columns`` x ``1110`` px: a title strip, the top view (x right, y up), the
    oblique view, and the legend strip. Raises FileExistsError unless ``overwrite``.
    """
    out = refuse_existing(out_png, overwrite)
    coords, labels, rgb, sparse_points = _check_inputs(coords, panels, colors, sparse_points, out,
                                                       len(class_names))
    if not labels and rgb is None:
        raise DataError(out, "nothing to draw: no panels and no colors")
    marked = _sparse_panel_name(list(labels), sparse_panel, out) if sparse_points is not None else None
    drawn, below = _visible_subset(coords, max_points, top_view_clip, seed)
    columns = ([("RGB", rgb)] if rgb is not None else []) + [
        (name, colorize(values, len(class_names))) for name, values in labels.items()]
    size = int(PANEL_INCHES * DPI)
    height = TITLE_INCHES + 2 * PANEL_INCHES + LEGEND_INCHES
    figure = new_figure(PANEL_INCHES * len(columns), height)
    views = (("top", "top view"), ("oblique", f"oblique view (azimuth {azimuth:g}, elevation {elevation:g})"))
    for row, (view, view_title) in enumerate(views):
        uv, depth = project(coords, view, azimuth, elevation)
        subset = drawn if len(drawn) else np.arange(len(coords))
        bounds = (uv[subset].min(axis=0), uv[subset].max(axis=0))
        pixels = to_pixels(uv, bounds, size)
        flat, point = zbuffer(pixels[drawn], depth[drawn], size, point_radius)
        bottom = (LEGEND_INCHES + (1 - row) * PANEL_INCHES) / height
        for col, (name, point_rgb) in enumerate(columns):
            image = np.empty((size * size, 3), np.uint8)
            image[:] = BACKGROUND_COLOR
            image[flat] = point_rgb[drawn[point]]
            axes = figure.add_axes((col / len(columns), bottom, 1 / len(columns), PANEL_INCHES / height))
            axes.imshow(image.reshape(size, size, 3), interpolation="nearest")
            axes.set_axis_off()
            if row == 0:
                axes.set_title(name, fontsize=12)
            axes.text(4, 4, view_title, fontsize=8, va="top", color="black")
            if name == marked:
                _draw_markers(axes, pixels, depth, sparse_points[below[sparse_points]], point_rgb, size)
    present = set().union(*(np.unique(v).tolist() for v in labels.values())) if labels else set()
    figure.legend(handles=legend_handles(present, class_names, with_ignore=IGNORE_INDEX in present),
                  loc="lower center", ncol=8, frameon=False, fontsize=10)
    return save_figure(figure, out, overwrite)


def _draw_markers(axes, pixels: np.ndarray, depth: np.ndarray, index: np.ndarray, point_rgb: np.ndarray,
                  size: int) -> None:
    """Large markers at the labelled points ``index``, the nearest drawn last."""
    index = index[np.argsort(depth[index], kind="stable")]
    axes.scatter(pixels[index, 0], pixels[index, 1], s=70, c=point_rgb[index] / 255.0, edgecolors="black",
                 linewidths=1.0, zorder=3)
    axes.set_xlim(-0.5, size - 0.5)
    axes.set_ylim(size - 0.5, -0.5)

