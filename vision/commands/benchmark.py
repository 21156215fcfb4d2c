"""``sparsevision benchmark``: label-efficiency tables, resumable row by row.

    sparsevision benchmark pointcloud [--quick] [--rows full 0.1pct knn-0.1pct] [--force]
    sparsevision benchmark report                # rebuild docs/BENCHMARKS.md from docs/benchmarks/*.json

Each (row, label seed) writes ``<folder>/<task>-<row>-seed<S>.json`` when it finishes; a later call
skips rows whose file exists, so a table of several hours can be stopped and continued. ``--quick``
runs a CI-sized version of every row into ``outputs/benchmarks-quick/`` (never into docs/).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

SUITES = ("pointcloud",)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsevision benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=[*SUITES, "report"])
    parser.add_argument("--quick", action="store_true", help="CI-sized rows into outputs/benchmarks-quick/")
    parser.add_argument("--rows", nargs="*", default=None, help="only these rows (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="only these label seeds of multi-seed rows (the rest can be run later)")
    parser.add_argument("--force", action="store_true", help="rerun rows that already have a JSON file")
    parser.add_argument("--folder", default=None, help="where row JSON files go (default docs/benchmarks)")
    parser.add_argument("--runs", default="outputs/benchmarks", help="run folders (checkpoints, logs)")
    args = parser.parse_args(argv)

    from vision.benchmarks.common import DEFAULT_FOLDER, run_rows
    from vision.benchmarks.report import write_report

    folder = Path(args.folder or ("outputs/benchmarks-quick" if args.quick else DEFAULT_FOLDER))
    if args.suite == "report":
        print(f"wrote {write_report(folder, Path('docs') / 'BENCHMARKS.md')}")
        return 0
    from vision.benchmarks import pointcloud

    suite = {"pointcloud": pointcloud}[args.suite]
    rows = [row for row in suite.rows(quick=args.quick) if args.rows is None or row.name in args.rows]
    if args.seeds is not None:
        rows = [dataclasses.replace(row, seeds=tuple(s for s in row.seeds if s in args.seeds)) for row in rows]
    if not rows:
        print(f"sparsevision benchmark: no rows match {args.rows}", file=sys.stderr)
        return 2
    run_root = Path(args.runs + ("-quick" if args.quick else ""))
    results = run_rows(rows, lambda row, seed: suite.run_one(row, seed, run_root), folder, args.force)
    for result in results:
        print(f"{result['task']}/{result['row']} seed {result['seed']}: {result['metric']}")
    if not args.quick:
        write_report(folder, Path("docs") / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
