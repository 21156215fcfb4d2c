"""Event voxel-grid throughput: ours against tonic's ``ToVoxelGrid``, side by side on the same events.

    sparsevision benchmark events-voxel [--quick] [--threads 1]

Ours is :func:`datamodules.transforms.event_representations.voxel_grid` (Zhu et al., CVPR 2019,
eq. 1); tonic's is ``tonic.functional.to_voxel_grid_numpy``, the function behind
``tonic.transforms.ToVoxelGrid`` (tonic is only in the ``bench`` extra: ``pip install -e .[bench]``).
Both run on the same events: uniformly random pixels and polarities, times sorted over 50 ms, each in
its library's own input layout (tonic: a structured array ``x, y, t, p``; ours: the separate
contiguous arrays of :class:`~datamodules.formats.events_common.EventArray`), with the same torch
thread count (numpy and tonic are single-threaded; ours runs numpy and one torch ``index_add_`` per
chunk). Each case is timed ``repeats`` times and the median reported, as wall time (the headline
ratio) and as this process's CPU time (less disturbed by other jobs on a shared machine); tonic gets
a fresh copy of the events before each call because it writes ``-1`` over the caller's OFF
polarities, and the copy is not timed. Uniform pixels are the worst case for both scatters (every
event a cache miss at 480x640); real streams, with events clustered along edges, scatter faster.

Values are checked, not only speed:

* ours equals the direct per-event loop of the definition on a random subsample of the events;
* tonic's grid equals ours once its documented differences are accounted for: tonic scales time by
  ``n_bins`` instead of ``n_bins - 1`` (``t* = n_bins (t - t0) / (t1 - t0)``) and drops weight that
  falls past the last bin, so tonic with ``n_bins = B`` equals the first ``B`` bins of ours with
  ``B + 1`` bins.

The result goes to ``<folder>/events-voxel-throughput.json`` (``docs/benchmarks/`` by default; the
``--quick`` version, 1M events only, to ``outputs/benchmarks-quick/``) and a table is printed.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from datamodules.transforms.event_representations import voxel_grid
from vision.benchmarks.common import write_json_atomically

#: (height, width) of the sensors and event counts of the full benchmark; ``--quick`` keeps 1M only.
SIZES = ((240, 320), (480, 640))
EVENT_COUNTS = (1_000_000, 10_000_000)
QUICK_EVENT_COUNTS = (1_000_000,)
RESULT_NAME = "events-voxel-throughput.json"
TARGET_RATIO = 3.0
EVENT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("t", "<i8"), ("p", "<i1")])


def make_events(count: int, height: int, width: int, seed: int = 0, duration_us: int = 50_000) -> np.ndarray:
    """``(count,)`` structured events (tonic's layout): uniform pixels and polarities, sorted times in µs."""
    rng = np.random.default_rng(seed)
    events = np.empty(count, dtype=EVENT_DTYPE)
    events["x"] = rng.integers(0, width, count)
    events["y"] = rng.integers(0, height, count)
    events["t"] = np.sort(rng.integers(0, duration_us, count))
    events["p"] = rng.integers(0, 2, count)
    return events


def voxel_grid_loop(x, y, t, p, num_bins: int, height: int, width: int) -> np.ndarray:
    """``(num_bins, H, W)`` float64 reference: one event at a time, straight from Zhu et al. eq. 1."""
    grid = np.zeros((num_bins, height, width))
    t0, t1 = int(np.min(t)), int(np.max(t))
    for xi, yi, ti, pi in zip(x.tolist(), y.tolist(), t.tolist(), p.tolist()):
        t_star = (num_bins - 1) * (ti - t0) / (t1 - t0) if t1 > t0 else 0.0
        for b in range(num_bins):
            grid[b, yi, xi] += (1 if pi > 0 else -1) * max(0.0, 1 - abs(b - t_star))
    return grid


def tonic_voxel_grid(events: np.ndarray, num_bins: int, height: int, width: int) -> np.ndarray:
    """tonic's voxel grid ``(num_bins, H, W)`` float64; ``events`` is modified (tonic flips OFF to -1)."""
    from tonic.functional import to_voxel_grid_numpy

    return to_voxel_grid_numpy(events, (width, height, 2), num_bins)[:, 0]


def median_seconds(call: Callable[..., object], repeats: int, prepare: Optional[Callable[[], tuple]] = None
                   ) -> tuple[float, list[float], list[float], object]:
    """Time ``call(*prepare())`` ``repeats`` times (``prepare`` untimed).

    Returns the median wall time, every wall time, every CPU time of this process (less sensitive to
    other jobs on a shared machine than wall time) and the last result.
    """
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        args = prepare() if prepare else ()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = call(*args)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), wall, cpu, result


def check_against_loop(events: np.ndarray, num_bins: int, height: int, width: int, sample: int,
                       seed: int = 0) -> float:
    """Max |ours - loop| on ``sample`` random events (sorted by time) of ``events``."""
    rng = np.random.default_rng(seed)
    subset = events[np.sort(rng.choice(len(events), size=min(sample, len(events)), replace=False))]
    x, y, t, p = (np.ascontiguousarray(subset[name]) for name in "xytp")
    ours = voxel_grid(x, y, t, p, num_bins, height=height, width=width).numpy()
    return float(np.abs(ours - voxel_grid_loop(x, y, t, p, num_bins, height, width)).max())


