"""Label-efficiency plots from the benchmark rows in ``docs/benchmarks/*.json`` (CONVENTIONS.md).

A row is a small JSON object, for example::

    {"task": "pointcloud", "method": "sqn+engine", "labels": "0.1pct", "label_fraction": 0.001,
     "label_count": 1234, "metric": {"miou": 0.61, "miou_std": 0.01}}

The plot has the labelled fraction on a log x axis, one line per method with error bars where a
``<metric>_std`` is given (or where several rows share a method and fraction: their mean and sample
standard deviation), and each method's full-label value as a horizontal dashed line.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from vision.benchmarks.common import row_files
from vision.errors import DataError, PathLike
from vision.viz.palette import class_colors, new_figure, refuse_existing, save_figure


def is_benchmark_row(value) -> bool:
    """True for a dict with ``task``, ``method`` and a ``metric`` dict."""
    return isinstance(value, dict) and "task" in value and "method" in value and isinstance(value.get("metric"), dict)


def load_benchmark_rows(folder: PathLike, task: Optional[str] = None) -> list[dict]:
    """Rows of every ``folder/*.json`` (sorted by file name), only those of ``task`` when given.

    A file may hold one row or a list of rows; JSON files that are not rows (other metadata) are
    skipped. Raises DataError for a missing folder or a file that is not valid JSON (naming it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "benchmark folder does not exist")
    rows = []
    for path in row_files(folder):  # without a killed run's hidden temporary files
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(path, f"invalid JSON ({err})") from None
        items = content if isinstance(content, list) else [content]
        if not items or not all(is_benchmark_row(item) for item in items):
            continue
        rows += [item for item in items if task is None or item["task"] == task]
    return rows


def _is_full(row: dict, x: str) -> bool:
    return row.get("labels") == "full" or (x == "label_fraction" and float(row.get(x) or 0) >= 1.0)


def _collect(rows: Sequence[dict], metric: str, x: str, group: str):
    """``(sparse {group: {x: [(value, std)]}}, full {group: [value]})`` of the rows with ``metric``."""
    sparse: dict = defaultdict(lambda: defaultdict(list))
    full: dict = defaultdict(list)
    for row in rows:
        value = row.get("metric", {}).get(metric)
        if value is None:
            continue
        name = str(row.get(group, "?"))
        if _is_full(row, x):
            full[name].append(float(value))
        elif row.get(x) is not None and float(row[x]) > 0:
            sparse[name][float(row[x])].append((float(value), row["metric"].get(f"{metric}_std")))
    return sparse, full


def _mean_std(entries: list) -> tuple[float, Optional[float]]:
    values = [value for value, _ in entries]
    if len(entries) > 1:
        return float(np.mean(values)), float(np.std(values, ddof=1))
    return values[0], None if entries[0][1] is None else float(entries[0][1])


def label_efficiency_figure(rows: Sequence[dict], metric: str = "miou", x: str = "label_fraction",
                            group: str = "method", title: Optional[str] = None) -> Figure:
    """The plot as a matplotlib Figure (see :func:`label_efficiency_plot`); raises ValueError when no
    row has ``metric``."""
    sparse, full = _collect(rows, metric, x, group)
    names = sorted(set(sparse) | set(full))
    if not names:
        raise ValueError(f"no benchmark row has metric {metric!r}")
    colors = class_colors(len(names)) / 255.0
    figure = new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    for name, color in zip(names, colors):
        if sparse.get(name):
            xs = sorted(sparse[name])
            means, stds = zip(*(_mean_std(sparse[name][v]) for v in xs))
            yerr = None if all(s is None for s in stds) else [0.0 if s is None else s for s in stds]
            axes.errorbar(xs, means, yerr=yerr, color=color, marker="o", capsize=4, label=name)
        if full.get(name):
            axes.axhline(float(np.mean(full[name])), color=color, linestyle="--", linewidth=1.2,
                         label=f"{name} (full labels)")
    axes.set_xscale("log")
    if x == "label_fraction":
        axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
        axes.set_xlabel("labelled fraction (log scale)")
    else:
        axes.set_xlabel(f"{x} (log scale)")
    axes.set_ylabel(metric)
    tasks = sorted({str(row.get("task")) for row in rows if row.get("task") is not None})
    axes.set_title(title or (f"{', '.join(tasks)}: " if tasks else "") + f"{metric} vs labels")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def label_efficiency_plot(rows: Sequence[dict], out_png: PathLike, metric: str = "miou",
                          x: str = "label_fraction", group: str = "method", title: Optional[str] = None,
                          overwrite: bool = False) -> Path:
    """Plot ``row["metric"][metric]`` against ``row[x]`` (log scale), one line per ``row[group]``; 700 x 450 px.

    Rows whose ``labels`` is ``"full"`` (or whose label fraction is 1) are drawn as dashed horizontal
    lines; ``<metric>_std`` gives error bars. Raises DataError (naming ``out_png``) when no row has
    ``metric``, FileExistsError unless ``overwrite``.
    """
    out = refuse_existing(out_png, overwrite)
    try:
        figure = label_efficiency_figure(rows, metric, x, group, title)
    except ValueError as err:
        raise DataError(out, str(err)) from None
    return save_figure(figure, out, overwrite)
