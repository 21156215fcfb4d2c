"""Detection pictures: one image with different box sets side by side (full labels, the sparse labels
given to training, a prediction).

Boxes and their class names are drawn by :func:`torchvision.utils.draw_bounding_boxes` into an
enlarged copy of the image (nearest-neighbour, so small images stay crisp and the label text stays
readable); point labels (one click per object, no box) are drawn here as crosses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from vision.errors import DataError, PathLike
from vision.viz.palette import class_colors, legend_handles, new_figure, refuse_existing, save_figure

PANEL_INCHES = 5.0
TITLE_INCHES = 0.4
LEGEND_INCHES = 0.6
TARGET_WIDTH_PX = 500  # images are enlarged by a whole factor towards this width before drawing
CROSS_ARM_PX = 6
#: DejaVu Sans, shipped with matplotlib: a scalable font for the box labels on any system.
FONT_FILE = str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def _array(panel: Mapping[str, Any], key: str, shape_tail: tuple, name: str, out: Path) -> np.ndarray:
    value = panel.get(key)
    array = np.zeros((0,) + shape_tail) if value is None else np.asarray(value, np.float64)
    try:
        return array.reshape((-1,) + shape_tail)
    except ValueError:
        raise DataError(out, f"panel {name!r}: {key} has shape {array.shape}, expected (K, "
                             f"{', '.join(map(str, shape_tail))})") from None


def _panel_arrays(panel: Mapping[str, Any], name: str, num_classes: int, out: Path) -> dict[str, np.ndarray]:
    """Boxes ``(K, 4)``, labels ``(K,)``, scores ``(K,)`` or None, points ``(P, 2)``, point labels ``(P,)``."""
    boxes, points = _array(panel, "boxes", (4,), name, out), _array(panel, "points", (2,), name, out)
    labels = _array(panel, "labels", (), name, out).astype(np.int64)
    has_boxes = panel.get("boxes") is not None
    point_labels = (_array(panel, "point_labels", (), name, out).astype(np.int64) if "point_labels" in panel
                    else (np.zeros(0, np.int64) if has_boxes else labels))
    box_labels = labels if has_boxes else np.zeros(0, np.int64)
    scores = None if panel.get("scores") is None else _array(panel, "scores", (), name, out)
    for what, count, expected in (("labels", len(box_labels), len(boxes)), ("point_labels", len(point_labels),
                                  len(points)), ("scores", len(boxes) if scores is None else len(scores),
                                                 len(boxes))):
        if count != expected:
            raise DataError(out, f"panel {name!r}: {count} {what} for {expected} "
                                 f"{'points' if what == 'point_labels' else 'boxes'}")
    every = np.concatenate([box_labels, point_labels])
    if every.size and (every.min() < 0 or every.max() >= num_classes):
        raise DataError(out, f"panel {name!r}: class id {int(every[(every < 0) | (every >= num_classes)][0])} "
                             f"is outside the {num_classes} classes")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise DataError(out, f"panel {name!r}: boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    return {"boxes": boxes, "labels": box_labels, "scores": scores, "points": points, "point_labels": point_labels}


def draw_crosses(image: np.ndarray, xy: np.ndarray, colors: np.ndarray, arm: int = CROSS_ARM_PX,
                 half_width: int = 1) -> np.ndarray:
    """Copy of ``image`` ``(H, W, 3)`` uint8 with a ``+`` of ``colors[k]`` at each ``xy[k]`` ``(K, 2)``.

    >>> draw_crosses(np.zeros((3, 3, 3), np.uint8), np.array([[1.0, 1.0]]), np.array([[9, 9, 9]]), 1, 0)[..., 0]
    array([[0, 9, 0],
           [9, 9, 9],
           [0, 9, 0]], dtype=uint8)
    """
    image = image.copy()
    w = half_width
    for (x, y), color in zip(np.rint(xy).astype(int), colors):
        image[max(y - w, 0):y + w + 1, max(x - arm, 0):x + arm + 1] = color
        image[max(y - arm, 0):y + arm + 1, max(x - w, 0):x + w + 1] = color
    return image


def draw_detection_panel(image: np.ndarray, arrays: Mapping[str, np.ndarray], class_names: Sequence[str],
                         score_threshold: float, scale: int) -> np.ndarray:
    """``image`` ``(H, W, 3)`` enlarged ``scale`` times, with the panel's boxes, labels and crosses."""
    colors = class_colors(len(class_names))
    big = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    unit = max(1.0, big.shape[1] / TARGET_WIDTH_PX)  # image pixels per screen pixel: keep lines and text visible
    keep = np.ones(len(arrays["boxes"]), bool) if arrays["scores"] is None else arrays["scores"] >= score_threshold
    boxes, labels = arrays["boxes"][keep] * scale, arrays["labels"][keep]
    if len(boxes):
        text = [class_names[c] for c in labels]
        if arrays["scores"] is not None:
            text = [f"{t} {s:.2f}" for t, s in zip(text, arrays["scores"][keep])]
        box_colors = [tuple(int(v) for v in colors[c]) for c in labels]
        text_colors = ["black" if colors[c].astype(float) @ (0.299, 0.587, 0.114) > 150 else "white"
                       for c in labels]  # readable text on light and dark class colours
        drawn = draw_bounding_boxes(torch.from_numpy(big).permute(2, 0, 1), torch.from_numpy(boxes), labels=text,
                                    colors=box_colors, width=round(3 * unit), fill_labels=True,
                                    label_colors=text_colors, font=FONT_FILE, font_size=round(12 * unit))
        big = drawn.permute(1, 2, 0).numpy()
    if len(arrays["points"]):
        big = draw_crosses(big, (arrays["points"] + 0.5) * scale - 0.5, colors[arrays["point_labels"]],
                           arm=round(CROSS_ARM_PX * unit), half_width=round(unit))
    return big


