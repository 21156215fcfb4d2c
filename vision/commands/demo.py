"""``sparsevision demo``: sparse labels against full labels on the built-in synthetic data.

For each task (point clouds at 0.1% of points, events at 1 point per class per frame, detection with
50% of the boxes dropped) the demo trains a short schedule with the sparse-label engine and the same
schedule with full labels, scores both on the test split against the full labels, and writes
``outputs/demo/report.md``, a self-contained ``report.html``, PNG pictures, TensorBoard logs and
checkpoints (``outputs/demo/runs/``). Short schedules do not converge: the report says so and
embeds the converged numbers of ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Optional

from vision.demo.pictures import detection_pictures, events_pictures, pointcloud_pictures
from vision.demo.runner import TaskDemo

#: Demo sizes: the default synthetic datasets (shared with the benchmarks), smaller inputs (so that
#: each step is cheap and more steps fit in the time), schedules counted in optimizer steps, and
#: evaluation on part of the test split. Everything here is an ordinary CLI override: the report prints
#: each run's full command. Step counts fit the 10-minute budget on 2 idle cores: 120 / 100 / 120 steps
#: took 612 s (pc 190 s, events 160 s, detection 260 s, each sparse run ~1.7x its full run). Running the
#: sparse and full run side by side in two 1-thread processes was tried and saved nothing (605 s): the
#: data workers and the longer sparse run leave the second core idle or contended.
POINTCLOUD = TaskDemo(
    task="pointcloud", description="0.1% of points (Ratio 0.001)", metric_key="test/miou", metric_name="mIoU",
    sparse_config="configs/pointcloud/sqn-synthetic-0.1pct.yaml",
    full_config="configs/pointcloud/sqn-synthetic-full.yaml",
    overrides=["--data.init_args.crop_points=2048", "--trainer.limit_val_batches=0",
               "--data.init_args.splits={train: ['train/*'], val: ['val/val_000*'], test: ['test/test_00[0-3]*']}"],
    quick_overrides=["--data.init_args.splits={train: ['train/*'], val: ['val/val_000*'], test: ['test/test_000*']}"],
    # half the steps train partial CE alone (burn-in), then the engine's losses ramp up over a quarter
    schedule=["--model.init_args.burn_in_steps={half}", "--model.init_args.rampup_steps={quarter}"],
    steps=110, quick_steps=15, render=pointcloud_pictures)

EVENTS = TaskDemo(
    task="events", description="1 point per class per frame (PerClass k=1)", metric_key="test/miou",
    metric_name="mIoU", sparse_config="configs/events/evwsss-synthetic-1pt.yaml",
    full_config="configs/events/evwsss-synthetic-full.yaml",
    overrides=["--data.init_args.batch_size=4", "--trainer.limit_val_batches=0", "--trainer.limit_test_batches=10"],
    quick_overrides=["--trainer.limit_test_batches=3"],
    # the full-label upper bound trains one plain student: the dual-student machinery exists for sparse labels
    full_overrides=["--model.init_args.dual_student=false", "--model.init_args.cross_pseudo_weight=0",
                    "--model.init_args.contrastive_weight=0", "--model.init_args.distillation_weight=0",
                    "--model.init_args.prototype_exchange=false"],
    schedule=["--model.init_args.burn_in_steps={half}", "--model.init_args.rampup_steps={quarter}"],
    steps=90, quick_steps=10, render=events_pictures)

DETECTION = TaskDemo(
    task="detection", description="50% of boxes dropped (DropBoxes 0.5)", metric_key="test/map_50",
    metric_name="AP50", sparse_config="configs/detection/fcos-synthetic-drop50.yaml",
    full_config="configs/detection/fcos-synthetic-full.yaml",
    overrides=["--trainer.limit_val_batches=0", "--trainer.limit_test_batches=15"],
    quick_overrides=["--trainer.limit_test_batches=3"],
    schedule=["--model.init_args.burn_in_steps={half}", "--model.init_args.warmup_steps={fifth}"],
    steps=90, quick_steps=15, render=detection_pictures)

TASKS = {"pointcloud": POINTCLOUD, "events": EVENTS, "detection": DETECTION}


class ProgressDisplay:
    """Rich progress: one row per stage (data, training with a step bar, evaluation, pictures)."""

    def __init__(self, progress) -> None:
        self.progress, self.current = progress, None

    def stage(self, name: str, total: Optional[int]):
        """Start stage ``name`` (finishing the previous one); returns ``advance(done)`` for step bars."""
        self.done()
        self.current = self.progress.add_task(name, total=total)
        return lambda done: self.progress.update(self.current, completed=done)

    def done(self) -> None:
        if self.current is not None:
            task = self.progress.tasks[self.progress.task_ids.index(self.current)]
            self.progress.update(self.current, total=task.total or 1, completed=task.total or 1)
            self.current = None


def install_seconds() -> Optional[float]:
    """How long ``make install`` took on this machine (the Makefile records it), or None."""
    stamp = Path(sys.prefix) / ".sparsevision-install-seconds"
    try:
        return float(stamp.read_text().strip())
    except (OSError, ValueError):
        return None


def quiet_lightning() -> None:
    """The demo shows its own progress: Lightning's per-run banners (seed, devices, tips) would bury it."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (importing it sets its loggers to INFO: set them after)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning_utilities"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # EMA teachers are kept in eval mode on purpose
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsevision demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes instead of 10")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps per run for every task (default: per task, see the report)")
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table

    from vision.demo.report import markdown, to_html
    from vision.demo.runner import run_task

    quiet_lightning()
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, timings, start = [], {}, time.time()
    installed = install_seconds()
    if installed is not None:
        timings["first install (make install, not counted in total)"] = installed
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        display = ProgressDisplay(progress)
        for name in args.tasks:
            result, task_timings = run_task(TASKS[name], out, args.quick, args.steps, display)
            results.append(result)
            timings.update(task_timings)
    timings["total"] = time.time() - start
    benchmarks = Path("docs") / "BENCHMARKS.md"
    plots = sorted(Path("docs", "benchmarks").glob("*.png"))
    text = markdown(results, timings, benchmarks.read_text() if benchmarks.is_file() else None, plots)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(to_html(text, [p for r in results for p in r.pictures] + plots))
    table = Table(title="sparse vs full labels (test split, short demo schedule)")
    for column in ("task", "labels", "steps", "metric", "sparse", "full", "labels used (sparse)"):
        table.add_column(column)
    for r in results:
        table.add_row(r.task, r.description, str(r.steps), r.metric_name, f"{r.sparse:.3f}", f"{r.full:.3f}",
                      f"{r.sparse_budget['labelled']:,} of {r.sparse_budget['total']:,}")
    console.print(table)
    console.print(f"total {timings['total']:.0f} s; report: {out / 'report.md'} and {out / 'report.html'}")
    finite = all(math.isfinite(v) for r in results for v in (r.sparse, r.full))
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
