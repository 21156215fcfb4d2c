"""``sparsevision benchmark``: label-efficiency tables, resumable row by row.

    sparsevision benchmark pointcloud [--quick] [--rows full 0.1pct knn-0.1pct] [--force]
    sparsevision benchmark pointcloud-ign | events | detection | detection-bccd [--quick] [--seeds 0]
    sparsevision benchmark events-voxel [--quick] [--threads 1]   # voxel-grid throughput vs tonic
    sparsevision benchmark pointcloud-throughput [--quick]       # points/s and peak memory, 1M / 2M points
    sparsevision benchmark report                # rebuild docs/BENCHMARKS.md from docs/benchmarks/*.json

Each (row, label seed) writes ``<folder>/<task>-<row>-seed<S>.json`` when it finishes; a later call
skips rows whose file exists, so a table of several hours can be stopped and continued. ``--quick``
runs a CI-sized version of every row into ``outputs/benchmarks-quick/`` (never into docs/).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

#: Label-efficiency suites: name -> (module in vision/benchmarks/, keyword arguments of its ``rows``).
SUITES = {"pointcloud": ("pointcloud", {}), "pointcloud-ign": ("pointcloud", {"dataset": "ign"}),
          "events": ("events", {}), "detection": ("detection", {"dataset": "synthetic"}),
          "detection-bccd": ("detection", {"dataset": "bccd"})}
#: Throughput benchmarks: one JSON file, no rows to resume (vision/benchmarks/<module>.py).
THROUGHPUT = {"events-voxel": "event_voxel", "pointcloud-throughput": "throughput"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsevision benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, *THROUGHPUT, "report"])
    parser.add_argument("--quick", action="store_true", help="CI-sized rows into outputs/benchmarks-quick/")
    parser.add_argument("--rows", nargs="*", default=None, help="only these rows (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="only these label seeds of multi-seed rows (the rest can be run later)")
    parser.add_argument("--force", action="store_true", help="rerun rows that already have a JSON file")
    parser.add_argument("--folder", default=None, help="where row JSON files go (default docs/benchmarks)")
    parser.add_argument("--runs", default="outputs/benchmarks", help="run folders (checkpoints, logs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of throughput benchmarks (default 1)")
    args = parser.parse_args(argv)

    from vision.benchmarks.common import DEFAULT_FOLDER, run_rows
    from vision.benchmarks.report import write_report

    folder = Path(args.folder or ("outputs/benchmarks-quick" if args.quick else DEFAULT_FOLDER))
    if args.suite == "report":
        print(f"wrote {write_report(folder, Path('docs') / 'BENCHMARKS.md')}")
        return 0
    if args.suite in THROUGHPUT:
        return importlib.import_module(f"vision.benchmarks.{THROUGHPUT[args.suite]}").main(args.quick, folder,
                                                                                           args.threads)
    module, options = SUITES[args.suite]
    suite = importlib.import_module(f"vision.benchmarks.{module}")
    rows = [row for row in suite.rows(quick=args.quick, **options) if args.rows is None or row.name in args.rows]
    if args.seeds is not None:
        rows = [dataclasses.replace(row, seeds=tuple(s for s in row.seeds if s in args.seeds)) for row in rows]
    if not rows:
        print(f"sparsevision benchmark: no rows match {args.rows}", file=sys.stderr)
        return 2
    runnable = []
    for row in rows:  # rows on absent real data or an optional backend are skipped, saying why
        reason = getattr(suite, "skip_reason", lambda _: None)(row)
        if reason:
            print(f"[skip] {row.task}/{row.name}: {reason}", file=sys.stderr)
        else:
            runnable.append(row)
    if not runnable:
        return 0
    rows = runnable
    run_root = Path(args.runs + ("-quick" if args.quick else ""))
    results = run_rows(rows, lambda row, seed: suite.run_one(row, seed, run_root), folder, args.force)
    for result in results:
        print(f"{result['task']}/{result['row']} seed {result['seed']}: {result['metric']}")
    if not args.quick:
        write_report(folder, Path("docs") / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
