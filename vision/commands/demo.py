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

from vision.demo.pictures import detection_pictures, events_pictures, pointcloud_pictures
from vision.demo.runner import TaskDemo

#: Demo sizes: the default synthetic datasets (shared with the benchmarks), shorter schedules,
#: and evaluation on part of the test split.
POINTCLOUD = TaskDemo(
    task="pointcloud", description="0.1% of points (Ratio 0.001)", metric_key="test/miou", metric_name="mIoU",
    sparse_config="configs/pointcloud/sqn-synthetic-0.1pct.yaml",
    full_config="configs/pointcloud/sqn-synthetic-full.yaml",
    overrides=["--trainer.max_epochs=1", "--data.init_args.crops_per_epoch=160", "--trainer.limit_val_batches=0",
               "--data.init_args.splits={train: ['train/*'], val: ['val/val_000*'], test: ['test/test_00[0-3]*']}"],
    quick_overrides=["--data.init_args.crops_per_epoch=48", "--data.init_args.crop_points=2048",
                     "--data.init_args.splits={train: ['train/*'], val: ['val/val_000*'], test: ['test/test_000*']}"],
    render=pointcloud_pictures)

EVENTS = TaskDemo(
    task="events", description="1 point per class per frame (PerClass k=1)", metric_key="test/miou",
    metric_name="mIoU", sparse_config="configs/events/evwsss-synthetic-1pt.yaml",
    full_config="configs/events/evwsss-synthetic-full.yaml",
    overrides=["--trainer.max_epochs=1", "--trainer.limit_train_batches=20", "--trainer.limit_val_batches=0",
               "--trainer.limit_test_batches=5"],
    quick_overrides=["--trainer.limit_train_batches=6", "--trainer.limit_test_batches=2"],
    render=events_pictures)

DETECTION = TaskDemo(
    task="detection", description="50% of boxes dropped (DropBoxes 0.5)", metric_key="test/map_50",
    metric_name="AP50", sparse_config="configs/detection/fcos-synthetic-drop50.yaml",
    full_config="configs/detection/fcos-synthetic-full.yaml",
    overrides=["--trainer.max_epochs=1", "--trainer.limit_train_batches=30", "--trainer.limit_val_batches=0",
               "--trainer.limit_test_batches=10", "--model.init_args.burn_in_steps=15",
               "--model.init_args.warmup_steps=10"],
    quick_overrides=["--trainer.limit_train_batches=8", "--trainer.limit_test_batches=3",
                     "--model.init_args.burn_in_steps=4", "--model.init_args.warmup_steps=2"],
    render=detection_pictures)

TASKS = {"pointcloud": POINTCLOUD, "events": EVENTS, "detection": DETECTION}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsevision demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes instead of 10")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from vision.demo.report import markdown, to_html
    from vision.demo.runner import run_task

    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, timings, start = [], {}, time.time()
    with console.status("sparsevision demo") as status:
        for name in args.tasks:
            result, task_timings = run_task(TASKS[name], out, args.quick,
                                            lambda text: (status.update(f"[bold]{text}"), console.log(text)))
            results.append(result)
            timings.update(task_timings)
    timings["total"] = time.time() - start
    benchmarks = Path("docs") / "BENCHMARKS.md"
    text = markdown(results, timings, benchmarks.read_text() if benchmarks.is_file() else None)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(to_html(text, [p for r in results for p in r.pictures]))
    table = Table(title="sparse vs full labels (test split, short schedule)")
    for column in ("task", "labels", "metric", "sparse", "full", "labels used (sparse)"):
        table.add_column(column)
    for r in results:
        table.add_row(r.task, r.description, r.metric_name, f"{r.sparse:.3f}", f"{r.full:.3f}",
                      f"{r.sparse_budget['labelled']:,} of {r.sparse_budget['total']:,}")
    console.print(table)
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    finite = all(math.isfinite(v) for r in results for v in (r.sparse, r.full))
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
