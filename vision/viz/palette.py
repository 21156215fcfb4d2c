"""Class colours, legends and the one PNG writer that every picture of :mod:`vision.viz` uses.

Palette (:func:`class_colors`): matplotlib's ``tab20`` reordered so that classes 0-8 get its nine
saturated colours (``tab10`` without its grey) and classes 9-17 their light partners - grey is
reserved for :data:`IGNORE_COLOR`; then the non-grey entries of ``tab20b`` and ``tab20c`` (to 54
classes); beyond that, hues spaced by the golden angle. Class ``i`` has the same colour in every picture, whatever
the number of classes.

:func:`save_figure` renders with the Agg backend (no display needed), writes through a temporary
file and :func:`os.replace` (no half-written PNG under the final name), refuses to replace an
existing file unless ``overwrite``, and drops the PNG ``Software`` metadata so the same figure
gives the same file.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from vision.atomic import atomic_path, refuse_existing
from vision.errors import PathLike
from vision.labels.types import IGNORE_INDEX

#: Colour of entries labelled :data:`~vision.labels.types.IGNORE_INDEX` (unlabelled), RGB uint8.
IGNORE_COLOR: tuple[int, int, int] = (170, 170, 170)
#: Background of point-cloud panels and event frames.
BACKGROUND_COLOR: tuple[int, int, int] = (255, 255, 255)
#: Pixels per inch of every picture (a 5-inch panel is 500 pixels wide).
DPI = 100


def _base_palette() -> np.ndarray:
    import matplotlib

    tab20 = [to_rgb(c) for c in matplotlib.colormaps["tab20"].colors]
    grey = (14, 15)  # tab20's grey pair looks like IGNORE_COLOR
    saturated = [tab20[i] for i in range(0, 20, 2) if i not in grey]
    light = [tab20[i] for i in range(1, 20, 2) if i not in grey]
    extra = [to_rgb(c) for name in ("tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
    extra = [c for c in extra if max(c) - min(c) > 0.05]  # tab20c ends with greys
    return np.round(np.asarray(saturated + light + extra) * 255).astype(np.uint8)


def class_colors(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB colours; class ``i`` keeps its colour for any ``num_classes``.

    >>> class_colors(2).tolist()
    [[31, 119, 180], [255, 127, 14]]
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    base = _base_palette()
    if num_classes <= len(base):
        return base[:num_classes].copy()
    golden = 0.618033988749895  # successive hues as far apart as possible
    more = [colorsys.hsv_to_rgb((k * golden) % 1.0, 0.65, 0.85) for k in range(num_classes - len(base))]
    return np.concatenate([base, np.round(np.asarray(more) * 255).astype(np.uint8)])


def colorize(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids of any shape ``S`` -> ``S + (3,)`` uint8 colours; IGNORE_INDEX -> :data:`IGNORE_COLOR`.

    Raises ValueError for ids outside ``0..num_classes-1`` other than IGNORE_INDEX.
    """
    labels = np.asarray(labels)
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    known = labels != IGNORE_INDEX
    bad = labels[known & ((labels < 0) | (labels >= num_classes))]
    if bad.size:
        raise ValueError(f"label {int(bad[0])} is outside the {num_classes} classes")
    table = np.concatenate([class_colors(num_classes), np.asarray([IGNORE_COLOR], np.uint8)])
    return table[np.where(known, labels, num_classes)]


def legend_handles(class_ids: Iterable[int], class_names: Sequence[str], with_ignore: bool = False) -> list[Patch]:
    """Legend patches for the sorted unique ``class_ids`` (and "unlabelled" when ``with_ignore``)."""
    colors = class_colors(len(class_names)) / 255.0
    ids = sorted({int(i) for i in class_ids if int(i) != IGNORE_INDEX})
    handles = [Patch(facecolor=colors[i], edgecolor="black", linewidth=0.5, label=class_names[i]) for i in ids]
    if with_ignore:
        handles.append(Patch(facecolor=np.asarray(IGNORE_COLOR) / 255.0, edgecolor="black", linewidth=0.5,
                             label="unlabelled"))
    return handles


def new_figure(width_in: float, height_in: float) -> Figure:
    """A figure on the Agg canvas (never pyplot: no global state, no display, nothing to close)."""
    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out_png: PathLike, overwrite: bool = False) -> Path:
    """Write ``figure`` as a PNG at ``out_png`` atomically; returns the path."""
    out = refuse_existing(out_png, overwrite)
    with atomic_path(out, overwrite=True) as temp:
        figure.savefig(temp, format="png", dpi=DPI, metadata={"Software": None})
    return out