def run_case(events: np.ndarray, height: int, width: int, num_bins: int, repeats: int,
             loop_sample: int) -> dict:
    """Time ours and tonic on ``events`` and check both grids' values; one result row."""
    x, y, t, p = (np.ascontiguousarray(events[name]) for name in "xytp")
    ours_median, ours_wall, ours_cpu, ours = median_seconds(
        lambda: voxel_grid(x, y, t, p, num_bins, height=height, width=width), repeats)
    tonic_median, tonic_wall, tonic_cpu, tonic = median_seconds(
        lambda copy: tonic_voxel_grid(copy, num_bins, height, width), repeats, prepare=lambda: (events.copy(),))
    # tonic(B) == ours(B + 1)[:B]: its time axis is n_bins * (t - t0) / (t1 - t0), ours (B - 1) * ...
    shifted = voxel_grid(x, y, t, p, num_bins + 1, height=height, width=width)[:num_bins].numpy()
    tonic_diff = float(np.abs(tonic - shifted).max())
    loop_diff = check_against_loop(events, num_bins, height, width, loop_sample)
    flipped = events.copy()
    tonic_voxel_grid(flipped, num_bins, height, width)
    count = len(events)
    return {
        "height": height, "width": width, "events": count, "num_bins": num_bins,
        "ours_s": [round(s, 7) for s in ours_wall], "tonic_s": [round(s, 7) for s in tonic_wall],
        "ours_cpu_s": [round(s, 7) for s in ours_cpu], "tonic_cpu_s": [round(s, 7) for s in tonic_cpu],
        "ours_mev_per_s": round(count / ours_median / 1e6, 2), "tonic_mev_per_s": round(count / tonic_median / 1e6, 2),
        "ratio": round(tonic_median / ours_median, 2),
        "ratio_cpu": round(statistics.median(tonic_cpu) / statistics.median(ours_cpu), 2),
        "ours_equals_loop": loop_diff < 1e-4, "max_abs_diff_to_loop": loop_diff, "loop_events": min(loop_sample, count),
        "tonic_matches_ours": tonic_diff < 1e-3, "max_abs_diff_tonic_to_ours_bins_plus_1": tonic_diff,
        "max_abs_diff_tonic_to_ours_same_bins": float(np.abs(tonic - ours.numpy()).max()),
        "tonic_flips_callers_polarity": bool((flipped["p"] == -1).any()),
    }


def run(sizes: Sequence[tuple[int, int]] = SIZES, counts: Sequence[int] = EVENT_COUNTS, num_bins: int = 5,
        repeats: int = 5, threads: int = 1, loop_sample: int = 2000, seed: int = 0,
        log: Callable[[str], None] = print) -> dict:
    """Every (size, count) case with ``threads`` torch threads; the JSON-ready result."""
    import tonic  # noqa: F401  (fail before any timing when the bench extra is missing)

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = []
        for height, width in sizes:
            for count in counts:
                log(f"[run] {height}x{width}, {count:,} events")
                rows.append(run_case(make_events(count, height, width, seed), height, width, num_bins, repeats,
                                     loop_sample))
    finally:
        torch.set_num_threads(previous)
    return {"benchmark": "events-voxel", "num_bins": num_bins, "repeats": repeats, "statistic": "median",
            "threads": threads, "target_ratio": TARGET_RATIO, "events": "uniform random x, y, p; t sorted over 50 ms",
            "rows": rows, "environment": environment()}


def environment() -> dict:
    """Versions and the CPU, so that numbers from different machines are not mixed up."""
    import tonic

    return {"cpu": _cpu_name(), "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "tonic": getattr(tonic, "__version__", "?")}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def table(result: dict) -> str:
    """The printed table: absolute Mev/s of both, their ratio, and the value checks."""
    lines = [f"voxel grid, {result['num_bins']} bins, {result['threads']} thread(s), median of {result['repeats']} "
             f"({result['events']})",
             f"{'sensor':>9} {'events':>11} {'ours Mev/s':>11} {'tonic Mev/s':>12} {'ratio':>7} {'(CPU time)':>10}  "
             f"{'= loop':>6}  {'= tonic':>7}"]
    for row in result["rows"]:
        lines.append(f"{row['height']:>4}x{row['width']:<4} {row['events']:>11,} {row['ours_mev_per_s']:>11.1f} "
                     f"{row['tonic_mev_per_s']:>12.1f} {row['ratio']:>6.2f}x {row['ratio_cpu']:>9.2f}x  "
                     f"{'yes' if row['ours_equals_loop'] else 'NO':>6}  {'yes' if row['tonic_matches_ours'] else 'NO':>7}")
    met = sum(row["ratio"] >= result["target_ratio"] for row in result["rows"])
    lines.append(f"target >= {result['target_ratio']}x tonic (wall time): met in {met} of {len(result['rows'])} cases")
    return "\n".join(lines)


def main(quick: bool, folder: Path, threads: int = 1, sizes: Sequence[tuple[int, int]] = SIZES,
         counts: Optional[Sequence[int]] = None) -> int:
    """``sparsevision benchmark events-voxel``: run, write the JSON, print the table.

    ``counts`` defaults to 1M and 10M events (``quick``: 1M only); ``sizes`` are ``(height, width)``.
    """
    counts = counts or (QUICK_EVENT_COUNTS if quick else EVENT_COUNTS)
    try:
        result = run(sizes, counts, threads=threads)
    except ImportError as exc:
        print(f"sparsevision benchmark events-voxel: tonic is needed ({exc}); "
              "install it with: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    args = ["sparsevision", "benchmark", "events-voxel"] + (["--quick"] if quick else []) + (
        [f"--threads={threads}"] if threads != 1 else [])
    result["command"] = " ".join(shlex.quote(a) for a in args)
    path = Path(folder) / RESULT_NAME
    write_json_atomically(path, result)
    print(table(result))
    print(f"wrote {path}")
    failed = [row for row in result["rows"] if not (row["ours_equals_loop"] and row["tonic_matches_ours"])]
    return 1 if failed else 0