def render_detection_panels(image: np.ndarray, panels: Mapping[str, Mapping[str, Any]], class_names: Sequence[str],
                            out_png: PathLike, score_threshold: float = 0.3, overwrite: bool = False) -> Path:
    """One image with several box sets side by side as a PNG; returns ``out_png``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        panels: column title -> ``{"boxes": (K, 4) xyxy px, "labels": (K,) class ids,
            "scores": (K,) optional, "points": (P, 2) xy px optional, "point_labels": (P,) optional}``,
            e.g. ``{"full labels": ..., "sparse labels given": ..., "prediction": ...}``. Without
            ``boxes``, ``labels`` are the points' classes (a points-only panel).
        class_names: names of class ids ``0..C-1``.
        score_threshold: boxes with a score below it are not drawn (panels without scores: all drawn).
    Boxes are coloured by class with "name" (or "name 0.87") labels; points are crosses.
    Layout: ``500 * len(panels)`` px wide, images 500 px wide. Raises FileExistsError unless ``overwrite``.
    """
    out = refuse_existing(out_png, overwrite)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(out, f"image must be (H, W, 3) uint8, got shape {image.shape} {image.dtype}")
    if not panels:
        raise DataError(out, "no panels to draw")
    arrays = {name: _panel_arrays(panel, name, len(class_names), out) for name, panel in panels.items()}
    scale = max(1, TARGET_WIDTH_PX // image.shape[1])
    image_inches = PANEL_INCHES * image.shape[0] / image.shape[1]
    total = TITLE_INCHES + image_inches + LEGEND_INCHES
    figure = new_figure(PANEL_INCHES * len(panels), total)
    present: set[int] = set()
    for col, (name, panel) in enumerate(arrays.items()):
        axes = figure.add_axes((col / len(panels), LEGEND_INCHES / total, 1 / len(panels), image_inches / total))
        drawn = draw_detection_panel(image, panel, class_names, score_threshold, scale)
        # enlarged images keep exact pixels; images wider than the panel are shrunk smoothly
        axes.imshow(drawn, interpolation="nearest" if drawn.shape[1] <= TARGET_WIDTH_PX else "antialiased")
        axes.set_axis_off()
        axes.set_title(name, fontsize=12)
        shown = panel["labels"] if panel["scores"] is None else panel["labels"][panel["scores"] >= score_threshold]
        present |= set(shown.tolist()) | set(panel["point_labels"].tolist())
    figure.legend(handles=legend_handles(present, class_names), loc="lower center", ncol=8, frameon=False,
                  fontsize=10)
    return save_figure(figure, out, overwrite)
