"""Benchmark rows: train a config, score it on the test split, keep the result as a small JSON file.

A *row* is one configuration at one label budget (possibly several label seeds). Each finished seed
is written to ``<folder>/<task>-<row>-seed<S>.json`` as soon as it ends, so a long table can be
stopped and resumed: a row whose JSON exists is not run again. ``docs/BENCHMARKS.md`` and the plots
are rebuilt from those files only.

A row records: the metric(s) on the test split, the label budget actually used (counts), the seed,
wall time, whether the run converged (the last 20% of the validation curve added < 1 point), and the
exact command that reproduces it.
"""

from __future__ import annotations

import csv
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from vision.atomic import atomic_write_text

DEFAULT_FOLDER = Path("docs") / "benchmarks"


@dataclass
class Row:
    """One benchmark row: a config plus LightningCLI overrides, run for each label seed."""

    task: str
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    seeds: tuple[int, ...] = (0,)
    method: str = ""
    labels: str = ""
    seed_option: str = "--data.init_args.weak_label_seed"

    def command(self, seed: int) -> str:
        args = ["sparsevision", "fit", "--config", self.config, *self.overrides]
        if len(self.seeds) > 1 or seed != 0:
            args += [f"{self.seed_option}={seed}"]
        return " ".join(shlex.quote(a) for a in args)

    def path(self, folder: Path, seed: int) -> Path:
        return Path(folder) / f"{self.task}-{self.name}-seed{seed}.json"


def row_files(folder: Path) -> list[Path]:
    """The row files of ``folder`` (``*.json``) by name, without hidden ones: a killed run can leave
    ``.<name>.tmp-XXXX.json`` (:mod:`vision.atomic`), which is never a finished row."""
    return [path for path in sorted(Path(folder).glob("*.json")) if not path.name.startswith(".")]


def write_json_atomically(path: Path, data: dict) -> Path:
    """Write ``data`` as indented JSON with sorted keys; a killed run leaves only a hidden temporary file.

    :func:`vision.atomic.atomic_write_text` writes ``.<name>.tmp-XXXX.json`` beside ``path`` and renames
    it; :func:`row_files` skips such hidden names.
    """
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def validation_curve(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a logged validation metric from the run's CSV logs (latest version)."""
    versions = sorted((Path(run_dir) / "csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions:
        return []
    curve = []
    with open(versions[-1] / "metrics.csv") as handle:
        for record in csv.DictReader(handle):
            if record.get(key):
                curve.append((int(record["step"]), float(record[key])))
    return curve


def converged(curve: list[tuple[int, float]], tolerance: float = 0.01) -> Optional[bool]:
    """True when the last 20% of the schedule added less than ``tolerance`` (CONVENTIONS.md), None if unknown."""
    if len(curve) < 3:
        return None
    last_step = curve[-1][0]
    cut = last_step - 0.2 * last_step
    before = [value for step, value in curve if step <= cut]
    if not before:
        return None
    return bool(curve[-1][1] - max(before) < tolerance)


def run_rows(rows: list[Row], run_one: Callable[[Row, int], dict], folder: Path = DEFAULT_FOLDER,
             force: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """Run every (row, seed) whose JSON is missing; returns all results (old and new)."""
    results = []
    for row in rows:
        for seed in row.seeds:
            path = row.path(folder, seed)
            if path.is_file() and not force:
                log(f"[skip] {path} exists")
                results.append(json.loads(path.read_text()))
                continue
            log(f"[run] {row.task}/{row.name} seed {seed}: {row.command(seed)}")
            start = time.time()
            result = run_one(row, seed)
            result.update(task=row.task, row=row.name, method=row.method, labels=row.labels, seed=seed,
                          command=row.command(seed), wall_s=round(time.time() - start, 1))
            write_json_atomically(path, result)
            results.append(result)
    return results
